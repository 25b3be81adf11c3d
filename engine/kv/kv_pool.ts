/**
 * The device memory of a pooled KV cache: per layer one key and one value tensor [kvHeads, slots, headDim] (fp32, tag
 * 'kv'), shared by every sequence; which slots belong to which sequence is the allocator's business. Head-major, so
 * that gathering a sequence's slots gives each head's keys contiguous for the attention product.
 *
 * New keys and values are written into their slots after each step (vLLM's reshape_and_cache), and blocks copied for
 * copy-on-write (vLLM's copy_blocks). On the CPU the pool is host memory and both are copies of a few rows in place:
 * a step never moves the pool. On a GPU the pool stays in device memory and a small graph scatters the rows into it
 * (onnxruntime's WebGPU provider gives every output a buffer of its own, so the write makes a new pool on the device and
 * frees the old one; nothing crosses to the host).
 */
import type { Device } from '../device/device.ts';
import { Graph } from '../graph/graph.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { checkCount, KvCacheError } from './errors.ts';
import type { KvShape } from './kv_cache.ts';

/**
 * Zeroed key and value tensors of `dims` for each of `numLayers` layers, tagged 'kv' (labels kv.<layer>.k / .v), in
 * device memory on webgpu; OutOfMemoryError with nothing kept if they do not all fit.
 */
export async function allocateKv(dev: Device, numLayers: number, dims: readonly number[]): Promise<{ keys: Tensor[]; vals: Tensor[] }> {
  const made: Tensor[] = [];
  try {
    for (let i = 0; i < 2 * numLayers; i++) {
      const host = dev.empty(dims, 'fp32', { tag: 'kv', label: `kv.${i >> 1}.${i & 1 ? 'v' : 'k'}` });
      made.push(host);
      if (dev.kind === 'webgpu') {
        made[made.length - 1] = await dev.toDevice(host);
        host.dispose();
      }
    }
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  }
  return { keys: made.filter((_, i) => i % 2 === 0), vals: made.filter((_, i) => i % 2 === 1) };
}

export class KvPool {
  private keys: Tensor[];
  private vals: Tensor[];
  private disposedFlag = false;

  private constructor(
    private readonly dev: Device,
    readonly shape: KvShape,
    readonly numSlots: number,
    keys: Tensor[],
    vals: Tensor[],
  ) {
    this.keys = keys;
    this.vals = vals;
  }

  /** Reserves `numSlots` token slots (zeros) on `dev`; OutOfMemoryError, with nothing kept, if they do not fit. */
  static async create(dev: Device, shape: KvShape, numSlots: number): Promise<KvPool> {
    checkCount('KvPool', 'numSlots', numSlots, 1);
    const { keys, vals } = await allocateKv(dev, shape.numLayers, [shape.numKvHeads, numSlots, shape.headDim]);
    return new KvPool(dev, shape, numSlots, keys, vals);
  }

  /** 2 x layers x kvHeads x headDim x 4 bytes per slot. */
  get bytesPerSlot(): number {
    return 2 * this.shape.numLayers * this.shape.numKvHeads * this.shape.headDim * 4;
  }

  get bytes(): number {
    return this.numSlots * this.bytesPerSlot;
  }

  /** The pool tensors in the decoder's order: k0, v0, k1, v1, ... */
  tensors(): Tensor[] {
    this.assertLive();
    return this.keys.flatMap((k, i) => [k, this.vals[i]]);
  }

