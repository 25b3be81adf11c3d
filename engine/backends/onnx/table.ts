/**
 * How each op becomes ONNX nodes (one entry per op, as tfjs registers a kernel per backend): the type checker
 * refuses an op without a lowering. Symbolic dims are read at run time with Shape, so one model serves every size.
 */
import type { DType } from '../../dtype/dtype.ts';
import type { Node } from '../../graph/graph.ts';
import type { OpName } from '../../graph/ops.ts';
import { keepDims, reduceAxes, scaleAxis } from '../../graph/ops_quant.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';
import { TENSOR_LOWERINGS } from './tensor_table.ts';
import { MODEL_LOWERINGS } from './model_table.ts';

/** Input names in, one output name per node output. Absent optional inputs arrive as ''. */
export type Lowering = (e: Emitter, n: Node, ins: string[]) => string[];

const num = (n: Node, k: string, d: number) => (n.attrs[k] ?? d) as number;
const same: Lowering = (e, n, ins) => [e.node(n.op, ins)];

/** Trailing absent optional inputs are dropped; absent ones in the middle stay as ''. */
export function trimOptional(ins: string[]): string[] {
  const out = [...ins];
  while (out.length && out[out.length - 1] === '') out.pop();
  return out;
}

export const ONNX_LOWERINGS = {
  MatMul: same,
  Add: same,
  Sub: same,
  Mul: same,
  Div: same,
  Sigmoid: same,
  Abs: same,
  Round: same,
  MatMulInteger: (e, n, ins) => {
    if (!(e.opts.u8s8Saturates && n.inputs[0]!.dtype === 'uint8' && n.inputs[1]!.dtype === 'int8')) return [e.node('MatMulInteger', trimOptional(ins))];
    // Exact on every CPU: the same integers as uint8 x uint8 (a constant B is folded once, when the session is made).
    const shift = (x: string) => e.node('Cast', [e.node('Add', [e.node('Cast', [x], [attr('to', OnnxType.INT32)]), e.int32Scalar(128)])], [attr('to', OnnxType.UINT8)]);
    const bz = ins[3] ? shift(ins[3]) : e.uint8Scalar(128);
    return [e.node('MatMulInteger', [ins[0], shift(ins[1]), ins[2] || e.uint8Scalar(0), bz])];
  },
  DynamicQuantizeLinear: (e, _n, ins) => e.nodeMulti('DynamicQuantizeLinear', ins, 3),
  MatMulNBits: (e, n, ins) => [
    e.node('MatMulNBits', trimOptional(ins), [attr('K', num(n, 'K', 0)), attr('N', num(n, 'N', 0)), attr('bits', 4), attr('block_size', num(n, 'blockSize', 32)), attr('accuracy_level', num(n, 'accuracyLevel', 0))], 'com.microsoft'),
  ],
  Softmax: (e, n, ins) => [e.node('Softmax', ins, [attr('axis', num(n, 'axis', -1))])],
  LayerNormalization: (e, n, ins) => [e.node('LayerNormalization', trimOptional(ins), [attr('axis', -1), attr('epsilon', num(n, 'epsilon', 1e-5), true)])],
  RMSNorm: (e, n, ins) => [e.node('SimplifiedLayerNormalization', ins, [attr('axis', -1), attr('epsilon', num(n, 'epsilon', 1e-6), true)])],
  Gelu: (e, n, ins) => [e.node('Gelu', ins, [attr('approximate', (n.attrs.approximate as string) ?? 'none')])],
  SiLU: (e, _n, ins) => [e.node('Mul', [ins[0], e.node('Sigmoid', ins)])],
  Gather: (e, n, ins) => [e.node('Gather', ins, [attr('axis', num(n, 'axis', 0))])],
  Reshape: (e, n, ins) => [e.node('Reshape', [ins[0], e.shape(n.outputs[0].shape)], [attr('allowzero', 1)])],
  Transpose: (e, n, ins) => [e.node('Transpose', ins, [attr('perm', (n.attrs.perm as number[]) ?? [...Array(n.inputs[0]!.shape.length).keys()].reverse())])],
  Cast: (e, n, ins) => [e.node('Cast', ins, [attr('to', onnxType(n.attrs.to as DType, e.opts))])],
  Attention: (e, n, ins) => [lowerAttention(e, n, ins, onnxType(n.inputs[0]!.dtype, e.opts))],
  ReduceMax: (e, n, ins) => {
    // Since opset 18 the axes are an int64 input; absent, every axis is reduced.
    const axes = n.attrs.axes === undefined ? null : reduceAxes(n.inputs[0]!.shape, n.attrs.axes);
    return [e.node('ReduceMax', axes ? [ins[0], e.int64(axes)] : [ins[0]], [attr('keepdims', keepDims(n.attrs) ? 1 : 0)])];
  },
  Clip: (e, n, ins) => {
    const type = onnxType(n.inputs[0]!.dtype, e.opts);
    const bound = (k: string) => (n.attrs[k] === undefined ? '' : e.float(new Float32Array([n.attrs[k] as number]), [], type));
    return [e.node('Clip', trimOptional([ins[0], bound('min'), bound('max')]))];
  },
  QuantizeLinear: (e, n, ins) => {
    const [x, scale, zp] = n.inputs;
    const axis = scaleAxis(n.op, x!, scale!, n.attrs);
    // Without a zero point ONNX picks uint8; an explicit zero one of the wanted dtype picks int8 too.
    const z = zp ? ins[2] : e.zeros8(onnxType(n.outputs[0].dtype, e.opts), [...(scale!.shape as readonly number[])]);
    return [e.node(n.op, [ins[0], ins[1], z], axis === null ? [] : [attr('axis', axis)])];
  },
  DequantizeLinear: (e, n, ins) => {
    const axis = scaleAxis(n.op, n.inputs[0]!, n.inputs[1]!, n.attrs);
    return [e.node(n.op, trimOptional(ins), axis === null ? [] : [attr('axis', axis)])];
  },
  Constant: (e, n) => {
    const dt = (n.attrs.dtype ?? 'fp32') as DType;
    const shape = (n.attrs.shape ?? []) as number[];
    const count = shape.reduce((p, d) => p * d, 1);
    if (dt === 'int32') return [e.int32s(new Int32Array(count).fill(n.attrs.value as number), shape)];
    return [e.float(new Float32Array(count).fill(n.attrs.value as number), shape, onnxType(dt, e.opts))];
  },
  ...TENSOR_LOWERINGS,
  ...MODEL_LOWERINGS,
} satisfies { [Op in OpName]: Lowering };

