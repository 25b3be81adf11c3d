/** Host storage as onnxruntime tensors and back: emulated bf16 crosses as fp32, every other dtype as its own bytes. */
import * as ort from 'onnxruntime-node';
import type { DType } from '../dtype/dtype.ts';
import type { Storage } from '../tensor/tensor.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';
import { DeviceError } from '../errors.ts';

export const ORT_TYPE = { fp32: 'float32', fp16: 'float16', bf16: 'float32', int8: 'int8', uint8: 'uint8', int32: 'int32', bool: 'bool' } as const;
export type OrtType = (typeof ORT_TYPE)[keyof typeof ORT_TYPE];

/** The onnxruntime element type a dtype travels as, or null for packed 4-bit dtypes (fed as constants only). */
export function ortType(dtype: DType): OrtType | null {
  return ORT_TYPE[dtype as keyof typeof ORT_TYPE] ?? null;
}

// Wrapping storage in an ort.Tensor costs microseconds per feed; a tensor fed again (a weight, a decode step's
// state) reuses its wrapper. Keyed by the storage object, so a wrapper lives exactly as long as its data.
const wrappers = new WeakMap<Storage, ort.Tensor>();

export function toOrt(dtype: DType, s: Storage, shape: readonly number[]): ort.Tensor {
  if (dtype === 'bf16') return new ort.Tensor('float32', bf16ArrayToFp32(s as Uint16Array), shape);
  const t = ortType(dtype);
  if (!t) throw new DeviceError(`dtype ${dtype} cannot be fed to onnxruntime; pack 4-bit values into uint8`);
  const hit = wrappers.get(s);
  if (hit && hit.type === t && hit.dims.length === shape.length && hit.dims.every((d, i) => d === shape[i])) return hit;
  const w = new ort.Tensor(t, s as never, shape);
  wrappers.set(s, w);
  return w;
}

/** A host-located onnxruntime result in the Tensor layout of its dtype. */
export function fromOrt(dtype: DType, t: ort.Tensor): Storage {
  // bf16 results were rounded inside the graph, so narrowing here is exact.
  if (dtype === 'bf16') return fp32ArrayToBf16(t.data as Float32Array);
  return t.data as Storage;
}