  /**
   * Writes a step's new keys and values (per layer k, v: [B, S, kvHeads*headDim], in tensors() order) into their
   * slots; slots[b*S + i] < 0 skips a padding row.
   */
  async write(rows: readonly Tensor[], slots: Int32Array): Promise<void> {
    this.assertLive();
    if (rows.length !== 2 * this.keys.length) throw new KvCacheError('KvPool.write', 'invalid-argument', `${rows.length} row tensors for ${this.keys.length} layers`);
    for (const s of slots) if (s >= this.numSlots) throw new KvCacheError('KvPool.write', 'invalid-argument', `slot ${s} is not in [0, ${this.numSlots})`);
    const pick: number[] = [];
    slots.forEach((s, t) => s >= 0 && pick.push(t));
    if (pick.length === 0) return;
    if (this.dev.kind !== 'webgpu') {
      const { numKvHeads: H, headDim: D } = this.shape;
      const N = this.numSlots;
      this.tensors().forEach((pool, l) => {
        const dst = pool.data as Float32Array;
        const src = rows[l].data as Float32Array;
        for (const t of pick) for (let h = 0; h < H; h++) dst.set(src.subarray((t * H + h) * D, (t * H + h + 1) * D), (h * N + slots[t]) * D);
        pool.touch();
      });
      return;
    }
    const at = pick.map((t) => slots[t]);
    await this.scatter(rows, Int32Array.from(pick), at);
  }

  /**
   * The keys and values of these slots, per pool tensor (tensors() order) [slots.length, kvHeads * headDim] on the host:
   * what swapping a sequence out to host memory copies (from a GPU, one gather and one download).
   */
  async read(slots: readonly number[]): Promise<Float32Array[]> {
    this.assertLive();
    for (const s of slots) if (!Number.isInteger(s) || s < 0 || s >= this.numSlots) throw new KvCacheError('KvPool.read', 'invalid-argument', `slot ${s} is not in [0, ${this.numSlots})`);
    const { numKvHeads: H, headDim: D } = this.shape;
    const N = this.numSlots;
    if (this.dev.kind !== 'webgpu') {
      return this.tensors().map((pool) => {
        const src = pool.data as Float32Array;
        const out = new Float32Array(slots.length * H * D);
        slots.forEach((s, t) => {
          for (let h = 0; h < H; h++) out.set(src.subarray((h * N + s) * D, (h * N + s + 1) * D), (t * H + h) * D);
        });
        return out;
      });
    }
    const g = this.dev.graph(this, 'read', () => this.readGraph());
    const at = this.dev.tensor(slots, [slots.length], 'int32');
    try {
      const outs = await this.dev.run(g, [...this.tensors(), at], { label: 'kv swap out' });
      const values = await Promise.all(outs.map((t) => t.values()));
      for (const t of outs) t.dispose();
      return values;
    } finally {
      at.dispose();
    }
  }

  /** Copies the keys and values of slot src[i] to slot dst[i] in every layer (copy-on-write of a shared block). */
  async copy(src: readonly number[], dst: readonly number[]): Promise<void> {
    this.assertLive();
    if (src.length !== dst.length) throw new KvCacheError('KvPool.copy', 'invalid-argument', `${src.length} sources for ${dst.length} destinations`);
    for (const s of [...src, ...dst]) {
      if (!Number.isInteger(s) || s < 0 || s >= this.numSlots) throw new KvCacheError('KvPool.copy', 'invalid-argument', `slot ${s} is not in [0, ${this.numSlots})`);
    }
    if (src.length === 0) return;
    if (this.dev.kind !== 'webgpu') {
      const { numKvHeads: H, headDim: D } = this.shape;
      const N = this.numSlots;
      for (const pool of this.tensors()) {
        const a = pool.data as Float32Array;
        src.forEach((s, i) => {
          for (let h = 0; h < H; h++) a.copyWithin((h * N + dst[i]) * D, (h * N + s) * D, (h * N + s + 1) * D);
        });
        pool.touch();
      }
      return;
    }
    const g = this.dev.graph(this, 'copy', () => this.copyGraph());
    const feeds = [this.dev.tensor(src, [src.length], 'int32'), this.dev.tensor(this.indices(dst), [this.shape.numKvHeads, dst.length, 2], 'int32')];
    try {
      this.replace(await this.dev.run(g, [...this.tensors(), ...feeds], { keep: 'device', tag: 'kv', label: 'kv pool' }));
    } finally {
      for (const t of feeds) t.dispose();
    }
  }

