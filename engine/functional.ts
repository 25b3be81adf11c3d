/**
 * Eager ops: each call runs a one-node graph on its operands' device, memoized by the device per op, attributes,
 * dtypes and ranks, with symbolic dims wherever the op allows, so a call at a new size reuses the compiled session.
 */
import { Graph, type Value } from './graph/graph.ts';
import { OPS, type Attrs, type OpName } from './graph/ops.ts';
import type { Tensor } from './tensor/tensor.ts';
import type { Device } from './device/device.ts';
import type { DType } from './dtype/dtype.ts';
import { DeviceError } from './errors.ts';
import { eagerShapes } from './eager_shapes.ts';

/**
 * Inference on the operands' own sizes first: a bad call throws the op's ShapeError or DTypeError at once, naming
 * the sizes, even where the graph leaves them symbolic and would only see the mismatch when it runs.
 */
function checkSizes(op: OpName, inputs: readonly (Tensor | null)[], attrs: Attrs): void {
  const spec = OPS[op];
  if (!spec) return; // Graph.op names the unknown op
  const values = inputs.map((t, i): Value | null => (t ? { id: i, name: `x${i}`, dtype: t.dtype, shape: t.shape } : null));
  spec.infer(values, attrs);
}

/** Runs one op on tensors that share a device; absent optional inputs are null. */
export async function apply(op: OpName, inputs: readonly (Tensor | null)[], attrs: Attrs = {}): Promise<Tensor[]> {
  const present = inputs.filter((t): t is Tensor => t !== null);
  const dev = present[0]?.device as Device | undefined;
  if (!dev || typeof (dev as Device).run !== 'function') throw new DeviceError(`${op}: needs at least one tensor created on a device`);
  for (const t of present) {
    if (t.device !== dev) throw new DeviceError(`${op}: operands are on different devices (${dev.name} and ${t.device.name})`);
  }
  checkSizes(op, inputs, attrs);
  const { shapes, key } = eagerShapes(op, inputs.map((t) => t?.shape ?? null));
  const dtypes = inputs.map((t) => t?.dtype ?? '-').join(',');
  const g = dev.graph(dev, `eager|${op}|${JSON.stringify(attrs)}|${dtypes}|${key}`, () => {
    const g = new Graph(op);
    const ins = inputs.map((t, i) => (t ? g.input(`x${i}`, t.dtype, shapes[i]!) : null));
    return g.output(...g.op(op, ins, attrs));
  });
  return dev.run(g, present);
}

const one = async (op: OpName, inputs: readonly (Tensor | null)[], attrs: Attrs = {}) => (await apply(op, inputs, attrs))[0];

export const matmul = (a: Tensor, b: Tensor) => one('MatMul', [a, b]);
export const add = (a: Tensor, b: Tensor) => one('Add', [a, b]);
export const sub = (a: Tensor, b: Tensor) => one('Sub', [a, b]);
export const mul = (a: Tensor, b: Tensor) => one('Mul', [a, b]);
export const div = (a: Tensor, b: Tensor) => one('Div', [a, b]);
export const softmax = (x: Tensor, axis = -1) => one('Softmax', [x], { axis });
export const layerNorm = (x: Tensor, scale: Tensor, bias: Tensor | null = null, epsilon = 1e-5) => one('LayerNormalization', [x, scale, bias], { epsilon });
export const rmsNorm = (x: Tensor, scale: Tensor, epsilon = 1e-6) => one('RMSNorm', [x, scale], { epsilon });
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none') => one('Gelu', [x], { approximate });
export const silu = (x: Tensor) => one('SiLU', [x]);
export const sigmoid = (x: Tensor) => one('Sigmoid', [x]);
export const gather = (data: Tensor, indices: Tensor, axis = 0) => one('Gather', [data, indices], { axis });
export const reshape = (x: Tensor, shape: readonly number[]) => one('Reshape', [x], { shape });
export const transpose = (x: Tensor, perm?: readonly number[]) => one('Transpose', [x], perm ? { perm } : {});
export const cast = (x: Tensor, to: DType) => one('Cast', [x], { to });
export const attention = (q: Tensor, k: Tensor, v: Tensor, opts: { causal?: boolean; scale?: number } = {}) =>
  one('Attention', [q, k, v], { causal: opts.causal ?? false, ...(opts.scale !== undefined ? { scale: opts.scale } : {}) });

/** int8/uint8 product with int32 accumulation; zero points are optional scalars. */
export const matmulInteger = (a: Tensor, b: Tensor, aZeroPoint: Tensor | null = null, bZeroPoint: Tensor | null = null) =>
  one('MatMulInteger', [a, b, aZeroPoint, bZeroPoint]);

/** fp32 -> { y: uint8, scale: fp32 scalar, zeroPoint: uint8 scalar }. */
export async function dynamicQuantizeLinear(x: Tensor): Promise<{ y: Tensor; scale: Tensor; zeroPoint: Tensor }> {
  const [y, scale, zeroPoint] = await apply('DynamicQuantizeLinear', [x]);
  return { y, scale, zeroPoint };
}

/** A [.., K] fp32 times a 4-bit block-quantized weight in MatMulNBits layout (see engine/graph/ops.ts). */
export const matmulNBits = (a: Tensor, packed: Tensor, scales: Tensor, opts: { K: number; N: number; blockSize?: number; zeroPoints?: Tensor | null }) =>
  one('MatMulNBits', [a, packed, scales, opts.zeroPoints ?? null], { K: opts.K, N: opts.N, blockSize: opts.blockSize ?? 32, bits: 4 });

export const abs = (x: Tensor) => one('Abs', [x]);
/** Max over `axes` (every axis when omitted); keepdims defaults to true, as in ONNX. */
export const reduceMax = (x: Tensor, axes?: readonly number[], keepdims = true) => one('ReduceMax', [x], { ...(axes ? { axes } : {}), keepdims });
/** Round half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2. */
export const round = (x: Tensor) => one('Round', [x]);
export const clip = (x: Tensor, min?: number, max?: number) => one('Clip', [x], { ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) });

/**
 * saturate(roundHalfEven(x / scale) + zeroPoint): a scalar scale per tensor, a 1-D one along `axis` (default 1, as
 * ONNX). The codes take the zero point's dtype, else `outputDtype` (default uint8).
 */
export const quantizeLinear = (x: Tensor, scale: Tensor, zeroPoint: Tensor | null = null, opts: { axis?: number; outputDtype?: 'int8' | 'uint8' } = {}) =>
  one('QuantizeLinear', [x, scale, zeroPoint], { ...(opts.axis !== undefined ? { axis: opts.axis } : {}), ...(opts.outputDtype ? { outputDtype: opts.outputDtype } : {}) });

/** (x - zeroPoint) * scale in fp32, scales laid out as for quantizeLinear. */
export const dequantizeLinear = (x: Tensor, scale: Tensor, zeroPoint: Tensor | null = null, opts: { axis?: number } = {}) =>
  one('DequantizeLinear', [x, scale, zeroPoint], opts.axis !== undefined ? { axis: opts.axis } : {});
