/**
 * Vector-wise int8 matmul (Dettmers et al. 2022, "LLM.int8()", section 3.1): each row of X and each column of W get
 * their own absmax scale, the int8 product accumulates exactly in int32 (MatMulInteger), and the result is scaled
 * back by the outer product of the row and column scales, (absmax_row(X) ⊗ absmax_col(W)) / 127^2. One graph per
 * weight and rank (rows symbolic) binds W's codes and scales as constants, so onnxruntime prepacks them once.
 */
import { Graph, type Value } from '../graph/graph.ts';
import { fp32Rows } from '../graph/row_shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { DeviceError, ShapeError } from '../errors.ts';
import { assertFinite, assertFloat, QuantizationError } from './errors.ts';
import { quantize, type QuantizedTensor } from './int8.ts';
import { addAbsmaxScale, Consts, deviceOf, MIN_SCALE } from './nodes.ts';

/** X's codes are stored as uint8 = int8 code + 128 (see addVectorwiseMatmul). */
export const X_ZERO_POINT = 128;

/** W [K, N] quantized per column with absmax: q int8 [K, N], scale fp32 [1, N] = absmax_col(W) / 127. */
export type Int8Weight = QuantizedTensor & { readonly scheme: 'absmax'; readonly granularity: 'column' };

/** W [K, N] (y = x @ W) -> int8 codes and one scale per output column; the parts keep W's memory tag. */
export async function quantizeWeightVectorwise(w: Tensor, opts: { label?: string } = {}): Promise<Int8Weight> {
  if (w.shape.length !== 2) throw new ShapeError('quantizeWeightVectorwise', [w.shape], 'the weight must be 2-D [K, N], used as x @ w');
  return (await quantize(w, { scheme: 'absmax', granularity: 'column', label: opts.label ?? (w.label || 'w') })) as Int8Weight;
}

export interface VectorwiseNodes {
  /** fp32 [M, N]: acc * (xScale ⊗ wScale). */
  y: Value;
  /** int32 [M, N]: the exact integer product of the codes. */
  acc: Value;
  /** uint8 [M, K]: X's int8 codes plus X_ZERO_POINT (128). */
  xq: Value;
  /** fp32 [M, 1]: absmax_row(X) / 127. */
  xScale: Value;
}

/**
 * Adds the vector-wise product of x (fp32 [M, K]) and a weight already in the graph (int8 wq [K, N], fp32 wScale
 * [1, N]), for graphs that compose it (LLM.int8's int8 part, a quantized Linear inside a decode step).
 */
export function addVectorwiseMatmul(c: Consts, x: Value, wq: Value, wScale: Value, opts: { perTensor?: boolean } = {}): VectorwiseNodes {
  const g = c.g;
  // Per row of x (vector-wise), or one scale for the whole of x (the per-tensor baseline of the LLM.int8 paper).
  const scale = opts.perTensor ? perTensorScale(c, x) : addAbsmaxScale(c, x, 1);
  // X's int8 codes shifted by 128 into uint8, and MatMulInteger subtracts the 128 again: the same integers, but
  // onnxruntime's uint8 x int8 GEMM (VNNI's vpdpbusd) is about 150x faster on the CPU than its int8 x int8 one.
  // Per row: x / scale (the division QuantizeLinear itself makes, in fp32), then one per-tensor zero point, so no
  // zero-point vector as long as the batch is built at run time.
  const xScale = g.op('Reshape', [scale], { shape: [-1, 1] })[0];
  const xq = g.op('QuantizeLinear', [g.op('Div', [x, xScale])[0], c.f32(1), c.fill('uint8', [], X_ZERO_POINT)])[0];
  const acc = g.op('MatMulInteger', [xq, wq, c.fill('uint8', [], X_ZERO_POINT), null])[0];
  // The paper's outer product of the two scale vectors; [M, 1] x [1, N] broadcasts to [M, N].
  const outer = g.op('Mul', [xScale, wScale])[0];
  const y = g.op('Mul', [g.op('Cast', [acc], { to: 'fp32' })[0], outer])[0];
  return { y, acc, xq, xScale };
}

