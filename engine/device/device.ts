/** A device: one backend, one memory tracker, and the tensors that live on it. Graph runs are checked here before any kernel. */
import type { Backend, BackendName } from '../backends/backend.ts';
import type { Graph } from '../graph/graph.ts';
import { MemoryTracker, type MemoryTag } from '../memory/tracker.ts';
import { Tensor, numelOf, type DeviceRef } from '../tensor/tensor.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { pack4, packInt4 } from '../dtype/packed4.ts';
import { throwIfAborted } from '../abort.ts';
import { bindShapes } from '../graph/bind.ts';
import { CompileCache, type CompileStats } from './compile_cache.ts';
import { DeviceError, DTypeError, KernelError, OutOfMemoryError, ServelabError, ShapeError } from '../errors.ts';

export interface TensorOptions {
  tag?: MemoryTag;
  label?: string;
}

export interface DeviceOptions {
  /** Bytes the device may hold in all (tensors and compiled sessions); null: unbounded. */
  budget?: number | null;
  /** Bytes of compiled sessions kept cached (least recently used are released first). Default 1 GiB. */
  compileCacheBytes?: number;
}

/** What the device has compiled and moved, since it was made. */
export interface DeviceStats extends CompileStats {
  /** Graphs memoized by their builders (device.graph). */
  graphs: number;
  runs: number;
  /** Bytes fed from host memory into the backend's device memory (0 where they are the same memory). */
  hostToDeviceBytes: number;
  /** Bytes of results brought back to host memory. */
  deviceToHostBytes: number;
}

export class Device implements DeviceRef {
  readonly memory: MemoryTracker;
  private readonly cache: CompileCache;
  private readonly memo = new WeakMap<object, Map<string, Graph>>();
  private memoCount = 0;
  private runs = 0;
  private h2d = 0;
  private d2h = 0;

  constructor(
    readonly name: string,
    readonly backend: Backend,
    opts: DeviceOptions = {},
  ) {
    this.memory = new MemoryTracker(name, { budget: opts.budget ?? null });
    this.cache = new CompileCache(backend, this.memory, opts.compileCacheBytes ?? 2 ** 30);
  }

  /**
   * The graph `build` makes, memoized per owner (a layer, a weight) and key, so a step built on every call is built
   * once; graphs die with their owner. Keys name what the structure depends on, not sizes a symbol covers.
   */
  graph(owner: object, key: string, build: () => Graph): Graph {
    let m = this.memo.get(owner);
    if (!m) this.memo.set(owner, (m = new Map()));
    let g = m.get(key);
    if (!g) {
      g = build();
      m.set(key, g);
      this.memoCount++;
    }
    return g;
  }

  stats(): DeviceStats {
    return { ...this.cache.stats(), graphs: this.memoCount, runs: this.runs, hostToDeviceBytes: this.h2d, deviceToHostBytes: this.d2h };
  }

  /** Bounds the bytes of cached sessions (releasing the least recently used now if over). */
  setCompileCacheBytes(bytes: number): void {
    if (!(Number.isFinite(bytes) && bytes >= 0)) throw new ServelabError(`compile cache bound must be a non-negative number of bytes, got ${bytes}`);
    this.cache.maxBytes = bytes;
  }

  /** Releases every compiled session (their bytes leave the 'compiled' tag); they are rebuilt when next run. */
  releaseCompiled(): void {
    this.cache.clear();
  }

  tensorChanged(id: number): void {
    this.cache.invalidate(id);
  }

