/** A tensor's host storage: one typed array per dtype (fp16 and bf16 as bit patterns, 4-bit codes two per byte). */
import { ServelabError } from '../errors.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { fp16ArrayToFp32 } from '../dtype/fp16.ts';
import { bf16ArrayToFp32 } from '../dtype/bf16.ts';

export type Storage = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array;

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

/** Values widened to fp32 (fp16/bf16 decoded exactly); integer dtypes as their values. */
export function widen(dtype: DType, d: Storage): Float32Array {
  switch (dtype) {
    case 'fp32':
      return (d as Float32Array).slice();
    case 'fp16':
      return fp16ArrayToFp32(d as Uint16Array);
    case 'bf16':
      return bf16ArrayToFp32(d as Uint16Array);
    case 'int4':
    case 'nf4':
      throw new ServelabError(`toFloat32 of packed ${dtype}: unpack its codes and apply its scales instead`);
    default:
      return Float32Array.from(d as ArrayLike<number>);
  }
}
