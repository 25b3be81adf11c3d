/** Reference kernels for the quantization ops (ONNX ReduceMax, QuantizeLinear, DequantizeLinear; MatMulBnb4) in plain TypeScript. */
import { roundHalfEven, type F } from './kernels.ts';
import { NF4_CODE } from '../../dtype/packed4.ts';
import { FP4_CODE } from '../../quant/fp4.ts';

const numel = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/** Max over sorted, distinct `axes`; the output shape keeps reduced axes as 1 or drops them. */
export function reduceMax(x: F, shape: readonly number[], axes: readonly number[], keepdims: boolean): [F, number[]] {
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Float64Array(numel(kept)).fill(-Infinity);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    for (let d = 0; d < rank; d++) o = o * kept[d] + (axes.includes(d) ? 0 : idx[d]);
    if (x[i] > out[o] || Number.isNaN(x[i])) out[o] = x[i];
    for (let d = rank - 1; d >= 0 && ++idx[d] === shape[d]; d--) idx[d] = 0; // row-major odometer
  }
  return [out, keepdims ? kept : shape.filter((_, i) => !axes.includes(i))];
}

/** Which scale (and zero point) each flat element of x uses: all the same per tensor, else its index along axis. */
function paramIndex(shape: readonly number[], axis: number | null): (i: number) => number {
  if (axis === null) return () => 0;
  const inner = numel(shape.slice(axis + 1));
  const len = shape[axis];
  return (i) => Math.floor(i / inner) % len;
}

/**
 * ONNX QuantizeLinear: saturate(roundHalfEven(x / scale) + zeroPoint). x and scale are fp32 and the spec divides in
 * fp32, so the quotient is rounded to fp32 before rounding to an integer (a float64 quotient just below a .5 tie
 * could round differently).
 */
export function quantizeLinear(
  x: Float32Array, shape: readonly number[], scale: Float32Array, zp: Int8Array | Uint8Array | null, axis: number | null, dtype: 'int8' | 'uint8',
): Int8Array | Uint8Array {
  const [lo, hi] = dtype === 'int8' ? [-128, 127] : [0, 255];
  const out = dtype === 'int8' ? new Int8Array(x.length) : new Uint8Array(x.length);
  const at = paramIndex(shape, axis);
  for (let i = 0; i < x.length; i++) {
    const p = at(i);
    const v = roundHalfEven(Math.fround(x[i] / scale[p])) + (zp ? zp[p] : 0);
    out[i] = Math.min(hi, Math.max(lo, v));
  }
  return out;
}

/** ONNX DequantizeLinear: (x - zeroPoint) * scale; the integer difference times an fp32 is exact in float64. */
export function dequantizeLinear(x: Int8Array | Uint8Array, shape: readonly number[], scale: Float32Array, zp: Int8Array | Uint8Array | null, axis: number | null): F {
  const out = new Float64Array(x.length);
  const at = paramIndex(shape, axis);
  for (let i = 0; i < x.length; i++) {
    const p = at(i);
    out[i] = (x[i] - (zp ? zp[p] : 0)) * scale[p];
  }
  return out;
}

/**
 * MatMulBnb4: W^T [N, K] from codes read high nibble first, each times its block's absmax (blocks over the flat
 * N K codes); then A [.., K] x W in float64.
 */
export function matmulBnb4(a: Float32Array, aShape: readonly number[], b: Uint8Array, absmax: Float32Array, K: number, N: number, bs: number, quantType: number): [F, number[]] {
  const levels = quantType === 0 ? FP4_CODE : NF4_CODE;
  const w = new Float64Array(K * N); // [K, N]
  for (let i = 0; i < N * K; i++) {
    const code = (i & 1) === 0 ? b[i >> 1] >> 4 : b[i >> 1] & 15;
    const n = Math.floor(i / K);
    w[(i - n * K) * N + n] = Math.fround(levels[code] * absmax[Math.floor(i / bs)]);
  }
  const M = aShape.slice(0, -1).reduce((p, d) => p * d, 1);
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      const x = a[m * K + k];
      if (x === 0) continue;
      for (let n = 0; n < N; n++) out[m * N + n] += x * w[k * N + n];
    }
  }
  return [out, [...aShape.slice(0, -1), N]];
}
