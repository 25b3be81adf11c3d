/**
 * A device: one backend, one memory tracker, and the tensors that live on it, in host memory or (webgpu) in the
 * device's own. Graph runs are checked here before any kernel, and every byte that crosses between the two is counted.
 */
import type { Backend, BackendName } from '../backends/backend.ts';
import type { Graph } from '../graph/graph.ts';
import { MemoryTracker, type MemoryTag } from '../memory/tracker.ts';
import { Tensor, numelOf, type DeviceBuffer, type DeviceRef, type Location, type Storage } from '../tensor/tensor.ts';
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

export interface RunOptions extends TensorOptions {
  /**
   * Where the outputs stay, for all or per output: 'host' (the default) or 'device', the device's own memory, where
   * the next run takes them without a copy. On cpu and reference every tensor is a host tensor; on webgpu a dtype the
   * GPU cannot hold (int8) comes back to the host. Read a device tensor with `await t.read()` or `t.values()`.
   * onnxruntime fixes where outputs go when it builds a session, so each placement of a graph's outputs is compiled
   * (and counted under 'compiled') as a session of its own.
   */
  keep?: Location | readonly Location[];
  /**
   * Indices of feeds the caller gives up (buffer donation): each is disposed by a successful run, and an op that
   * updates it (GroupQueryAttention's KV cache) writes its output into that feed's buffer instead of a new one, so a
   * decode step neither copies nor holds its cache twice. A donated feed must appear once among the feeds. A run that
   * fails keeps them, though an op that failed part way may have written to them.
   */
  donate?: readonly number[];
}

export interface DeviceOptions {
  /** Bytes the device may hold in all (tensors and compiled sessions); null: unbounded. */
  budget?: number | null;
  /** Bytes of compiled sessions kept cached (least recently used are released first). Default 1 GiB. */
  compileCacheBytes?: number;
}

/** What the device has compiled and moved, since it was made. */
export interface DeviceStats extends CompileStats {
  /** Graphs built through device.graph (each a miss of its memo). */
  graphs: number;
  runs: number;
  /**
   * Bytes copied from host memory into the device's own (0 where they are the same memory): every host feed of a run,
   * and every upload (toDevice), as they travel (bf16 as fp32 on webgpu). Graph constants are not transfers: they are
   * baked into the session.
   */
  hostToDeviceBytes: number;
  /** Bytes brought back to host memory: every host output of a run, and every read of a device tensor. */
  deviceToHostBytes: number;
}

