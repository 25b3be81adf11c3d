/**
 * Tensor: shape, dtype, device, and bytes that live either in host memory or in the device's own (a GPU buffer, as
 * PyTorch's tensor.device); their exact size is what the device's memory tracker is told.
 */
import { DeviceError, ServelabError } from '../errors.ts';
import type { Allocation, MemoryTag, MemoryTracker } from '../memory/tracker.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { fp32ArrayToFp16 } from '../dtype/fp16.ts';
import { fp32ArrayToBf16 } from '../dtype/bf16.ts';
import { assertShape, numelOf, storageFor, widen, type Storage } from './storage.ts';

export { assertShape, numelOf, storageFor, type Storage } from './storage.ts';

/** Where a tensor's bytes are: host memory, or the device's own (only where the backend has one: webgpu). */
export type Location = 'host' | 'device';

/**
 * Bytes in a backend's own memory, opaque outside that backend. Counted references: a run in flight holds one, so a
 * tensor disposed while its run is pending frees its buffer only when the run ends.
 */
export interface DeviceBuffer {
  readonly bytes: number;
  retain(): void;
  /** Drops one reference; the memory goes back with the last. */
  release(): void;
}

/** What a tensor needs of its device: a name and a tracker. Devices themselves live in engine/device. */
export interface DeviceRef {
  readonly name: string;
  readonly memory: MemoryTracker;
  /** Told when a tensor's values change or it is freed, so nothing compiled from its old values runs again. */
  tensorChanged?(id: number): void;
  /** A device-resident tensor's values as new host storage, counted as a transfer. */
  download?(t: Tensor): Promise<Storage>;
}

/** What must be given back when a tensor goes: shared with the finalizer, so it must not hold the tensor itself. */
interface Held {
  alloc: Allocation;
  buffer: DeviceBuffer | null;
}

// A tensor dropped without dispose() still gives its bytes back (tracker and GPU buffer) when the GC reclaims it.
const finalizer = new FinalizationRegistry<{ device: DeviceRef; id: number; held: Held }>(({ device, id, held }) => {
  device.memory.free(held.alloc);
  held.buffer?.release();
  device.tensorChanged?.(id);
});

let nextTensorId = 1;

export class Tensor {
  readonly id = nextTensorId++;
  readonly numel: number;
  /** Host bytes; null for a device-resident tensor (its bytes are in held.buffer) and once disposed. */
  private storage: Storage | null;
  private readonly held: Held;
  private live = true;
  private ver = 0;

  /** Use Tensor.empty / Tensor.from / a device's factory methods; the constructor assumes the allocation is recorded. */
  private constructor(
    readonly device: DeviceRef,
    readonly shape: readonly number[],
    readonly dtype: DType,
    storage: Storage | null,
    buffer: DeviceBuffer | null,
    alloc: Allocation,
  ) {
    this.numel = numelOf(shape);
    this.storage = storage;
    this.held = { alloc, buffer };
    finalizer.register(this, { device, id: this.id, held: this.held }, this);
  }

