/** Token-level KV memory: a pool of single-token slots and a per-sequence token table (LightLLM's TokenAttention). */
import { checkCount, invariant, KvCacheError } from './errors.ts';
import type { SeqId } from './block_manager.ts';

/**
 * `numSlots` slots of one token each, ids 0..numSlots-1: a block size of 1, so nothing is ever wasted inside a
 * sequence, and a sequence's slots need not be contiguous (the attention kernel gathers them through the token table).
 *
 * The free slots are a stack, as LightLLM's MemoryManager keeps `mem_state` with a `mark_start` pointer: allocation
 * pops from the top, freed slots are pushed back on top, so the slots freed last are reused first.
 */
export class TokenPool {
  readonly numSlots: number;
  // freeStack[markStart..numSlots) are free; the top of the stack is freeStack[markStart].
  private readonly freeStack: Int32Array;
  private markStart = 0;
  private readonly inUse: Uint8Array;
  private readonly tables = new Map<SeqId, number[]>();

  constructor(numSlots: number) {
    checkCount('TokenPool', 'numSlots', numSlots, 1);
    this.numSlots = numSlots;
    this.freeStack = Int32Array.from({ length: numSlots }, (_, i) => i);
    this.inUse = new Uint8Array(numSlots);
  }

  get numFree(): number {
    return this.numSlots - this.markStart;
  }

  canAllocate(n: number): boolean {
    checkCount('TokenPool.canAllocate', 'n', n, 0);
    return n <= this.numFree;
  }

  /** Takes `n` free slots, owned by the caller (a radix cache, say) rather than by a sequence. */
  allocateSlots(n: number): number[] {
    checkCount('TokenPool.allocateSlots', 'n', n, 0);
    if (n > this.numFree) throw new KvCacheError('TokenPool.allocateSlots', 'exhausted', `asked for ${n} slots with ${this.numFree} of ${this.numSlots} free`);
    const out = Array.from(this.freeStack.subarray(this.markStart, this.markStart + n));
    this.markStart += n;
    for (const s of out) {
      invariant(!this.inUse[s], 'TokenPool.allocateSlots', `slot ${s} was on the free stack while in use`);
      this.inUse[s] = 1;
    }
    return out;
  }

  /** Returns slots to the top of the free stack; all or none: a slot not in use (or listed twice) changes nothing. */
  freeSlots(slots: readonly number[]): void {
    const seen = new Set<number>();
    for (const s of slots) {
      if (!Number.isInteger(s) || s < 0 || s >= this.numSlots) throw new KvCacheError('TokenPool.freeSlots', 'invalid-argument', `slot ${s} is not in [0, ${this.numSlots})`);
      if (!this.inUse[s] || seen.has(s)) throw new KvCacheError('TokenPool.freeSlots', 'double-free', `slot ${s} is already free`);
      seen.add(s);
    }
    this.markStart -= slots.length;
    this.freeStack.set(slots, this.markStart);
    for (const s of slots) this.inUse[s] = 0;
  }

  /** Appends `n` slots to the sequence's token table (creating it), e.g. a prompt's tokens or one decoded token. */
  allocate(seq: SeqId, n: number): number[] {
    const got = this.allocateSlots(n);
    const t = this.tables.get(seq);
    if (t) t.push(...got);
    else this.tables.set(seq, got);
    return got;
  }

  /** Frees every slot of the sequence's token table. */
  free(seq: SeqId): void {
    const t = this.tables.get(seq);
    if (!t) throw new KvCacheError('TokenPool.free', 'invalid-argument', `unknown sequence ${seq}`);
    this.freeSlots(t);
    this.tables.delete(seq);
  }

  /** Keeps the sequence's first `n` token slots and frees the rest. */
  truncate(seq: SeqId, n: number): void {
    const t = this.tables.get(seq);
    if (!t) throw new KvCacheError('TokenPool.truncate', 'invalid-argument', `unknown sequence ${seq}`);
    checkCount('TokenPool.truncate', 'n', n, 0);
    if (n > t.length) throw new KvCacheError('TokenPool.truncate', 'invalid-argument', `sequence ${seq} holds ${t.length} slots, cannot keep ${n}`);
    this.freeSlots(t.slice(n));
    t.length = n;
  }

  /**
   * Keeps, after the sequence's first `start` slots, only the slots at `keep` (indices relative to `start`, in the
   * order given) and frees the others: accepting one path of a verified token tree.
   */
  select(seq: SeqId, start: number, keep: readonly number[]): void {
    const op = 'TokenPool.select';
    const t = this.tables.get(seq);
    if (!t) throw new KvCacheError(op, 'invalid-argument', `unknown sequence ${seq}`);
    checkCount(op, 'start', start, 0);
    const tail = t.slice(start);
    if (start > t.length || new Set(keep).size !== keep.length || keep.some((i) => !Number.isInteger(i) || i < 0 || i >= tail.length)) {
      throw new KvCacheError(op, 'invalid-argument', `keep [${keep.join(', ')}] must be distinct indices into the ${tail.length} slots after ${start}`);
    }
    const kept = new Set(keep);
    this.freeSlots(tail.filter((_, i) => !kept.has(i)));
    t.length = start;
    t.push(...keep.map((i) => tail[i]));
  }

  has(seq: SeqId): boolean {
    return this.tables.has(seq);
  }

  /** Slot of each of the sequence's tokens, in order: LightLLM's req_to_token_indexs row. */
  tokenTable(seq: SeqId): readonly number[] {
    const t = this.tables.get(seq);
    if (!t) throw new KvCacheError('TokenPool.tokenTable', 'invalid-argument', `unknown sequence ${seq}`);
    return [...t];
  }

  /** Free stack and in-use flags agree, and every token table holds distinct slots in use. */
  checkInvariants(): void {
    const op = 'TokenPool.checkInvariants';
    const free = new Uint8Array(this.numSlots);
    for (let i = this.markStart; i < this.numSlots; i++) {
      const s = this.freeStack[i];
      invariant(!free[s] && !this.inUse[s], op, `slot ${s} is on the free stack twice or while in use`);
      free[s] = 1;
    }
    const owned = new Uint8Array(this.numSlots);
    for (const [id, t] of this.tables) {
      for (const s of t) {
        invariant(this.inUse[s] === 1 && !owned[s], op, `sequence ${id}: slot ${s} is free or in another table`);
        owned[s] = 1;
      }
    }
    let used = 0;
    for (let s = 0; s < this.numSlots; s++) used += this.inUse[s];
    invariant(used === this.markStart, op, `${used} slots in use, the stack says ${this.markStart}`);
  }
}