/** Graphs memoized per owner, least recently used dropped first. */
const GRAPHS_PER_OWNER = 256;

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
    if (g) {
      m.delete(key); // most recently used last
    } else {
      g = build();
      this.memoCount++;
      // Keys that carry sizes (an eager Reshape to ever new shapes) must not grow without bound.
      if (m.size >= GRAPHS_PER_OWNER) m.delete(m.keys().next().value!);
    }
    m.set(key, g);
    return g;
  }

  stats(): DeviceStats {
    return { ...this.cache.stats(), graphs: this.memoCount, runs: this.runs, hostToDeviceBytes: this.h2d, deviceToHostBytes: this.d2h };
  }

  /** Bounds the bytes of cached sessions (releasing the least recently used now if over). */
  setCompileCacheBytes(bytes: number): void {
    if (!(Number.isFinite(bytes) && bytes >= 0)) throw new ServelabError(`compile cache bound must be a non-negative number of bytes, got ${bytes}`);
    this.cache.setMaxBytes(bytes);
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

  /** A host copy of a host tensor from any device onto this one, counted by this device's tracker. */
  copyFrom(t: Tensor, opts: TensorOptions = {}): Tensor {
    const src = t.data;
    return Tensor.adopt(this, t.shape, t.dtype, src.slice(), opts.tag ?? t.tag, opts.label ?? t.label);
  }

  /**
   * Runs a whole graph as one backend call. Feeds are checked against the graph's inputs and the outputs'
   * bytes against the budget first, so a bad call or an out-of-memory leaves every tensor as it was. Device-resident
   * feeds go in as they are; outputs stay where `opts.keep` asks.
   */
  async run(graph: Graph, feeds: readonly Tensor[], opts: RunOptions = {}): Promise<Tensor[]> {
    throwIfAborted();
    if (feeds.length !== graph.inputs.length) {
      throw new ShapeError(graph.name, feeds.map((t) => t.shape), `graph takes ${graph.inputs.length} inputs, got ${feeds.length}`);
    }
    const mem = this.backend.deviceMemory;
    let feedElements = 0;
    let upBytes = 0;
    const operands = feeds.map((t, i) => {
      const v = graph.inputs[i];
      if (t.device !== this) throw new DeviceError(`${graph.name}: input '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}; copy it with device.copyFrom`);
      if (t.disposed) throw new DeviceError(`${graph.name}: input '${v.name}' (tensor #${t.id} ${t.describe()}) was disposed`);
      if (t.dtype !== v.dtype) throw new DTypeError(graph.name, [t.dtype, v.dtype], `input '${v.name}' is ${t.dtype}, the graph expects ${v.dtype}`);
      feedElements += t.numel;
      const buf = t.deviceBuffer;
      if (buf) return buf;
      if (mem) upBytes += mem.bytes(t.dtype, t.numel) ?? t.bytes;
      return t.data;
    });
    const donated = this.donations(graph, feeds, opts.donate);
    const binding = bindShapes(graph, feeds.map((t) => t.shape));
    for (const [v, t] of graph.constants) {
      if (t.device !== this) throw new DeviceError(`${graph.name}: constant '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}`);
      if (t.disposed) throw new DeviceError(`${graph.name}: constant '${v.name}' (tensor #${t.id}) was disposed`);
      if (t.location === 'device') {
        throw new DeviceError(`${graph.name}: constant '${v.name}' (tensor #${t.id} ${t.describe()}) is in device memory; constants are baked into the session from host bytes: feed it as an input instead`);
      }
    }
    const keep = this.keepOnDevice(graph, opts.keep);
    let total = 0;
    let downBytes = 0;
    graph.outputs.forEach((v, i) => {
      const n = numelOf(binding.outputShapes[i]);
      // What the output takes where it stays; one that comes back crosses as the backend carries it.
      const carried = mem?.bytes(v.dtype, n) ?? byteSize(v.dtype, n);
      total += keep[i] ? carried : byteSize(v.dtype, n);
      if (mem && !keep[i]) downBytes += carried;
    });
    const tag = opts.tag ?? 'activations';
    // Donated feeds are freed as the outputs arrive: the tracker's peak is what is live, less them, plus the outputs.
    const freed = feeds.reduce((s, t, i) => s + (donated[i] ? t.bytes : 0), 0);
    if (!this.memory.canAllocate(total - freed)) {
      throw new OutOfMemoryError(this.name, total, this.memory.live - freed, this.memory.budget!, tag);
    }
    // Held for the run, so that a feed disposed while the run is pending keeps its buffer until the run ends.
    const held = operands.filter((o): o is DeviceBuffer => !ArrayBuffer.isView(o));
    for (const b of held) b.retain();
    let out;
    try {
      const entry = await this.cache.get(graph, { ...(keep.some(Boolean) ? { deviceOutputs: keep } : {}), ...(donated.some(Boolean) ? { donated } : {}) });
      // Outputs written into donated feeds take no new memory: the growth a first run measures is the rest.
      const aliased = (entry.exe.aliases ?? []).reduce((s, [o]) => s + byteSize(graph.outputs[o].dtype, numelOf(binding.outputShapes[o])), 0);
      out = await this.cache.run(entry, feedElements, total - aliased, () => this.backend.run(entry.exe, graph, operands, binding));
      // The outputs written into donated feeds take their bytes over: the feeds go first, so nothing counts twice.
      feeds.forEach((t, i) => donated[i] && t.dispose());
    } catch (e) {
      throw e instanceof ServelabError ? e : new KernelError(graph.name, this.name, e);
    } finally {
      for (const b of held) b.release();
    }
    this.runs++;
    this.h2d += upBytes;
    this.d2h += downBytes;
    return this.wrapOutputs(graph, binding.outputShapes, out, tag, opts.label);
  }

  /**
   * A copy of `t` in this device's own memory (webgpu), which later runs take without an upload: a new tensor with
   * t's tag and label, t unchanged. On cpu and reference, whose kernels work in host memory, a host copy.
   */
  async toDevice(t: Tensor, opts: TensorOptions = {}): Promise<Tensor> {
    throwIfAborted();
    this.assertOwn(t, 'toDevice');
    const mem = this.backend.deviceMemory;
    if (!mem) return this.copyFrom(t, opts);
    const bytes = mem.bytes(t.dtype, t.numel);
    if (bytes === null) throw new DTypeError('toDevice', [t.dtype], `${this.name} cannot hold ${t.dtype} tensors in device memory (tensor #${t.id} ${t.describe()})`);
    const tag = opts.tag ?? t.tag;
    if (!this.memory.canAllocate(bytes)) throw new OutOfMemoryError(this.name, bytes, this.memory.live, this.memory.budget!, tag);
    const src = t.deviceBuffer;
    const data = src ?? t.data;
    src?.retain();
    let buf: DeviceBuffer;
    try {
      buf = await mem.copyin(t.dtype, t.shape, data);
    } finally {
      src?.release();
    }
    if (!src) this.h2d += bytes;
    return Tensor.resident(this, t.shape, t.dtype, buf, tag, opts.label ?? t.label);
  }

  /** A device tensor's values as new host storage (what `await t.read()` calls), counted in deviceToHostBytes. */
  async download(t: Tensor): Promise<Storage> {
    throwIfAborted();
    this.assertOwn(t, 'read');
    const buf = t.deviceBuffer;
    if (!buf) return t.data.slice();
    buf.retain();
    try {
      const s = await this.backend.deviceMemory!.copyout(t.dtype, t.shape, buf);
      this.d2h += buf.bytes;
      return s;
    } finally {
      buf.release();
    }
  }

  /** Per input: whether its feed is donated (checked: indices in range, each feed once among the feeds). */
  private donations(graph: Graph, feeds: readonly Tensor[], donate: readonly number[] = []): boolean[] {
    const out = feeds.map(() => false);
    for (const i of donate) {
      if (!Number.isInteger(i) || i < 0 || i >= feeds.length) throw new ServelabError(`${graph.name}: donate names feed ${i}; the graph takes ${feeds.length}`);
      if (feeds.some((t, j) => j !== i && t === feeds[i])) throw new ServelabError(`${graph.name}: feed ${i} ('${graph.inputs[i].name}') is donated but also fed as another input`);
      out[i] = true;
    }
    return out;
  }

  /** Per output: whether it stays in device memory, as asked where this device can hold it. */
  private keepOnDevice(graph: Graph, keep: RunOptions['keep'] = 'host'): boolean[] {
    const mem = this.backend.deviceMemory;
    if (Array.isArray(keep) && keep.length !== graph.outputs.length) {
      throw new ServelabError(`${graph.name}: keep names ${keep.length} locations for ${graph.outputs.length} outputs`);
    }
    return graph.outputs.map((v, i) => {
      const where = typeof keep === 'string' ? keep : (keep as readonly Location[])[i];
      if (where !== 'host' && where !== 'device') throw new ServelabError(`${graph.name}: keep must be 'host' or 'device', got ${JSON.stringify(where)}`);
      return where === 'device' && mem !== null && mem.bytes(v.dtype, 1) !== null;
    });
  }

  private wrapOutputs(graph: Graph, shapes: number[][], out: readonly (Storage | DeviceBuffer)[], tag: MemoryTag, label?: string): Tensor[] {
    const made: Tensor[] = [];
    try {
      graph.outputs.forEach((v, i) => {
        const o = out[i];
        made.push(ArrayBuffer.isView(o) ? Tensor.adopt(this, shapes[i], v.dtype, o, tag, label ?? v.name) : Tensor.resident(this, shapes[i], v.dtype, o, tag, label ?? v.name));
      });
    } catch (e) {
      // A concurrent allocation took the room checked for: nothing of this run is left behind.
      for (const t of made) t.dispose();
      for (const o of out.slice(made.length + 1)) if (!ArrayBuffer.isView(o)) o.release();
      throw e;
    }
    return made;
  }

  private assertOwn(t: Tensor, what: string): void {
    if (t.device !== this) throw new DeviceError(`${what}: tensor #${t.id} ${t.describe()} is on ${t.device.name}, not ${this.name}`);
    if (t.disposed) throw new DeviceError(`${what}: tensor #${t.id} ${t.describe()} was disposed`);
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