  get kind(): BackendName {
    return this.backend.name;
  }

  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'fp32', opts: TensorOptions = {}): Tensor {
    return Tensor.from(this, values, shape, dtype, opts.tag ?? 'activations', opts.label ?? '');
  }

  empty(shape: readonly number[], dtype: DType = 'fp32', opts: TensorOptions = {}): Tensor {
    return Tensor.empty(this, shape, dtype, opts.tag ?? 'activations', opts.label ?? '');
  }

  /**
   * A packed 4-bit tensor from its codes (nf4: 0..15 indices into NF4_CODE; int4: -8..7). Rows must hold an even
   * number of codes so that each row starts on a byte, which every 4-bit kernel reads row by row.
   */
  packed(codes: ArrayLike<number>, shape: readonly number[], dtype: 'int4' | 'nf4', opts: TensorOptions = {}): Tensor {
    const last = shape[shape.length - 1];
    if (shape.length === 0 || last % 2 !== 0) {
      throw new ShapeError(`pack ${dtype}`, [shape], `the last dimension must be even (two 4-bit codes per byte), got ${last ?? 'a scalar'}`);
    }
    if (codes.length !== numelOf(shape)) throw new ShapeError(`pack ${dtype}`, [shape], `${codes.length} codes do not fill the shape`);
    // Typed-array conversion would wrap silently; check the codes themselves first.
    const [lo, hi] = dtype === 'nf4' ? [0, 15] : [-8, 7];
    for (let i = 0; i < codes.length; i++) {
      if (!Number.isInteger(codes[i]) || codes[i] < lo || codes[i] > hi) throw new DTypeError(`pack ${dtype}`, [dtype], `code ${codes[i]} at index ${i} is outside ${lo}..${hi}`);
    }
    const bytes = dtype === 'nf4' ? pack4(Uint8Array.from(codes)) : packInt4(Int8Array.from(codes));
    return Tensor.adopt(this, shape, dtype, bytes, opts.tag ?? 'weights', opts.label ?? '');
  }

  /** A copy of a tensor from any device onto this one, counted by this device's tracker. */
  copyFrom(t: Tensor, opts: TensorOptions = {}): Tensor {
    const src = t.data;
    return Tensor.adopt(this, t.shape, t.dtype, src.slice(), opts.tag ?? t.tag, opts.label ?? t.label);
  }

  /**
   * Runs a whole graph as one backend call. Feeds are checked against the graph's inputs and the outputs'
   * bytes against the budget first, so a bad call or an out-of-memory leaves every tensor as it was.
   */
  async run(graph: Graph, feeds: readonly Tensor[], opts: TensorOptions = {}): Promise<Tensor[]> {
    throwIfAborted();
    if (feeds.length !== graph.inputs.length) {
      throw new ShapeError(graph.name, feeds.map((t) => t.shape), `graph takes ${graph.inputs.length} inputs, got ${feeds.length}`);
    }
    let feedElements = 0;
    let feedBytes = 0;
    const storages = feeds.map((t, i) => {
      const v = graph.inputs[i];
      if (t.device !== this) throw new DeviceError(`${graph.name}: input '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}; copy it with device.copyFrom`);
      if (t.dtype !== v.dtype) throw new DTypeError(graph.name, [t.dtype, v.dtype], `input '${v.name}' is ${t.dtype}, the graph expects ${v.dtype}`);
      feedElements += t.numel;
      feedBytes += t.bytes;
      return t.data;
    });
    const binding = bindShapes(graph, feeds.map((t) => t.shape));
    for (const [v, t] of graph.constants) {
      if (t.device !== this) throw new DeviceError(`${graph.name}: constant '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}`);
      if (t.disposed) throw new DeviceError(`${graph.name}: constant '${v.name}' (tensor #${t.id}) was disposed`);
    }
    let outBytes = 0;
    graph.outputs.forEach((v, i) => (outBytes += byteSize(v.dtype, numelOf(binding.outputShapes[i]))));
    const tag = opts.tag ?? 'activations';
    if (!this.memory.canAllocate(outBytes)) {
      throw new OutOfMemoryError(this.name, outBytes, this.memory.live, this.memory.budget!, tag);
    }
    const entry = await this.cache.get(graph);
    let out;
    try {
      out = await this.cache.run(entry, feedElements, outBytes, () => this.backend.run(entry.exe, graph, storages, binding));
    } catch (e) {
      throw e instanceof ServelabError ? e : new KernelError(graph.name, this.name, e);
    }
    this.runs++;
    if (this.backend.name === 'webgpu') {
      this.h2d += feedBytes;
      this.d2h += outBytes;
    }
    return graph.outputs.map((v, i) => Tensor.adopt(this, binding.outputShapes[i], v.dtype, out[i], tag, opts.label ?? v.name));
  }

  placement(): Record<string, string> {
    return this.backend.placement();
  }

  notes(): string[] {
    return this.backend.notes();
  }

  async dispose(): Promise<void> {
    this.cache.clear();
    await this.backend.dispose();
  }

  toString(): string {
    return `Device(${this.name}, ${this.kind})`;
  }
}
