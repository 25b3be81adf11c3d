/**
 * A static KV cache: per layer one key and one value tensor [batch, kvHeads, maxSeq, headDim] reserved for the longest
 * sequence up front (Hugging Face's StaticCache; the lecture's naive implementation), and each row's length. The
 * batch's rows are its sequences, 0 .. batch-1, and every step runs them all. Attention is onnxruntime's fused
 * GroupQueryAttention, which writes the new rows into the donated cache in place: the contiguous baseline that paged
 * attention is measured against. The tensors are tagged 'kv' and, on a GPU, stay in device memory between steps.
 */
import type { Device } from '../device/device.ts';
import type { Graph, Value } from '../graph/graph.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import { KvCacheError } from './errors.ts';
import type { SeqId } from './block_manager.ts';
import { allocateKv } from './kv_pool.ts';
import type { KvCache, KvGraph, KvMemory, KvPlan, KvShape, StepSeq } from './kv_cache.ts';

export class StaticKvCache implements KvCache {
  readonly layout = 'static' as const;
  readonly graphKey = 'static';
  readonly supportsTrees = false;
  private keys: Tensor[];
  private vals: Tensor[];
  /** Tokens cached per sequence. */
  readonly lengths: Int32Array;
  private disposedFlag = false;

  private constructor(
    private readonly dev: Device,
    readonly shape: KvShape,
    readonly batch: number,
    readonly maxSeq: number,
    keys: Tensor[],
    vals: Tensor[],
  ) {
    this.keys = keys;
    this.vals = vals;
    this.lengths = new Int32Array(batch);
  }

  /** Reserves the cache (zeros) for `batch` sequences of up to `maxSeq` tokens; OutOfMemoryError if it cannot fit. */
  static async create(dev: Device, shape: KvShape, batch: number, maxSeq: number): Promise<StaticKvCache> {
    if (!Number.isInteger(batch) || batch < 1) throw new ServelabError(`StaticKvCache: batch must be a positive integer, got ${batch}`);
    if (!Number.isInteger(maxSeq) || maxSeq < 1) throw new ServelabError(`StaticKvCache: maxSeq must be a positive integer, got ${maxSeq}`);
    const { keys, vals } = await allocateKv(dev, shape.numLayers, [batch, shape.numKvHeads, maxSeq, shape.headDim]);
    return new StaticKvCache(dev, shape, batch, maxSeq, keys, vals);
  }

  /** Bytes reserved: 2 x layers x batch x kvHeads x maxSeq x headDim x 4. */
  get bytes(): number {
    return [...this.keys, ...this.vals].reduce((s, t) => s + t.bytes, 0);
  }

  /** The cache tensors in the decoder's order: k0, v0, k1, v1, ... */
  tensors(): Tensor[] {
    this.assertLive();
    return this.keys.flatMap((k, i) => [k, this.vals[i]]);
  }

  /** Can `tokens` more tokens be appended to each of these sequences? */
  canAppend(tokens: number, rows: readonly number[] = [...this.lengths.keys()]): boolean {
    return rows.every((b) => this.lengths[b] + tokens <= this.maxSeq);
  }

  declare(g: Graph, _seq: number | string, tree: boolean): KvGraph {
    if (tree) throw new ServelabError('StaticKvCache: token trees need a cache of token slots (layout "token")');
    const { numLayers, numHeads, numKvHeads, headDim } = this.shape;
    const lengths = g.input('pastLengths', 'int32', ['batch']);
    const dims = ['batch', numKvHeads, 'maxSeq', headDim];
    const past = Array.from({ length: numLayers }, (_, i) => [g.input(`past.${i}.k`, 'fp32', dims), g.input(`past.${i}.v`, 'fp32', dims)]);
    const outputs: Value[] = [];
    return {
      outputs,
      attend: (i, q, k, v) => {
        const [att, pk, pv] = g.op('GroupQueryAttention', [q, k, v, past[i][0], past[i][1], lengths], { numHeads, kvNumHeads: numKvHeads });
        outputs.push(pk, pv);
        return att;
      },
    };
  }

