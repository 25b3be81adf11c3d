/**
 * A KV cache on one pool of token slots in device memory (KvPool), read by PagedAttention through each sequence's
 * slot table. Three ways to hand out the slots, one pool and one attention kernel, so that what differs between them
 * is only the memory management the lecture compares:
 * - contiguous: a region of maxSeqLen slots per sequence, reserved when it arrives (Orca, FasterTransformer);
 * - paged: blocks of blockSize slots allocated as tokens arrive, with prefix caching and copy-on-write (vLLM);
 * - token: single slots allocated as tokens arrive (LightLLM's TokenAttention); takes token trees (SpecInfer), or,
 *   with radixCache, shares prompt prefixes across requests through a radix tree (SGLang's RadixAttention).
 * How each layout hands out slots is in slot_layouts.ts; this file owns the pool, the plans of steps and their undo.
 */
import type { Device } from '../device/device.ts';
import type { Graph, Value } from '../graph/graph.ts';
import { BlockManager, type SeqId } from './block_manager.ts';
import { checkCount, KvCacheError } from './errors.ts';
import type { KvCache, KvGraph, KvMemory, KvPlan, KvShape, StepSeq } from './kv_cache.ts';
import { KvPool } from './kv_pool.ts';
import { RadixSlots } from './radix_slots.ts';
import { RegionPool } from './region_pool.ts';
import { ContiguousSlots, PagedSlots, RadixTokenSlots, TokenSlots, type SlotLayout, type StepWrites } from './slot_layouts.ts';
import { TokenPool } from './token_pool.ts';

export type PoolLayout = 'contiguous' | 'paged' | 'token';

/** A sequence's keys and values copied to host memory (preemption by swapping): per pool tensor [length, kvHeads * headDim]. */
export interface SwappedKv {
  length: number;
  rows: Float32Array[];
  /** Bytes moved to the host. */
  bytes: number;
}

export interface PoolKvCacheOptions {
  layout: PoolLayout;
  /** The pool's size in token slots (paged: rounded down to whole blocks). Give this or budgetBytes. */
  numSlots?: number;
  /** The pool's size in bytes: as many slots as fit. */
  budgetBytes?: number;
  /** Paged: slots per block (default 16, as vLLM). */
  blockSize?: number;
  /** The longest sequence (default the model's context); contiguous: the region each sequence reserves. */
  maxSeqLen?: number;
  /** Paged: share full blocks of equal prefixes across requests (default true). */
  prefixCaching?: boolean;
  /** Token: share prompt prefixes across requests in a radix tree; a freed sequence's tokens stay cached (default false). */
  radixCache?: boolean;
}

/** How to undo one sequence's part of a plan. */
interface Undo {
  seq: SeqId;
  fresh: boolean;
  prevLen: number;
  /** Paged, fresh sequences: block indices the plan hashed before their keys and values were written. */
  hashed: number[];
}

export class PoolKvCache implements KvCache {
  readonly graphKey: string;
  /** Slots attention reads as one piece: the block size (paged), 1 (token), a power of two dividing maxSeqLen (contiguous). */
  readonly gatherBlock: number;
  readonly supportsTrees: boolean;
  readonly blockSize: number;
  readonly maxSeqLen: number;
  /** How this cache's layout hands out the pool's slots. */
  private readonly slots: SlotLayout;
  private readonly lens = new Map<SeqId, number>();
  /** Token layout: sequences whose last step was a tree, and where the tree starts. */
  private readonly trees = new Map<SeqId, number>();
  private disposedFlag = false;

  private constructor(
    private readonly dev: Device,
    readonly shape: KvShape,
    readonly layout: PoolLayout,
    readonly pool: KvPool,
    opts: PoolKvCacheOptions,
  ) {
    this.maxSeqLen = opts.maxSeqLen ?? shape.maxPositions;
    this.blockSize = layout === 'paged' ? (opts.blockSize ?? 16) : layout === 'token' ? 1 : this.maxSeqLen;
    this.supportsTrees = layout === 'token' && !opts.radixCache;
    this.gatherBlock = layout === 'contiguous' ? gatherBlockOf(this.maxSeqLen) : this.blockSize;
    this.graphKey = `pool|${this.gatherBlock}`;
    if (layout === 'paged') {
      this.slots = new PagedSlots(new BlockManager({ numBlocks: pool.numSlots / this.blockSize, blockSize: this.blockSize, maxModelLen: this.maxSeqLen, prefixCaching: opts.prefixCaching ?? true }));
    } else if (layout === 'token') {
      this.slots = opts.radixCache ? new RadixTokenSlots(new RadixSlots(pool.numSlots)) : new TokenSlots(new TokenPool(pool.numSlots));
    } else {
      this.slots = new ContiguousSlots(new RegionPool(pool.numSlots), this.maxSeqLen);
    }
  }

