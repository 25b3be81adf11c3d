/** Float formats as bit patterns: rounding to fp32, fp16 and bf16, and the next representable value (IEEE 754-2019, 2.1). */
import type { FloatDType } from '../dtype/dtype.ts';
import { fp16ToFp32, fp32ToFp16 } from '../dtype/fp16.ts';
import { bf16ToFp32, fp32ToBf16 } from '../dtype/bf16.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function fp32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

function fp32FromBits(b: number): number {
  u32[0] = b;
  return f32[0];
}

/** The bit pattern of x rounded to the format (nearest, ties to even). x is rounded to fp32 first, as a weight file stores it. */
export function floatToBits(dtype: FloatDType, x: number): number {
  switch (dtype) {
    case 'fp32':
      return fp32Bits(x);
    case 'fp16':
      return fp32ToFp16(x);
    case 'bf16':
      return fp32ToBf16(x);
  }
}

export function bitsToFloat(dtype: FloatDType, bits: number): number {
  switch (dtype) {
    case 'fp32':
      return fp32FromBits(bits >>> 0);
    case 'fp16':
      return fp16ToFp32(bits);
    case 'bf16':
      return bf16ToFp32(bits);
  }
}

/** x rounded to the format and widened back to a JS number: what a tensor of that dtype holds. */
export function roundToDtype(dtype: FloatDType, x: number): number {
  return bitsToFloat(dtype, floatToBits(dtype, x));
}

/**
 * The next representable value above a non-negative finite value of the format. For non-negative floats the
 * bit patterns are ordered like the values, so this is the pattern plus one: the largest finite value steps to inf.
 */
export function nextRepresentable(dtype: FloatDType, x: number): number {
  const b = floatToBits(dtype, x);
  if (bitsToFloat(dtype, b) !== x || x < 0 || Object.is(x, -0) || !Number.isFinite(x)) {
    throw new RangeError(`nextRepresentable: ${x} is not a non-negative finite ${dtype} value`);
  }
  return bitsToFloat(dtype, b + 1);
}

/** The largest finite value: the pattern just below +inf (exponent all ones, fraction zero). */
export function largestFinite(dtype: FloatDType): number {
  const inf = floatToBits(dtype, Infinity);
  return bitsToFloat(dtype, inf - 1);
}
