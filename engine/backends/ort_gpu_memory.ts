/**
 * onnxruntime's WebGPU buffers as a device memory (tinygrad's allocator: copyin, copyout). A session built with
 * preferredOutputLocation 'gpu-buffer' leaves its outputs in GPU buffers, which feed any later run as they are. In
 * onnxruntime-node 1.30 a buffer can only come back by running a session whose output is on the CPU (getData() on it
 * aborts the process), and must not outlive the session that made it (releasing or feeding it afterwards crashes):
 * before a session goes, its live buffers are copied, GPU to GPU, into buffers of a copy session kept for the
 * backend's lifetime.
 */
import * as ort from 'onnxruntime-node';
import { isHostStorage, type DeviceMemory, type Operand } from './backend.ts';
import type { DType } from '../dtype/dtype.ts';
import type { DeviceBuffer, Storage } from '../tensor/tensor.ts';
import { Graph } from '../graph/graph.ts';
import { lowerGraph } from './onnx/lower.ts';
import { fromOrt, toOrt } from './ort_tensor.ts';
import { DeviceError } from '../errors.ts';

/** Makes a WebGPU session of a lowered model, its outputs in GPU buffers or on the CPU. */
export type SessionFactory = (model: Uint8Array, outputsOnDevice: boolean) => Promise<ort.InferenceSession>;

/** One GPU buffer (an ort.Tensor located in 'gpu-buffer'), owned by the set of the session whose output it was. */
export class OrtBuffer implements DeviceBuffer {
  private refs = 1;

  constructor(
    public value: ort.Tensor,
    private owner: Set<OrtBuffer>,
    /** The dtype of its elements on the GPU (bf16 is carried as fp32). */
    readonly carried: DType,
    readonly bytes: number,
  ) {
    owner.add(this);
  }

  get alive(): boolean {
    return this.refs > 0;
  }

  retain(): void {
    if (!this.alive) throw new DeviceError('a device buffer was used after it was released (its device was disposed)');
    this.refs++;
  }

  release(): void {
    if (this.refs > 0 && --this.refs === 0) this.free();
  }

  /** Frees the GPU memory now, whoever still holds a reference (the backend is going away). */
  kill(): void {
    if (!this.alive) return;
    this.refs = 0;
    this.free();
  }

  /** Takes `value` (a copy of its current one) as its memory, under a new owner; the caller frees the old value. */
  move(value: ort.Tensor, owner: Set<OrtBuffer>): void {
    this.owner.delete(this);
    this.value = value;
    this.owner = owner;
    owner.add(this);
  }

  private free(): void {
    this.owner.delete(this);
    this.value.dispose();
  }
}

export class OrtGpuMemory implements DeviceMemory {
  /** Buffers made by the copy sessions, which live as long as the backend. */
  private readonly own = new Set<OrtBuffer>();
  private readonly copies = new Map<string, Promise<ort.InferenceSession>>();
  private readonly running = new Set<Promise<unknown>>();
  private closed = false;

  constructor(private readonly createSession: SessionFactory) {}

  /** int8 cannot be wrapped as a GPU tensor by onnxruntime-node 1.30 ("unsupported type"); packed 4-bit is never fed. */
  bytes(dtype: DType, numel: number): number | null {
    switch (dtype) {
      case 'fp32':
      case 'int32':
      case 'bf16':
        return 4 * numel;
      case 'fp16':
        return 2 * numel;
      case 'uint8':
      case 'bool':
        return numel;
      default:
        return null;
    }
  }

  async copyin(dtype: DType, shape: readonly number[], src: Operand): Promise<OrtBuffer> {
    const feed = isHostStorage(src) ? toOrt(dtype, src, shape) : liveBuffer(src as OrtBuffer).value;
    const out = await this.copy(dtype, shape.length, true, feed);
    return this.wrap(out, this.own, dtype);
  }

  async copyout(dtype: DType, shape: readonly number[], src: DeviceBuffer): Promise<Storage> {
    return fromOrt(dtype, await this.copy(dtype, shape.length, false, liveBuffer(src as OrtBuffer).value));
  }

  /** A session's GPU output as a buffer owned by that session's set. */
  wrap(value: ort.Tensor, owner: Set<OrtBuffer>, dtype: DType): OrtBuffer {
    const carried: DType = dtype === 'bf16' ? 'fp32' : dtype;
    return new OrtBuffer(value, owner, carried, this.bytes(dtype, value.size)!);
  }

  /** Remembers a run while it is in flight: a buffer it reads is not freed under it. */
  track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p);
    const done = () => this.running.delete(p);
    p.then(done, done);
    return p;
  }

  /** Moves every live buffer of a session about to be released into the copy sessions' keeping. */
  async rehome(owner: Set<OrtBuffer>): Promise<void> {
    const old: ort.Tensor[] = [];
    for (const b of [...owner]) {
      if (!b.alive) continue;
      b.retain();
      try {
        const fresh = await this.copy(b.carried, b.value.dims.length, true, b.value);
        if (!b.alive) {
          // Killed meanwhile: the device is being disposed.
          fresh.dispose();
          continue;
        }
        old.push(b.value);
        b.move(fresh, this.own);
      } catch {
        // Left behind it would crash the process once its session is gone; dead, its tensor reports an error instead.
        b.kill();
      } finally {
        b.release();
      }
    }
    // Runs already under way may still be reading the old buffers.
    await Promise.allSettled([...this.running]);
    for (const v of old) v.dispose();
  }

  /** Refuses further copies and waits for the runs in flight: after this, buffers can be freed safely. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.running]);
  }

  /** Frees every buffer the copy sessions hold, then the sessions. */
  async dispose(): Promise<void> {
    this.closed = true;
    for (const b of [...this.own]) b.kill();
    const sessions = await Promise.allSettled([...this.copies.values()]);
    this.copies.clear();
    await Promise.all(sessions.map((s) => (s.status === 'fulfilled' ? s.value.release() : undefined)));
  }

  /** Runs the Identity session for this element type and rank, its output on the GPU or on the CPU. */
  private async copy(carried: DType, rank: number, toDevice: boolean, feed: ort.Tensor): Promise<ort.Tensor> {
    if (this.closed) throw new DeviceError('the device was disposed: its memory cannot be copied any more');
    const dtype: DType = carried === 'bf16' ? 'fp32' : carried;
    const key = `${dtype}:${rank}:${toDevice ? 'gpu' : 'cpu'}`;
    let s = this.copies.get(key);
    if (!s) {
      const g = new Graph(`copy ${key}`);
      g.output(g.input('x', dtype, Array.from({ length: rank }, (_, i) => `d${i}`)));
      s = this.createSession(lowerGraph(g, { nativeFp16: true, u8s8Saturates: false }).bytes, toDevice);
      this.copies.set(key, s);
      s.catch(() => this.copies.delete(key));
    }
    const session = await s;
    const out = await this.track(session.run({ [session.inputNames[0]]: feed }));
    return out[session.outputNames[0]] as ort.Tensor;
  }
}

export function liveBuffer(b: OrtBuffer): OrtBuffer {
  if (!b.alive) throw new DeviceError('a device buffer was used after it was released (its device was disposed)');
  return b;
}
