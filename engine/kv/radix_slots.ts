/**
 * Token slots shared across requests through a radix tree (SGLang's RadixAttention, Zheng et al. 2024): a request
 * that arrives looks its prompt up in the tree and reuses the slots of the longest cached prefix; a request that
 * finishes inserts its tokens, so the next one with the same prefix finds them; slots the tree holds for no running
 * request are evicted, least recently used leaf first, when the pool runs out.
 */
import type { SeqId } from './block_manager.ts';
import { KvCacheError } from './errors.ts';
import { RadixCache, type RadixNode } from './radix_cache.ts';
import { TokenPool } from './token_pool.ts';

interface Request {
  tokens: number[];
  /** The slot of each token: the first `shared` are the tree's, the rest the request's own. */
  table: number[];
  shared: number;
  node: RadixNode;
}

export class RadixSlots {
  readonly tree = new RadixCache(1);
  private readonly slots: TokenPool;
  private readonly reqs = new Map<SeqId, Request>();

  constructor(numSlots: number) {
    this.slots = new TokenPool(numSlots);
  }

  get numSlots(): number {
    return this.slots.numSlots;
  }

  /** Slots no one holds, plus those only the tree holds (evictable). */
  get numAvailable(): number {
    return this.slots.numFree + this.tree.evictableSize;
  }

  /** Distinct slots held by running requests (a shared prefix counts once). */
  heldSlots(): number {
    const held = new Set<number>();
    for (const r of this.reqs.values()) for (const s of r.table) held.add(s);
    return held.size;
  }

  has(seq: SeqId): boolean {
    return this.reqs.has(seq);
  }

  table(seq: SeqId): readonly number[] {
    return this.get('RadixSlots.table', seq).table;
  }

  /** Whether admit(tokens) would succeed now: the prefix it would share is held while the rest is counted. */
  canAdmit(tokens: readonly number[]): boolean {
    const m = this.tree.matchPrefix(tokens.slice(0, tokens.length - 1));
    this.tree.lock(m.node);
    const ok = tokens.length - m.length <= this.numAvailable;
    this.tree.unlock(m.node);
    return ok;
  }

  /**
   * A new request: the longest cached prefix of its prompt (at most all but the last token, which is always computed)
   * is shared, the rest gets slots of its own, evicting if needed. Returns the tokens found cached. Nothing changes
   * when the pool cannot hold it (KvCacheError 'exhausted').
   */
  admit(seq: SeqId, tokens: readonly number[]): number {
    const op = 'RadixSlots.admit';
    if (this.reqs.has(seq)) throw new KvCacheError(op, 'invalid-argument', `sequence ${seq} is already running`);
    const m = this.tree.matchPrefix(tokens.slice(0, tokens.length - 1));
    this.tree.lock(m.node);
    try {
      const own = this.take(op, tokens.length - m.length);
      this.reqs.set(seq, { tokens: [...tokens], table: [...m.values, ...own], shared: m.length, node: m.node });
    } catch (e) {
      this.tree.unlock(m.node);
      throw e;
    }
    return m.length;
  }

  /** More tokens of a running request (decoding): slots of its own. */
  append(seq: SeqId, tokens: readonly number[]): void {
    const r = this.get('RadixSlots.append', seq);
    const own = this.take('RadixSlots.append', tokens.length);
    r.tokens.push(...tokens);
    r.table.push(...own);
  }

  /** Keeps the request's first n tokens (n not inside its shared prefix) and frees the slots of the rest. */
  truncate(seq: SeqId, n: number): void {
    const r = this.get('RadixSlots.truncate', seq);
    if (n < r.shared || n > r.tokens.length) throw new KvCacheError('RadixSlots.truncate', 'invalid-argument', `cannot cut sequence ${seq} to ${n} tokens (shared ${r.shared}, holds ${r.tokens.length})`);
    this.slots.freeSlots(r.table.slice(n));
    r.table.length = n;
    r.tokens.length = n;
  }

  /**
   * A running request's tokens so far join the tree once their keys and values are written (SGLang's
   * cache_unfinished_req, after a prefill): a request arriving meanwhile with the same prompt shares them. The request
   * then holds only tree slots, locked; its own duplicates of what the tree already had are freed.
   */
  cacheUnfinished(seq: SeqId): void {
    const r = this.get('RadixSlots.cacheUnfinished', seq);
    const held = this.tree.insert(r.tokens, r.table);
    const dup = r.table.slice(r.shared, Math.max(r.shared, held));
    const m = this.tree.matchPrefix(r.tokens);
    this.tree.lock(m.node);
    this.tree.unlock(r.node);
    this.slots.freeSlots(dup);
    Object.assign(r, { table: m.values, shared: m.length, node: m.node });
  }

  /** A request that finished: its tokens join the tree (slots it duplicated of what the tree gained meanwhile are freed). */
  finish(seq: SeqId): void {
    const r = this.get('RadixSlots.finish', seq);
    const held = this.tree.insert(r.tokens, r.table);
    this.slots.freeSlots(r.table.slice(r.shared, Math.max(r.shared, held)));
    this.tree.unlock(r.node);
    this.reqs.delete(seq);
  }

  /** A request dropped before its keys and values were written: its own slots are freed, nothing joins the tree. */
  abandon(seq: SeqId): void {
    const r = this.get('RadixSlots.abandon', seq);
    this.slots.freeSlots(r.table.slice(r.shared));
    this.tree.unlock(r.node);
    this.reqs.delete(seq);
  }

  checkInvariants(): void {
    this.tree.checkInvariants();
    this.slots.checkInvariants();
  }

  /** n free slots, evicting unused cached prefixes first if the free ones are too few. */
  private take(op: string, n: number): number[] {
    if (n > this.numAvailable) throw new KvCacheError(op, 'exhausted', `asked for ${n} slots with ${this.slots.numFree} free and ${this.tree.evictableSize} evictable of ${this.numSlots}`);
    if (n > this.slots.numFree) this.slots.freeSlots(this.tree.evict(n - this.slots.numFree));
    return this.slots.allocateSlots(n);
  }

  private get(op: string, seq: SeqId): Request {
    const r = this.reqs.get(seq);
    if (!r) throw new KvCacheError(op, 'invalid-argument', `unknown sequence ${seq}`);
    return r;
  }
}