  /** Sizes the pool from the options and reserves it on `dev` (tag 'kv'); typed errors for bad options or no memory. */
  static async create(dev: Device, shape: KvShape, opts: PoolKvCacheOptions): Promise<PoolKvCache> {
    const op = 'PoolKvCache';
    if (!['contiguous', 'paged', 'token'].includes(opts.layout)) throw new KvCacheError(op, 'invalid-argument', `layout must be 'contiguous', 'paged' or 'token', got ${JSON.stringify(opts.layout)}`);
    if (opts.radixCache && opts.layout !== 'token') throw new KvCacheError(op, 'invalid-argument', `radixCache is for the token layout (the paged layout shares prefixes by block hashes: prefixCaching)`);
    const maxSeqLen = opts.maxSeqLen ?? shape.maxPositions;
    checkCount(op, 'maxSeqLen', maxSeqLen, 1);
    if (maxSeqLen > shape.maxPositions) throw new KvCacheError(op, 'too-long', `maxSeqLen ${maxSeqLen} is past the model's context of ${shape.maxPositions}`);
    // The pool is a whole number of blocks (paged) or regions (contiguous: the regions of a pool of equal regions
    // placed first-fit all start at multiples of maxSeqLen, so attention can read them in blocks that divide it).
    const B = opts.layout === 'paged' ? (opts.blockSize ?? 16) : opts.layout === 'contiguous' ? maxSeqLen : 1;
    checkCount(op, 'blockSize', B, 1);
    const bytesPerSlot = 2 * shape.numLayers * shape.numKvHeads * shape.headDim * 4;
    if ((opts.numSlots === undefined) === (opts.budgetBytes === undefined)) throw new KvCacheError(op, 'invalid-argument', 'give the pool size as numSlots or as budgetBytes (one of them)');
    let slots = opts.numSlots ?? Math.floor(opts.budgetBytes! / bytesPerSlot);
    if (opts.numSlots !== undefined) checkCount(op, 'numSlots', slots, 1);
    slots -= slots % B;
    if (slots < B) throw new KvCacheError(op, 'invalid-size', `the pool holds ${slots} slots, less than one ${opts.layout === 'contiguous' ? 'region' : 'block'} of ${B} (${bytesPerSlot} bytes per slot)`);
    return new PoolKvCache(dev, shape, opts.layout, await KvPool.create(dev, shape, slots), opts);
  }

  get bytesPerToken(): number {
    return this.pool.bytesPerSlot;
  }

  /** The radix tree of a token cache with radixCache (the prefixes it holds, their locks, LRU eviction). */
  get radixTree(): RadixSlots {
    if (!(this.slots instanceof RadixTokenSlots)) throw new KvCacheError('PoolKvCache.radixTree', 'invalid-argument', 'this cache has no radix tree (token layout with radixCache)');
    return this.slots.radix;
  }

  /** The block manager of the paged layout (block tables, prefix cache, ref counts). */
  get blockManager(): BlockManager {
    if (!(this.slots instanceof PagedSlots)) throw new KvCacheError('PoolKvCache.blockManager', 'invalid-argument', `the ${this.layout} layout has no blocks`);
    return this.slots.blocks;
  }

  declare(g: Graph, seq: number | string, tree: boolean): KvGraph {
    const { numLayers, numHeads, numKvHeads, headDim } = this.shape;
    const lengths = g.input('pastLengths', 'int32', ['batch']);
    const table = g.input('blockTable', 'int32', ['batch', 'blocks']);
    const mask = tree ? g.input('treeMask', 'bool', ['batch', seq, seq]) : null;
    const dims = [numKvHeads, 'slots', headDim];
    const pools = Array.from({ length: numLayers }, (_, i) => [g.input(`kv.${i}.k`, 'fp32', dims), g.input(`kv.${i}.v`, 'fp32', dims)]);
    const outputs: Value[] = [];
    return {
      outputs,
      attend: (i, q, k, v) => {
        outputs.push(k, v);
        const ins = [q, k, v, pools[i][0], pools[i][1], table, lengths, ...(mask ? [mask] : [])];
        return g.op('PagedAttention', ins, { numHeads, kvNumHeads: numKvHeads, blockSize: this.gatherBlock })[0];
      },
    };
  }