/**
 * softmax(q k^T * scale + causalMask) v, with grouped-query heads folded as [B, Hkv, G, S, D] so k and v broadcast
 * over the G query heads that share them instead of being copied. Batch and lengths may be symbolic: the reshapes
 * copy them (0) or infer them (-1), and the causal mask is built from the run's lengths.
 */
function lowerAttention(e: Emitter, n: Node, [q, k, v]: string[], type: number): string {
  const [, Hq, S, D] = n.inputs[0]!.shape as [unknown, number, number | string, number];
  const [, Hkv, T] = n.inputs[1]!.shape as [unknown, number, number | string];
  const Dv = n.inputs[2]!.shape[3] as number;
  const G = Hq / Hkv;
  const scale = (n.attrs.scale as number | undefined) ?? 1 / Math.sqrt(D);
  const q5 = e.node('Reshape', [q, e.int64([0, Hkv, G, -1, D])]);
  const k5 = e.node('Reshape', [k, e.int64([0, Hkv, 1, -1, D])]);
  const v5 = e.node('Reshape', [v, e.int64([0, Hkv, 1, -1, Dv])]);
  const kT = e.node('Transpose', [k5], [attr('perm', [0, 1, 2, 4, 3])]);
  let scores = e.node('Mul', [e.node('MatMul', [q5, kT]), e.float(new Float32Array([scale]), [], type)]);
  if (n.attrs.causal) {
    let mask: string;
    if (typeof S === 'number' && typeof T === 'number') {
      const m = new Float32Array(S * T);
      for (let i = 0; i < S; i++) for (let j = 0; j < T; j++) m[i * T + j] = j > i + (T - S) ? -Infinity : 0;
      mask = e.float(m, [S, T], type);
    } else {
      // key j is hidden from query i when j > i + (T - S): the last query sees every key.
      const len = (x: string) => e.node('Squeeze', [e.node('Shape', [x], [attr('start', 2), attr('end', 3)]), e.int64([0])]);
      const [s, t] = [len(q), len(k)];
      const zero = e.int64([0], []);
      const one = e.int64([1], []);
      const rows = e.node('Unsqueeze', [e.node('Add', [e.node('Range', [zero, s, one]), e.node('Sub', [t, s])]), e.int64([1])]);
      const cols = e.node('Range', [zero, t, one]);
      mask = e.node('Where', [e.node('Greater', [cols, rows]), e.float(new Float32Array([-Infinity]), [], type), e.float(new Float32Array([0]), [], type)]);
    }
    scores = e.node('Add', [scores, mask]);
  }
  const p = e.node('Softmax', [scores], [attr('axis', -1)]);
  return e.node('Reshape', [e.node('MatMul', [p, v5]), e.int64([0, Hq, -1, Dv])]);
}

