/** Tensor: shape, dtype, device and storage, whose exact byte size is what the device's memory tracker is told. */
import { DeviceError, ServelabError } from '../errors.ts';
import type { Allocation, MemoryTag, MemoryTracker } from '../memory/tracker.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { fp16ArrayToFp32, fp32ArrayToFp16 } from '../dtype/fp16.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';

export type Storage = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;

/** What a tensor needs of its device: a name and a tracker. Devices themselves live in engine/device. */
export interface DeviceRef {
  readonly name: string;
  readonly memory: MemoryTracker;
  /** Told when a tensor's values change or it is freed, so nothing compiled from its old values runs again. */
  tensorChanged?(id: number): void;
}

/** fp16 and bf16 are stored as their raw 16-bit patterns; int4 and nf4 as packed bytes, two codes per byte. */
export function storageFor(dtype: DType, numel: number): Storage {
  switch (dtype) {
    case 'fp32':
      return new Float32Array(numel);
    case 'fp16':
    case 'bf16':
      return new Uint16Array(numel);
    case 'int8':
      return new Int8Array(numel);
    case 'uint8':
    case 'bool':
      return new Uint8Array(numel);
    case 'int32':
      return new Int32Array(numel);
    case 'int4':
    case 'nf4':
      return new Uint8Array(byteSize(dtype, numel));
  }
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function assertShape(shape: readonly number[], what = 'shape'): void {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new ServelabError(`${what} must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
}

// A tensor dropped without dispose() still gives its bytes back to the tracker when the GC reclaims it.
const finalizer = new FinalizationRegistry<{ device: DeviceRef; id: number; alloc: Allocation }>(({ device, id, alloc }) => {
  device.memory.free(alloc);
  device.tensorChanged?.(id);
});

let nextTensorId = 1;

export class Tensor {
  readonly id = nextTensorId++;
  readonly numel: number;
  private storage: Storage | null;
  private readonly alloc: Allocation;
  private ver = 0;

  /** Use Tensor.empty / Tensor.from / a device's factory methods; the constructor assumes the allocation is recorded. */
  private constructor(
    readonly device: DeviceRef,
    readonly shape: readonly number[],
    readonly dtype: DType,
    storage: Storage,
    alloc: Allocation,
  ) {
    this.numel = numelOf(shape);
    this.storage = storage;
    this.alloc = alloc;
    finalizer.register(this, { device, id: this.id, alloc }, this);
  }

  /** Records the allocation first: if the budget refuses it, no memory is touched. */
  static empty(device: DeviceRef, shape: readonly number[], dtype: DType, tag: MemoryTag = 'activations', label = ''): Tensor {
    assertShape(shape);
    const numel = numelOf(shape);
    const alloc = device.memory.allocate(byteSize(dtype, numel), tag, label);
    try {
      return new Tensor(device, [...shape], dtype, storageFor(dtype, numel), alloc);
    } catch (e) {
      device.memory.free(alloc);
      throw e;
    }
  }

  /**
   * Wraps storage produced elsewhere (a kernel's output). Its size must match the dtype exactly, so the tracker
   * never counts bytes that are not there.
   */
  static adopt(device: DeviceRef, shape: readonly number[], dtype: DType, storage: Storage, tag: MemoryTag = 'activations', label = ''): Tensor {
    assertShape(shape);
    const numel = numelOf(shape);
    const expected = byteSize(dtype, numel);
    if (storage.byteLength !== expected || storage.constructor !== storageFor(dtype, 0).constructor) {
      throw new ServelabError(
        `storage for ${dtype}[${shape.join(', ')}] must be a ${storageFor(dtype, 0).constructor.name} of ${expected} bytes, ` +
          `got a ${storage.constructor.name} of ${storage.byteLength} bytes`,
      );
    }
    const alloc = device.memory.allocate(expected, tag, label);
    return new Tensor(device, [...shape], dtype, storage, alloc);
  }

  /**
   * From plain numbers: floats are rounded to the dtype (round-to-nearest-even), integers must be in range.
   * Packed 4-bit dtypes take their codes (0..15 for nf4, -8..7 for int4); see engine/dtype/packed4.ts.
   */
  static from(device: DeviceRef, values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'fp32', tag: MemoryTag = 'activations', label = ''): Tensor {
    assertShape(shape);
    const numel = numelOf(shape);
    if (values.length !== numel) {
      throw new ServelabError(`${values.length} values do not fill shape [${shape.join(', ')}] (${numel} elements)`);
    }
    const t = Tensor.empty(device, shape, dtype, tag, label);
    try {
      t.fill(values);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  get bytes(): number {
    return this.alloc.bytes;
  }
  get tag(): MemoryTag {
    return this.alloc.tag;
  }
  get label(): string {
    return this.alloc.label;
  }
  get disposed(): boolean {
    return this.storage === null;
  }

  /**
   * Bumped by every write (write, assign): a session compiled with this tensor as a constant is never run after its
   * version changes. Code that mutates `data` in place must call touch() afterwards.
   */
  get version(): number {
    return this.ver;
  }

  /** Records an in-place change made through `data`: bumps the version and drops sessions built from the old values. */
  touch(): this {
    this.data;
    this.ver++;
    this.device.tensorChanged?.(this.id);
    return this;
  }

  /** The raw storage (fp16/bf16 as bit patterns). Throws once disposed, so a freed tensor is never read. */
  get data(): Storage {
    if (this.storage === null) throw new DeviceError(`tensor #${this.id} ${this.describe()} was disposed`);
    return this.storage;
  }

  describe(): string {
    return `${this.dtype}[${this.shape.join(', ')}] on ${this.device.name}`;
  }

  retag(tag: MemoryTag): this {
    this.device.memory.retag(this.alloc, tag);
    return this;
  }

  /** Values widened to fp32 (fp16/bf16 decoded exactly); integer dtypes as their values. Packed dtypes: use unpack4. */
  toFloat32(): Float32Array {
    const d = this.data;
    switch (this.dtype) {
      case 'fp32':
        return (d as Float32Array).slice();
      case 'fp16':
        return fp16ArrayToFp32(d as Uint16Array);
      case 'bf16':
        return bf16ArrayToFp32(d as Uint16Array);
      case 'int4':
      case 'nf4':
        throw new ServelabError(`toFloat32 of packed ${this.dtype}: unpack its codes and apply its scales instead`);
      default:
        return Float32Array.from(d as ArrayLike<number>);
    }
  }

  toArray(): number[] {
    return Array.from(this.toFloat32());
  }

  /**
   * Overwrites every element (floats rounded to the dtype, integers range-checked first, so a bad value changes
   * nothing) and bumps the version.
   */
  write(values: ArrayLike<number>): this {
    if (values.length !== this.numel) {
      throw new ServelabError(`write: ${values.length} values for tensor #${this.id} ${this.describe()} (${this.numel} elements)`);
    }
    this.fill(values);
    return this.touch();
  }

  /**
   * Takes src's storage as this tensor's new values without copying (an optimizer step's result becomes the
   * parameter) and disposes src. Same device, dtype and shape required.
   */
  assign(src: Tensor): this {
    if (src === this) return this;
    if (src.device !== this.device || src.dtype !== this.dtype || src.shape.join() !== this.shape.join()) {
      throw new ServelabError(`assign: tensor #${src.id} ${src.describe()} cannot replace #${this.id} ${this.describe()}`);
    }
    const mine = this.data;
    this.storage = src.data;
    src.storage = mine;
    src.dispose();
    return this.touch();
  }

  private fill(values: ArrayLike<number>): void {
    const d = this.data;
    if (this.dtype === 'fp32') {
      (d as Float32Array).set(values);
    } else if (this.dtype === 'fp16') {
      fp32ArrayToFp16(Float32Array.from(values), d as Uint16Array);
    } else if (this.dtype === 'bf16') {
      fp32ArrayToBf16(Float32Array.from(values), d as Uint16Array);
    } else if (this.dtype === 'int4' || this.dtype === 'nf4') {
      throw new ServelabError(`Tensor.from cannot take ${this.dtype} values; pack them with pack4/packInt4 and use Tensor.adopt`);
    } else {
      const [lo, hi] = this.dtype === 'int8' ? [-128, 127] : this.dtype === 'uint8' ? [0, 255] : this.dtype === 'bool' ? [0, 1] : [-(2 ** 31), 2 ** 31 - 1];
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isInteger(v) || v < lo || v > hi) {
          throw new ServelabError(`value ${v} at index ${i} is not a ${this.dtype} (integers ${lo}..${hi})`);
        }
      }
      (d as Int8Array).set(values);
    }
  }

  /** Gives the bytes back to the device's tracker. Idempotent. */
  dispose(): void {
    if (this.storage === null) return;
    this.storage = null;
    finalizer.unregister(this);
    this.device.memory.free(this.alloc);
    this.device.tensorChanged?.(this.id);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.describe()}, ${this.bytes} B, ${this.tag})`;
  }
}