  async plan(batch: readonly StepSeq[]): Promise<KvPlan> {
    const op = 'PoolKvCache.plan';
    this.assertLive();
    if (batch.length === 0) throw new KvCacheError(op, 'invalid-argument', 'a step needs at least one sequence');
    if (new Set(batch.map((s) => s.seq)).size !== batch.length) throw new KvCacheError(op, 'invalid-argument', 'a sequence appears twice in one step');
    for (const s of batch) this.check(op, s);
    const undo: Undo[] = [];
    const cached: number[] = [];
    // Keys and values are written after the step's attention has read the cache: a prompt must not hit a block that
    // this same step fills.
    const step: StepWrites = { unwritten: new Set(), copies: [] };
    try {
      for (const s of batch) cached.push(this.admit(s, undo, step));
      const { copies } = step;
      if (copies.length > 0) await this.pool.copy(copies.map((c) => c[0]), copies.map((c) => c[1]));
    } catch (e) {
      this.rollback(undo);
      throw e;
    }
    const B = batch.length;
    const counts = batch.map((s, b) => s.tokens.length - cached[b]);
    const past = batch.map((s, b) => this.lens.get(s.seq)! - counts[b]);
    const S = Math.max(...counts);
    // Attention reads the cached positions block by block: the first ceil(past / g) blocks of each sequence.
    const g = this.gatherBlock;
    const nb = Math.max(1, ...past.map((p) => Math.ceil(p / g)));
    const table = new Int32Array(B * nb);
    const writeAt = new Int32Array(B * S).fill(-1);
    const positions = new Int32Array(B * S);
    const tree = batch.some((s) => s.parents) ? new Uint8Array(B * S * S) : null;
    batch.forEach((s, b) => {
      const slots = this.slotTable(s.seq);
      for (let i = 0; i * g < past[b]; i++) table[b * nb + i] = slots[i * g] / g;
      const depth = s.parents ? depths(s.parents) : null;
      for (let i = 0; i < counts[b]; i++) {
        writeAt[b * S + i] = slots[past[b] + i];
        positions[b * S + i] = past[b] + (depth ? depth[i] : i);
      }
      if (!tree) return;
      for (let i = 0; i < S; i++) {
        const row = (b * S + i) * S;
        if (i >= counts[b]) tree[row + i] = 1;
        else if (s.parents) for (let a = i; a >= 0; a = s.parents[a]) tree[row + a] = 1;
        else for (let j = 0; j <= i; j++) tree[row + j] = 1;
      }
    });
    const own = [
      this.dev.tensor(Int32Array.from(past), [B], 'int32', { label: 'pastLengths' }),
      this.dev.tensor(table, [B, nb], 'int32', { label: 'blockTable' }),
      ...(tree ? [this.dev.tensor(tree, [B, S, S], 'bool', { label: 'treeMask' })] : []),
    ];
    let settled = false;
    const settle = () => {
      settled = true;
      for (const t of own) t.dispose();
    };
    return {
      cached,
      counts,
      positions,
      feeds: [...own, ...this.pool.tensors()],
      donate: [],
      commit: async (rows) => {
        try {
          await this.pool.write(rows, writeAt);
        } catch (e) {
          this.rollback(undo);
          throw e;
        } finally {
          for (const r of rows) r.dispose();
          settle();
        }
        batch.forEach((s, b) => {
          if (s.parents) this.trees.set(s.seq, past[b]);
          else this.trees.delete(s.seq);
          if (undo.some((u) => u.fresh && u.seq === s.seq)) this.slots.written?.(s.seq);
        });
      },
      abort: () => {
        if (settled) return;
        settle();
        this.rollback(undo);
      },
    };
  }

  /**
   * Whether a new sequence with this prompt can be admitted now (a scheduler's check before it commits): a region of
   * maxSeqLen in one gap (contiguous), its blocks after prefix hits (paged), or its slots, evicting cached prefixes if
   * needed (token). Admitting it does not reserve room for the tokens running sequences decode next.
   */
  canAdmit(seq: SeqId, prompt: readonly number[]): boolean {
    this.assertLive();
    if (this.lens.has(seq)) throw new KvCacheError('PoolKvCache.canAdmit', 'invalid-argument', `sequence ${seq} is already in the cache`);
    if (prompt.length === 0) throw new KvCacheError('PoolKvCache.canAdmit', 'invalid-argument', `sequence ${seq}: a prompt needs at least one token`);
    return prompt.length <= this.maxSeqLen && this.slots.canAdmit(seq, prompt);
  }