/** max(max |x| / 127, MIN_SCALE) over all of x [M, K]: fp32 [1]. */
function perTensorScale(c: Consts, x: Value): Value {
  const g = c.g;
  const absmax = g.op('ReduceMax', [g.op('Abs', [x])[0]], { axes: [0, 1], keepdims: false })[0];
  return g.op('Reshape', [g.op('Clip', [g.op('Div', [absmax, c.f32(127)])[0]], { min: MIN_SCALE })[0]], { shape: [1] })[0];
}

export interface VectorwiseParts {
  /** x's dtype, [..., N]. */
  y: Tensor;
  acc: Tensor;
  xq: Tensor;
  xScale: Tensor;
}

function check(x: Tensor, w: Int8Weight): void {
  const op = 'vectorwiseMatmul';
  if (w.scheme !== 'absmax' || w.granularity !== 'column' || w.q.dtype !== 'int8' || w.shape.length !== 2) {
    throw new QuantizationError(`${op}: the weight must come from quantizeWeightVectorwise (absmax per column, int8 [K, N]), got ${w.scheme} per ${w.granularity}, ${w.q.dtype}[${w.shape.join(', ')}]`);
  }
  // A cached session holds its own copy of the weight, so a disposed one would otherwise keep working unaccounted.
  if (w.q.disposed || w.scale.disposed) throw new DeviceError(`${op}: the weight '${w.label}' was disposed`);
  assertFloat(op, x);
  const K = w.shape[0];
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== K) throw new ShapeError(op, [x.shape, w.shape], `x's last dimension must be the weight's K=${K}`);
  if (x.numel === 0) throw new ShapeError(op, [x.shape, w.shape], 'x is empty');
  if (x.device !== w.q.device) throw new DeviceError(`${op}: x is on ${x.device.name}, the weight on ${w.q.device.name}`);
  assertFinite(op, x);
}

/** One graph per weight, x dtype and rank (the rows are symbolic), memoized on the device and held by the weight. */
function graphFor(x: Tensor, w: Int8Weight, parts: boolean): Graph {
  const dev = deviceOf(x, 'vectorwiseMatmul');
  return dev.graph(w.q, `${x.dtype}|${x.shape.length}|${parts}`, () => {
    const g = new Graph('vectorwise int8 matmul');
    const c = new Consts(g, dev);
    const [K, N] = w.shape;
    const { rows, back } = fp32Rows(g, x.dtype, x.shape.length, K);
    const n = addVectorwiseMatmul(c, rows, g.constant(`${w.label}.q`, w.q), g.constant(`${w.label}.scale`, w.scale));
    return g.output(back(n.y, N), ...(parts ? [n.acc, n.xq, n.xScale] : []));
  });
}

/**
 * x [..., K] (fp32, fp16 or bf16) times a vector-wise int8 weight -> [..., N] in x's dtype, on x's device. On the
 * onnxruntime backends MatMulInteger, Cast and Mul fuse into one MatMulIntegerToFloat kernel (no int32 tensor is
 * written), which rounds in its own order: within 2^-22 relative of acc * xScale * wScale, not bit-exact.
 */
export async function vectorwiseMatmul(x: Tensor, w: Int8Weight): Promise<Tensor> {
  check(x, w);
  const [y] = await deviceOf(x, 'vectorwiseMatmul').run(graphFor(x, w, false), [x], { label: 'vectorwise.y' });
  return y;
}

/**
 * The same product with its intermediates: the int32 accumulator, X's codes and row scales (x flattened to
 * [M, K]). The accumulator as an output keeps the kernels apart, so y is exactly Cast(acc) * (xScale ⊗ wScale).
 */
export async function vectorwiseMatmulParts(x: Tensor, w: Int8Weight): Promise<VectorwiseParts> {
  check(x, w);
  const [y, acc, xq, xScale] = await deviceOf(x, 'vectorwiseMatmul').run(graphFor(x, w, true), [x], { label: 'vectorwise' });
  return { y, acc, xq, xScale };
}