  dispose(): void {
    if (this.disposedFlag) return;
    for (const t of this.tensors()) t.dispose();
    this.disposedFlag = true;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  /** ScatterND indices [kvHeads, M, 2]: (head, slot) for each slot. */
  private indices(slots: readonly number[]): Int32Array {
    const H = this.shape.numKvHeads;
    const out = new Int32Array(H * slots.length * 2);
    for (let h = 0; h < H; h++) slots.forEach((s, m) => out.set([h, s], (h * slots.length + m) * 2));
    return out;
  }

  private async scatter(rows: readonly Tensor[], pick: Int32Array, at: readonly number[]): Promise<void> {
    const g = this.dev.graph(this, 'write', () => this.writeGraph());
    const feeds = [this.dev.tensor(pick, [pick.length], 'int32'), this.dev.tensor(this.indices(at), [this.shape.numKvHeads, at.length, 2], 'int32')];
    try {
      this.replace(await this.dev.run(g, [...this.tensors(), ...rows, ...feeds], { keep: 'device', tag: 'kv', label: 'kv pool' }));
    } finally {
      for (const t of feeds) t.dispose();
    }
  }

  private replace(pools: Tensor[]): void {
    for (const t of this.tensors()) t.dispose();
    this.keys = pools.filter((_, i) => i % 2 === 0);
    this.vals = pools.filter((_, i) => i % 2 === 1);
  }

  private poolInputs(g: Graph): ReturnType<Graph['input']>[] {
    const { numLayers, numKvHeads: H, headDim: D } = this.shape;
    return Array.from({ length: 2 * numLayers }, (_, i) => g.input(`kv.${i >> 1}.${i & 1 ? 'v' : 'k'}`, 'fp32', [H, 'slots', D]));
  }

  /** pools, rows [B, S, H*D] per pool, pick int32 [M] (real rows of the flattened B*S), at int32 [H, M, 2] -> pools. */
  private writeGraph(): Graph {
    const { numKvHeads: H, headDim: D } = this.shape;
    const g = new Graph('kv pool write');
    const pools = this.poolInputs(g);
    const rows = pools.map((_, i) => g.input(`rows.${i}`, 'fp32', ['batch', 'seq', H * D]));
    const pick = g.input('pick', 'int32', ['m']);
    const at = g.input('at', 'int32', [H, 'm', 2]);
    pools.forEach((p, i) => {
      const flat = g.op('Reshape', [rows[i]], { shape: [-1, H, D] })[0];
      const picked = g.op('Transpose', [g.op('Gather', [flat, pick])[0]], { perm: [1, 0, 2] })[0]; //  [H, M, D]
      g.output(g.op('ScatterND', [p, at, picked])[0]);
    });
    return g;
  }

  /** pools, at int32 [M] -> per pool [M, H*D]: the rows of these slots. */
  private readGraph(): Graph {
    const { numKvHeads: H, headDim: D } = this.shape;
    const g = new Graph('kv pool read');
    const pools = this.poolInputs(g);
    const at = g.input('at', 'int32', ['m']);
    for (const p of pools) {
      const rows = g.op('Transpose', [g.op('Gather', [p, at], { axis: 1 })[0]], { perm: [1, 0, 2] })[0]; //  [M, H, D]
      g.output(g.op('Reshape', [rows], { shape: [-1, H * D] })[0]);
    }
    return g;
  }

  /** pools, src int32 [M], at int32 [H, M, 2] (the destination slots) -> pools. */
  private copyGraph(): Graph {
    const { numKvHeads: H } = this.shape;
    const g = new Graph('kv pool copy');
    const pools = this.poolInputs(g);
    const src = g.input('src', 'int32', ['m']);
    const at = g.input('at', 'int32', [H, 'm', 2]);
    for (const p of pools) g.output(g.op('ScatterND', [p, at, g.op('Gather', [p, src], { axis: 1 })[0]])[0]);
    return g;
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new KvCacheError('KvPool', 'invalid-argument', 'the pool was disposed');
  }
}