  /**
   * Whether plan(batch) would find the memory it needs now (a scheduler's check for a whole iteration). Counts blocks,
   * slots or regions the step would take; two new sequences sharing a cached prefix in one step are counted apart, so
   * the answer errs toward no.
   */
  fits(batch: readonly StepSeq[]): boolean {
    this.assertLive();
    if (batch.some((s) => (this.lens.get(s.seq) ?? 0) + s.tokens.length > this.maxSeqLen)) return false;
    return this.slots.fits(batch, this.lens);
  }

  /**
   * Whether sequences of these final lengths could all be held at once: now, or (`empty`) in the empty pool. A static
   * batch reserves its members' whole sequences up front this way.
   */
  canReserve(lengths: readonly number[], empty = false): boolean {
    if (lengths.some((n) => n > this.maxSeqLen)) return false;
    if (!empty) return this.slots.canReserve(lengths);
    // The empty pool: regions of maxSeqLen (contiguous), else blocks of blockSize (1 for tokens).
    const B = this.layout === 'contiguous' ? this.maxSeqLen : this.blockSize;
    const units = lengths.reduce((s, n) => s + (this.layout === 'contiguous' ? 1 : Math.ceil(n / B)), 0);
    return units <= this.pool.numSlots / B;
  }

  /**
   * Copies the sequence's keys and values to host memory and frees its memory (preemption by swapping, the lecture's
   * CPU offloading); swapIn brings them back.
   */
  async swapOut(seq: SeqId): Promise<SwappedKv> {
    const slots = this.slotTable(seq);
    const rows = await this.pool.read(slots);
    this.free(seq);
    return { length: slots.length, rows, bytes: slots.length * this.pool.bytesPerSlot };
  }

  /**
   * Gives a swapped-out sequence memory again and writes its keys and values back; `tokens` are its cached tokens
   * (for the block hashes). Returns the bytes moved in; KvCacheError 'exhausted', nothing changed, if it does not fit.
   */
  async swapIn(seq: SeqId, tokens: readonly number[], kv: SwappedKv): Promise<number> {
    if (tokens.length !== kv.length) throw new KvCacheError('PoolKvCache.swapIn', 'invalid-argument', `sequence ${seq}: ${tokens.length} tokens for ${kv.length} swapped rows`);
    const undo: Undo[] = [];
    this.check('PoolKvCache.swapIn', { seq, tokens });
    this.admit({ seq, tokens }, undo);
    // The whole sequence is written, prefix hits included: their rows are the same values.
    this.lens.set(seq, tokens.length);
    try {
      const slots = this.slotTable(seq);
      const H = this.shape.numKvHeads * this.shape.headDim;
      const rows = kv.rows.map((r) => this.dev.tensor(r, [1, kv.length, H], 'fp32', { tag: 'kv', label: 'swapped in' }));
      try {
        await this.pool.write(rows, Int32Array.from(slots));
      } finally {
        for (const r of rows) r.dispose();
      }
    } catch (e) {
      this.rollback(undo);
      throw e;
    }
    return kv.length * this.pool.bytesPerSlot;
  }

  /** Token slots the pool holds in all. */
  capacityTokens(): number {
    return this.pool.numSlots;
  }

  /**
   * After a tree step (token layout): keeps the tree tokens at `path` (indices into that step's tokens, root first)
   * as the sequence's next tokens and frees the other branches' slots.
   */
  acceptTree(seq: SeqId, path: readonly number[]): void {
    const start = this.trees.get(seq);
    if (start === undefined || !(this.slots instanceof TokenSlots)) throw new KvCacheError('PoolKvCache.acceptTree', 'invalid-argument', `sequence ${seq} has no token tree to accept`);
    this.slots.tokens.select(seq, start, path);
    this.lens.set(seq, start + path.length);
    this.trees.delete(seq);
  }

  /**
   * Keeps the sequence's first n tokens and frees the memory of the rest (rejected speculative tokens, a step to
   * undo); a block left partly filled loses its prefix-cache hash.
   */
  truncate(seq: SeqId, n: number): void {
    const len = this.length(seq);
    checkCount('PoolKvCache.truncate', 'n', n, 0);
    if (n > len) throw new KvCacheError('PoolKvCache.truncate', 'invalid-argument', `sequence ${seq} holds ${len} tokens, cannot keep ${n}`);
    this.slots.cut(seq, n);
    this.lens.set(seq, n);
    this.trees.delete(seq);
  }

  /** Paged: the child shares every block of the parent (parallel sampling, beam search); writes diverge by copy-on-write. */
  fork(parent: SeqId, child: SeqId): void {
    this.blockManager.fork(parent, child);
    this.lens.set(child, this.length(parent));
  }

  /** The slot of each cached position of the sequence. */
  slotTable(seq: SeqId): number[] {
    return this.slots.slotTable(seq, this.length(seq));
  }

