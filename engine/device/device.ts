/** A device: one backend, one memory tracker, and the tensors that live on it. Graph runs are checked here before any kernel. */
import type { Backend, BackendName } from '../backends/backend.ts';
import type { Graph } from '../graph/graph.ts';
import { MemoryTracker, type MemoryTag } from '../memory/tracker.ts';
import { Tensor, numelOf, type DeviceRef } from '../tensor/tensor.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { pack4, packInt4 } from '../dtype/packed4.ts';
import { throwIfAborted } from '../abort.ts';
import { DeviceError, DTypeError, KernelError, OutOfMemoryError, ServelabError, ShapeError } from '../errors.ts';

export interface TensorOptions {
  tag?: MemoryTag;
  label?: string;
}

export class Device implements DeviceRef {
  readonly memory: MemoryTracker;

  constructor(
    readonly name: string,
    readonly backend: Backend,
    opts: { budget?: number | null } = {},
  ) {
    this.memory = new MemoryTracker(name, { budget: opts.budget ?? null });
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
    const storages = feeds.map((t, i) => {
      const v = graph.inputs[i];
      if (t.device !== this) throw new DeviceError(`${graph.name}: input '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}; copy it with device.copyFrom`);
      if (t.dtype !== v.dtype) throw new DTypeError(graph.name, [t.dtype, v.dtype], `input '${v.name}' is ${t.dtype}, the graph expects ${v.dtype}`);
      if (t.shape.length !== v.shape.length || t.shape.some((d, j) => d !== v.shape[j])) {
        throw new ShapeError(graph.name, [t.shape, v.shape], `input '${v.name}' has the wrong shape`);
      }
      return t.data;
    });
    for (const [v, t] of graph.constants) {
      if (t.device !== this) throw new DeviceError(`${graph.name}: constant '${v.name}' is on ${t.device.name}, the graph runs on ${this.name}`);
    }
    const outBytes = graph.outputs.reduce((s, v) => s + byteSize(v.dtype, numelOf(v.shape)), 0);
    const tag = opts.tag ?? 'activations';
    if (!this.memory.canAllocate(outBytes)) {
      throw new OutOfMemoryError(this.name, outBytes, this.memory.live, this.memory.budget!, tag);
    }
    let out;
    try {
      out = await this.backend.run(graph, storages);
    } catch (e) {
      throw e instanceof ServelabError ? e : new KernelError(graph.name, this.name, e);
    }
    return graph.outputs.map((v, i) => Tensor.adopt(this, v.shape, v.dtype, out[i], tag, opts.label ?? v.name));
  }

  placement(): Record<string, string> {
    return this.backend.placement();
  }

  notes(): string[] {
    return this.backend.notes();
  }

  async dispose(): Promise<void> {
    await this.backend.dispose();
  }

  toString(): string {
    return `Device(${this.name}, ${this.kind})`;
  }
}
