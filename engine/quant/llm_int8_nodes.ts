/**
 * LLM.int8() as graph nodes (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at
 * Scale", section 3.2, mixed-precision decomposition): the outlier feature dimensions of X (columns, and the same
 * rows of W) in fp16, everything else through vector-wise int8 with int32 accumulation, and the two products summed:
 *
 *   Y = X[:, O] W[O, :]  (fp16)  +  (s_x ⊗ s_w) · (X_i8[:, R] W_i8[R, :])  (int32, rescaled in fp32)
 *
 * Two variants differ in the fp16 weights of the outlier rows and in X's row scales:
 * - 'paper': W[O, :] are the original weights (held in fp16); s_x is absmax over the regular columns R only.
 * - 'bitsandbytes' (its int8_vectorwise_quant and int8_mixed_scaled_mm): W[O, :] are the int8 codes dequantized
 *   (code · s_w, rounded to fp16), so no fp16 copy is kept; s_x is absmax over every element below the threshold,
 *   outlier columns included (it zeroes the outlier elements, not their columns, before taking the max), so a row
 *   whose outlier column holds a sub-threshold value larger than its regular ones gets a coarser scale.
 * Both zero the codes of the outlier columns, so the int8 product covers exactly the regular dimensions.
 */
import type { Value } from '../graph/graph.ts';
import { MIN_SCALE, addAbsmaxScale, type Consts } from './nodes.ts';
import { X_ZERO_POINT } from './vectorwise.ts';

export const LLM_INT8_VARIANTS = ['paper', 'bitsandbytes'] as const;
export type LlmInt8Variant = (typeof LLM_INT8_VARIANTS)[number];

/**
 * 2^126: (threshold - |x|) times this, clipped to [0, 1], is 1 below the threshold and 0 at or above it, exactly, for
 * every threshold of 2^-102 or more and for 0 and Infinity (the op set has no comparison op; a difference of two fp32
 * values at those magnitudes is either <= 0 or >= 2^-126, and fp32 saturates the product to inf, which Clip makes 1).
 */
const STEP = 2 ** 126;

/** The weight as graph values: int8 codes [K, N] and column scales [1, N], plus the fp16 original (paper). */
export interface LlmInt8WeightValues {
  wq: Value;
  wScale: Value;
  w16: Value | null;
}

/**
 * Which dimensions are outliers, as graph values, so they can be feeds (found per batch) or constants (fixed ahead).
 * mask: fp32 [K], 1 for a regular dimension, 0 for an outlier. idx: int32 [B], the outlier dimensions, padded up to
 * a bucket size B with indices of regular dimensions (their gathered activations are masked to 0), so that the
 * number of compiled graphs grows with log2(K), not with every outlier count; or null, when the mask is computed in
 * the graph: the fp16 product then runs over all K dimensions with the regular ones zeroed (the same sum, at the
 * cost of a full fp16 product). threshold: fp32 [] (bitsandbytes only).
 */
export interface OutlierValues {
  mask: Value;
  idx: Value | null;
  threshold: Value | null;
}

export interface LlmInt8Nodes {
  /** fp32 [M, N]: the int8 part plus the fp16 part. */
  y: Value;
  /** fp32 [M, N]: the int8 part alone, Cast(acc) * (xScale ⊗ wScale). */
  y8: Value;
  /** int32 [M, N]: the exact integer product over the regular dimensions. */
  acc: Value;
  /** uint8 [M, K]: X's int8 codes plus 128; the outlier columns hold code 0 (128). */
  xq: Value;
  /** fp32 [M, 1]. */
  xScale: Value;
  /** fp16 [M, N]: X[:, O] W[O, :], or null when there are no outliers. */
  yOutlier: Value | null;
}

const one = (c: Consts, ...args: Parameters<Consts['g']['op']>) => c.g.op(...args)[0];