  has(seq: SeqId): boolean {
    return this.lens.has(seq);
  }

  length(seq: SeqId): number {
    const n = this.lens.get(seq);
    if (n === undefined) throw new KvCacheError('PoolKvCache.length', 'invalid-argument', `unknown sequence ${seq}`);
    return n;
  }

  sequences(): SeqId[] {
    return [...this.lens.keys()];
  }

  free(seq: SeqId): void {
    this.length(seq);
    this.slots.free(seq);
    this.lens.delete(seq);
    this.trees.delete(seq);
  }

  reset(): void {
    for (const s of [...this.lens.keys()]) this.free(s);
  }

  memory(): KvMemory {
    const bpt = this.pool.bytesPerSlot;
    const { reserved, used, reservation, external, free } = this.slots.counts(this.lens);
    return {
      layout: this.layout,
      bytesPerToken: bpt,
      poolBytes: this.pool.disposed ? 0 : this.pool.bytes,
      reservedBytes: reserved * bpt,
      usedBytes: used * bpt,
      reservation: reservation * bpt,
      internalFragmentation: (reserved - used - reservation) * bpt,
      externalFragmentation: external * bpt,
      freeBytes: free * bpt,
      usedShare: reserved ? used / reserved : 1,
      sequences: this.lens.size,
    };
  }

  dispose(): void {
    if (this.disposedFlag) return;
    this.pool.dispose();
    this.disposedFlag = true;
  }

  /** Rejects what could never run, before anything is allocated. */
  private check(op: string, s: StepSeq): void {
    if (s.tokens.length === 0) throw new KvCacheError(op, 'invalid-argument', `sequence ${s.seq}: a step needs at least one token`);
    if (this.trees.has(s.seq)) throw new KvCacheError(op, 'invalid-argument', `sequence ${s.seq}: accept its token tree (acceptTree) before its next step`);
    const n = (this.lens.get(s.seq) ?? 0) + s.tokens.length;
    if (n > this.maxSeqLen) throw new KvCacheError(op, 'too-long', `sequence ${s.seq} would hold ${n} tokens; the cache takes at most ${this.maxSeqLen}`);
    if (!s.parents) return;
    if (!this.supportsTrees) throw new KvCacheError(op, 'invalid-argument', `token trees need the token layout without a radix cache (this cache is ${this.slots instanceof RadixTokenSlots ? 'token with radixCache' : this.layout}): a tree's tokens are kept or dropped one by one`);
    if (!this.lens.has(s.seq)) throw new KvCacheError(op, 'invalid-argument', `sequence ${s.seq}: a token tree extends a cached prefix; prefill the sequence first`);
    if (s.parents.length !== s.tokens.length || s.parents.some((p, i) => !Number.isInteger(p) || p < -1 || p >= i)) {
      throw new KvCacheError(op, 'invalid-argument', `sequence ${s.seq}: parents must give, for each token, -1 or the index of an earlier token`);
    }
  }

  /** Allocates one sequence's slots for this step; returns the prompt tokens found in the prefix cache. */
  private admit(s: StepSeq, undo: Undo[], step: StepWrites = { unwritten: new Set(), copies: [] }): number {
    const fresh = !this.lens.has(s.seq);
    const prevLen = this.lens.get(s.seq) ?? 0;
    const u: Undo = { seq: s.seq, fresh, prevLen, hashed: [] };
    // An existing sequence is undone by cutting it back to prevLen, which is safe whatever part of its act ran.
    if (!fresh) undo.push(u);
    const { hit, hashed } = this.slots.admit(s, fresh, step);
    u.hashed = hashed;
    if (fresh) undo.push(u);
    this.lens.set(s.seq, prevLen + s.tokens.length);
    return hit;
  }

  private rollback(undo: readonly Undo[]): void {
    for (const u of [...undo].reverse()) {
      if (u.fresh) {
        this.slots.abandon(u.seq, u.hashed);
        this.lens.delete(u.seq);
      } else {
        this.slots.cut(u.seq, u.prevLen);
        this.lens.set(u.seq, u.prevLen);
      }
    }
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new KvCacheError('PoolKvCache', 'invalid-argument', 'the cache was disposed');
  }
}

/** The largest power of two, at most 16, that divides n. */
function gatherBlockOf(n: number): number {
  let g = 1;
  while (g < 16 && n % (2 * g) === 0) g *= 2;
  return g;
}

/** Depth of each node of a token tree (roots 0). */
function depths(parents: readonly number[]): number[] {
  const d: number[] = [];
  parents.forEach((p, i) => (d[i] = p < 0 ? 0 : d[p] + 1));
  return d;
}