  async plan(batch: readonly StepSeq[]): Promise<KvPlan> {
    this.assertLive();
    const op = 'StaticKvCache.plan';
    const B = this.batch;
    if (batch.length !== B || batch.some((s, b) => s.seq !== b)) {
      throw new KvCacheError(op, 'invalid-argument', `a static cache steps all its ${B} rows together, in order (sequences 0..${B - 1}); got [${batch.map((s) => s.seq).join(', ')}]`);
    }
    if (batch.some((s) => s.parents)) throw new KvCacheError(op, 'invalid-argument', 'token trees need a cache of token slots (layout "token")');
    const counts = batch.map((s) => s.tokens.length);
    const S = Math.max(...counts);
    const past = Int32Array.from(this.lengths);
    for (let b = 0; b < B; b++) {
      if (past[b] + S > this.maxSeq) throw new KvCacheError(op, 'too-long', `sequence ${b} holds ${past[b]} tokens; ${S} more exceed its row of ${this.maxSeq}`);
    }
    const positions = new Int32Array(B * S);
    for (let b = 0; b < B; b++) for (let i = 0; i < S; i++) positions[b * S + i] = past[b] + i;
    const lens = this.dev.tensor(past, [B], 'int32', { label: 'pastLengths' });
    const feeds = [lens, ...this.keys.flatMap((k, i) => [k, this.vals[i]])];
    let done = false;
    return {
      cached: counts.map(() => 0),
      counts,
      positions,
      feeds,
      // The cache is donated: attention writes the new rows into its buffers (no copy, never held twice).
      donate: feeds.map((_, i) => i).slice(1),
      commit: async (present) => {
        if (present.length !== 2 * this.keys.length) throw new ServelabError(`StaticKvCache: ${present.length} tensors for ${this.keys.length} layers`);
        for (const t of [...this.keys, ...this.vals]) if (!t.disposed) t.dispose();
        this.keys = present.filter((_, i) => i % 2 === 0).map((t) => t.retag('kv'));
        this.vals = present.filter((_, i) => i % 2 === 1).map((t) => t.retag('kv'));
        counts.forEach((n, b) => (this.lengths[b] += n));
        lens.dispose();
        done = true;
      },
      abort: () => {
        if (!done) lens.dispose();
      },
    };
  }

  has(seq: SeqId): boolean {
    return typeof seq === 'number' && Number.isInteger(seq) && seq >= 0 && seq < this.batch;
  }

  length(seq: SeqId): number {
    if (!this.has(seq)) throw new KvCacheError('StaticKvCache.length', 'invalid-argument', `unknown sequence ${seq} (rows are 0..${this.batch - 1})`);
    return this.lengths[seq as number];
  }

  free(seq: SeqId): void {
    this.length(seq);
    this.lengths[seq as number] = 0;
  }

  reset(): void {
    this.lengths.fill(0);
  }

  memory(): KvMemory {
    const bpt = 2 * this.shape.numLayers * this.shape.numKvHeads * this.shape.headDim * 4;
    const reserved = this.batch * this.maxSeq * bpt;
    const used = this.lengths.reduce((s, n) => s + n, 0) * bpt;
    return {
      layout: this.layout,
      bytesPerToken: bpt,
      poolBytes: this.disposedFlag ? 0 : this.bytes,
      reservedBytes: reserved,
      usedBytes: used,
      reservation: reserved - used,
      internalFragmentation: 0,
      externalFragmentation: 0,
      freeBytes: 0,
      usedShare: reserved ? used / reserved : 1,
      sequences: this.batch,
    };
  }

  dispose(): void {
    if (this.disposedFlag) return;
    for (const t of [...this.keys, ...this.vals]) t.dispose();
    this.disposedFlag = true;
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new ServelabError('StaticKvCache: the cache was disposed');
  }
}