/** x: fp32 [M, K]. With outliers null, the product is plain vector-wise int8 (no outlier dimension this batch). */
export function addLlmInt8Matmul(c: Consts, x: Value, w: LlmInt8WeightValues, variant: LlmInt8Variant, outliers: OutlierValues | null): LlmInt8Nodes {
  const N = w.wq.shape[1];
  // Outlier columns of X zeroed: their int8 codes become 0 and the int32 product runs over the regular dimensions.
  const xr = outliers ? one(c, 'Mul', [x, outliers.mask]) : x;
  let scale: Value;
  if (variant === 'bitsandbytes' && outliers) {
    const a = one(c, 'Abs', [x]);
    const below = one(c, 'Clip', [one(c, 'Mul', [one(c, 'Sub', [outliers.threshold!, a]), c.f32(STEP)])], { min: 0, max: 1 });
    const absmax = one(c, 'ReduceMax', [one(c, 'Mul', [a, below])], { axes: [1], keepdims: false });
    scale = one(c, 'Clip', [one(c, 'Div', [absmax, c.f32(127)])], { min: MIN_SCALE });
  } else {
    scale = addAbsmaxScale(c, xr, 1);
  }
  // uint8 codes = int8 code + 128: onnxruntime's uint8 x int8 GEMM is the fast one (see engine/quant/vectorwise.ts).
  // Divided per row first, then one per-tensor zero point (as in engine/quant/vectorwise.ts).
  const xScale = one(c, 'Reshape', [scale], { shape: [-1, 1] });
  const xq = one(c, 'QuantizeLinear', [one(c, 'Div', [xr, xScale]), c.f32(1), c.fill('uint8', [], X_ZERO_POINT)]);
  const acc = one(c, 'MatMulInteger', [xq, w.wq, c.fill('uint8', [], X_ZERO_POINT), null]);
  const y8 = one(c, 'Mul', [one(c, 'Cast', [acc], { to: 'fp32' }), one(c, 'Mul', [xScale, w.wScale])]);
  if (!outliers) return { y: y8, y8, acc, xq, xScale, yOutlier: null };

  // X[:, O] in fp16. Padding slots index regular columns, zeroed here, so they add exactly 0 to the product.
  const onlyOutliers = one(c, 'Mul', [x, one(c, 'Sub', [c.f32(1), outliers.mask])]);
  const idx = outliers.idx;
  const xo = one(c, 'Cast', [idx ? one(c, 'Gather', [onlyOutliers, idx], { axis: 1 }) : onlyOutliers], { to: 'fp16' });
  let wo: Value;
  if (variant === 'paper') {
    wo = idx ? one(c, 'Gather', [w.w16!, idx], { axis: 0 }) : w.w16!;
  } else {
    // bitsandbytes keeps no fp16 weights: the outlier rows are dequantized from the int8 codes, then rounded to fp16.
    const rows = idx ? one(c, 'Gather', [w.wq, idx], { axis: 0 }) : w.wq;
    const sw = one(c, 'Reshape', [w.wScale], { shape: [N] });
    wo = one(c, 'Cast', [one(c, 'DequantizeLinear', [rows, sw, null], { axis: 1 })], { to: 'fp16' });
  }
  const yOutlier = one(c, 'MatMul', [xo, wo]);
  const y = one(c, 'Add', [y8, one(c, 'Cast', [yOutlier], { to: 'fp32' })]);
  return { y, y8, acc, xq, xScale, yOutlier };
}

/**
 * y + bias, written as y - (-bias). onnxruntime 1.30 fuses MatMulInteger, Cast, Mul and a following Add of a constant
 * into MatMulIntegerToFloat, and with per-row scales the fused kernel then adds the bias wrongly (scaled); it leaves
 * a Sub alone. Negation and subtraction are exact, so the result is y + bias rounded once, as an Add would give.
 */
export function addBias(c: Consts, y: Value, bias: Value): Value {
  return one(c, 'Sub', [y, one(c, 'Mul', [bias, c.f32(-1)])]);
}

/** The bucket of an outlier count: the next power of two, at most K (0 stays 0). */
export function bucketOf(count: number, K: number): number {
  if (count === 0) return 0;
  return Math.min(K, 2 ** Math.ceil(Math.log2(count)));
}

/** The mask and padded indices of an outlier set, as host arrays for feeds or constants. */
export function outlierArrays(dims: readonly number[], K: number): { mask: Float32Array; idx: Int32Array } {
  const mask = new Float32Array(K).fill(1);
  for (const d of dims) mask[d] = 0;
  const idx = new Int32Array(bucketOf(dims.length, K));
  idx.set(dims);
  // Pad with regular dimensions (there is one whenever padding is needed, since the bucket never exceeds K).
  let r = 0;
  for (let i = dims.length; i < idx.length; i++) {
    while (mask[r] === 0) r++;
    idx[i] = r++;
  }
  return { mask, idx };
}
