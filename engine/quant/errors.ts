/** Typed errors of int8 quantization, and the input checks that raise them (a bad cell should name its mistake). */
import { DTypeError, ServelabError } from '../errors.ts';
import { FLOATS } from '../graph/ops.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { FloatDType } from '../dtype/dtype.ts';

/** An option that names no quantization: an unknown scheme or granularity, a block size that is not a positive integer. */
export class QuantizationError extends ServelabError {
  override name = 'QuantizationError';
}

/**
 * A NaN or infinity among the values to quantize. absmax would become inf and every scale with it, so the whole
 * tensor would quantize to garbage; the error names the first offending element instead.
 */
export class NonFiniteError extends ServelabError {
  override name = 'NonFiniteError';
  constructor(
    readonly op: string,
    /** Flat, row-major index of the first non-finite element. */
    readonly index: number,
    /** The same element as one index per dimension. */
    readonly position: readonly number[],
    readonly value: number,
    readonly shape: readonly number[],
  ) {
    super(`${op}: element [${position.join(', ')}] (flat index ${index} of shape [${shape.join(', ')}]) is ${value}; quantization needs finite values`);
  }
}

export function unravel(index: number, shape: readonly number[]): number[] {
  const pos = new Array<number>(shape.length);
  let rest = index;
  for (let d = shape.length - 1; d >= 0; d--) {
    pos[d] = rest % shape[d];
    rest = Math.floor(rest / shape[d]);
  }
  return pos;
}

export function assertFloat(op: string, t: Tensor, what = 'x'): FloatDType {
  if (!FLOATS.includes(t.dtype)) throw new DTypeError(op, [t.dtype], `${what} must be one of ${FLOATS.join('/')}`);
  return t.dtype as FloatDType;
}

/**
 * One pass over the stored values, about a nanosecond an element. fp16 and bf16 are tested on their bit patterns
 * (an all-ones exponent is inf or NaN), so nothing is decoded.
 */
export function assertFinite(op: string, t: Tensor): void {
  const d = t.data;
  let bad = -1;
  if (t.dtype === 'fp32') {
    const f = d as Float32Array;
    for (let i = 0; i < f.length; i++) {
      if (f[i] - f[i] !== 0) {
        bad = i;
        break;
      }
    }
  } else if (t.dtype === 'fp16' || t.dtype === 'bf16') {
    const h = d as Uint16Array;
    const exp = t.dtype === 'fp16' ? 0x7c00 : 0x7f80;
    for (let i = 0; i < h.length; i++) {
      if ((h[i] & exp) === exp) {
        bad = i;
        break;
      }
    }
  }
  if (bad >= 0) throw new NonFiniteError(op, bad, unravel(bad, t.shape), t.toFloat32()[bad], t.shape);
}