  /** Records the allocation first: if the budget refuses it, no memory is touched. */
  static empty(device: DeviceRef, shape: readonly number[], dtype: DType, tag: MemoryTag = 'activations', label = ''): Tensor {
    assertShape(shape);
    const numel = numelOf(shape);
    const alloc = device.memory.allocate(byteSize(dtype, numel), tag, label);
    try {
      return new Tensor(device, [...shape], dtype, storageFor(dtype, numel), null, alloc);
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
    return new Tensor(device, [...shape], dtype, storage, null, alloc);
  }

  /**
   * Wraps a buffer in the device's own memory (a run's output kept there, an upload), counted at the buffer's size:
   * what it really takes there (bf16 travels and stays as fp32 on onnxruntime). Takes over the caller's reference;
   * if the budget refuses the bytes, the buffer is released and nothing is recorded.
   */
  static resident(device: DeviceRef, shape: readonly number[], dtype: DType, buffer: DeviceBuffer, tag: MemoryTag = 'activations', label = ''): Tensor {
    let alloc: Allocation;
    try {
      assertShape(shape);
      alloc = device.memory.allocate(buffer.bytes, tag, label);
    } catch (e) {
      buffer.release();
      throw e;
    }
    return new Tensor(device, [...shape], dtype, null, buffer, alloc);
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

  /** Bytes the tensor takes where it lives: exact for its dtype on the host; as the backend holds it on a device. */
  get bytes(): number {
    return this.held.alloc.bytes;
  }
  get tag(): MemoryTag {
    return this.held.alloc.tag;
  }
  get label(): string {
    return this.held.alloc.label;
  }
  get disposed(): boolean {
    return !this.live;
  }
  get location(): Location {
    return this.held.buffer ? 'device' : 'host';
  }
  /** The device buffer a backend runs on; null for a host tensor. Throws once disposed. */
  get deviceBuffer(): DeviceBuffer | null {
    this.assertLive();
    return this.held.buffer;
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
    this.assertLive();
    this.ver++;
    this.device.tensorChanged?.(this.id);
    return this;
  }

  /**
   * The raw host storage (fp16/bf16 as bit patterns). Throws once disposed, so a freed tensor is never read, and for a
   * device-resident tensor, whose bytes can only come back asynchronously.
   */
  get data(): Storage {
    this.assertLive();
    if (this.storage === null) {
      throw new DeviceError(`tensor #${this.id} ${this.describe()} is in device memory: await t.read() or t.values() to bring its bytes to the host, or await t.toHost()`);
    }
    return this.storage;
  }

  describe(): string {
    return `${this.dtype}[${this.shape.join(', ')}] on ${this.device.name}${this.held.buffer ? ' (device memory)' : ''}`;
  }

  retag(tag: MemoryTag): this {
    this.device.memory.retag(this.held.alloc, tag);
    return this;
  }

  /**
   * A copy of the raw storage on the host, whichever the location; the tensor is unchanged. For a device tensor this
   * is a transfer, counted in the device's deviceToHostBytes.
   */
  async read(): Promise<Storage> {
    this.assertLive();
    if (this.storage) return this.storage.slice();
    if (!this.device.download) throw new DeviceError(`tensor #${this.id} ${this.describe()}: its device cannot read device memory back`);
    return this.device.download(this);
  }

  /** Like toFloat32, from either location. */
  async values(): Promise<Float32Array> {
    return widen(this.dtype, this.storage ?? (await this.read()));
  }

  /**
   * A new host tensor with the same values, tag and label (a copy even when this one is on the host already, so that
   * disposing either never affects the other). This tensor stays as it was.
   */
  async toHost(): Promise<Tensor> {
    return Tensor.adopt(this.device, this.shape, this.dtype, await this.read(), this.tag, this.label);
  }

  /**
   * Values widened to fp32 (fp16/bf16 decoded exactly); integer dtypes as their values. Packed dtypes: use unpack4.
   * Host tensors only; `await values()` works from either location.
   */
  toFloat32(): Float32Array {
    return widen(this.dtype, this.data);
  }

  toArray(): number[] {
    return Array.from(this.toFloat32());
  }

  /**
   * Overwrites every element (floats rounded to the dtype, integers range-checked first, so a bad value changes
   * nothing) and bumps the version.
   */
  write(values: ArrayLike<number>): this {
    this.assertLive();
    if (this.held.buffer) {
      throw new DeviceError(`write: tensor #${this.id} ${this.describe()} is in device memory; write a host tensor and assign its device copy (await device.toDevice(t))`);
    }
    if (values.length !== this.numel) {
      throw new ServelabError(`write: ${values.length} values for tensor #${this.id} ${this.describe()} (${this.numel} elements)`);
    }
    this.fill(values);
    return this.touch();
  }

  /**
   * Takes src's bytes as this tensor's new values without copying (an optimizer step's result becomes the
   * parameter), in src's location, and disposes src. Same device, dtype and shape required.
   */
  assign(src: Tensor): this {
    if (src === this) return this;
    this.assertLive();
    src.assertLive();
    if (src.device !== this.device || src.dtype !== this.dtype || src.shape.join() !== this.shape.join()) {
      throw new ServelabError(`assign: tensor #${src.id} ${src.describe()} cannot replace #${this.id} ${this.describe()}`);
    }
    [this.storage, src.storage] = [src.storage, this.storage];
    [this.held.buffer, src.held.buffer] = [src.held.buffer, this.held.buffer];
    if (src.bytes !== this.bytes) {
      // A location change can change the size (bf16 is held as fp32 on the GPU): the tracker follows the bytes.
      const { tag, label } = this.held.alloc;
      this.device.memory.free(this.held.alloc);
      this.held.alloc = this.device.memory.allocate(src.bytes, tag, label, { evenOverBudget: true });
    }
    src.dispose();
    return this.touch();
  }

  private fill(values: ArrayLike<number>): void {
    const d = this.data;
    if (this.dtype === 'fp32') {
      (d as Float32Array).set(values);
    } else if (this.dtype === 'fp16') {
      fp32ArrayToFp16(asFloat32(values), d as Uint16Array);
    } else if (this.dtype === 'bf16') {
      fp32ArrayToBf16(asFloat32(values), d as Uint16Array);
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

  /** Gives the bytes back to the device's tracker, and a device buffer to its backend. Idempotent. */
  dispose(): void {
    if (!this.live) return;
    this.live = false;
    this.storage = null;
    finalizer.unregister(this);
    this.device.memory.free(this.held.alloc);
    const b = this.held.buffer;
    this.held.buffer = null;
    b?.release();
    this.device.tensorChanged?.(this.id);
  }

  private assertLive(): void {
    if (!this.live) throw new DeviceError(`tensor #${this.id} ${this.describe()} was disposed`);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.describe()}, ${this.bytes} B, ${this.tag})`;
  }
}

/** Values as a Float32Array, copied only when they are not one already (a weight's fp32 source can be large). */
function asFloat32(values: ArrayLike<number>): Float32Array {
  return values instanceof Float32Array ? values : Float32Array.from(values);
}
