/**
 * How each op becomes ONNX nodes (one entry per op, as tfjs registers a kernel per backend): the type checker
 * refuses an op without a lowering. Symbolic dims are read at run time with Shape, so one model serves every size.
 */
import type { DType } from '../../dtype/dtype.ts';
import type { Node } from '../../graph/graph.ts';
import type { OpName } from '../../graph/ops.ts';
import { keepDims, reduceAxes, scaleAxis } from '../../graph/ops_quant.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { isStatic, sameDim, type Shape } from '../../graph/dims.ts';
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
  MatMulBnb4: (e, n, ins) => [
    e.node('MatMulBnb4', ins, [attr('K', num(n, 'K', 0)), attr('N', num(n, 'N', 0)), attr('block_size', num(n, 'blockSize', 64)), attr('quant_type', num(n, 'quantType', 1))], 'com.microsoft'),
  ],
  Softmax: (e, n, ins) => [e.node('Softmax', ins, [attr('axis', num(n, 'axis', -1))])],
  LayerNormalization: (e, n, ins) => [e.node('LayerNormalization', trimOptional(ins), [attr('axis', -1), attr('epsilon', num(n, 'epsilon', 1e-5), true)])],
  RMSNorm: (e, n, ins) => [e.node('SimplifiedLayerNormalization', ins, [attr('axis', -1), attr('epsilon', num(n, 'epsilon', 1e-6), true)])],
  Gelu: (e, n, ins) => [e.node('Gelu', ins, [attr('approximate', (n.attrs.approximate as string) ?? 'none')])],
  SiLU: (e, _n, ins) => [e.node('Mul', [ins[0], e.node('Sigmoid', ins)])],
  Gather: (e, n, ins) => [e.node('Gather', ins, [attr('axis', num(n, 'axis', 0))])],
  Reshape: (e, n, ins) => [lowerReshape(e, n.inputs[0]!.shape, n.outputs[0].shape, ins[0])],
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
 * A reshape whose target is a constant wherever it can be, so a symbolic graph costs no more nodes than a static one:
 * a dim equal to the input's at the same axis is copied (0, with allowzero off), one other symbolic dim is inferred
 * (-1); only a target with more than that is assembled at run time. A literal 0 in the target needs allowzero.
 */
function lowerReshape(e: Emitter, from: Shape, to: Shape, x: string): string {
  if (isStatic(to) && !to.includes(0)) return e.node('Reshape', [x, e.int64(to)]);
  const target = to.map((d, i) => (typeof d !== 'number' && i < from.length && sameDim(from[i], d) ? 0 : d));
  const left = target.filter((d) => typeof d !== 'number');
  if (!to.includes(0) && left.length <= 1) return e.node('Reshape', [x, e.int64(target.map((d) => (typeof d === 'number' ? d : -1)))]);
  return e.node('Reshape', [x, e.shape(to)], [attr('allowzero', 1)]);
}

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
  // Multi-head attention (one query head per kv head) needs no fold: 4-D all the way, no reshape to run.
  const mha = G === 1;
  const q5 = mha ? q : e.node('Reshape', [q, e.int64([0, Hkv, G, -1, D])]);
  const k5 = mha ? k : e.node('Reshape', [k, e.int64([0, Hkv, 1, -1, D])]);
  const v5 = mha ? v : e.node('Reshape', [v, e.int64([0, Hkv, 1, -1, Dv])]);
  const kT = e.node('Transpose', [k5], [attr('perm', mha ? [0, 1, 3, 2] : [0, 1, 2, 4, 3])]);
  let scores = e.node('Mul', [e.node('MatMul', [q5, kT]), e.float(new Float32Array([scale]), [], type)]);
  // Key j is hidden from query i when j > i + (T - S): the last query sees every key, so one query needs no mask.
  if (n.attrs.causal && S !== 1) {
    let mask: string;
    if (typeof S === 'number' && typeof T === 'number') {
      const m = new Float32Array(S * T);
      for (let i = 0; i < S; i++) for (let j = 0; j < T; j++) m[i * T + j] = j > i + (T - S) ? -Infinity : 0;
      mask = e.float(m, [S, T], type);
    } else {
      // -inf on and above the diagonal T - S + 1 of an [S, T] matrix, zeros below: Trilu keeps the upper part. Built
      // once per graph for each (S, T): every layer of a model attends at the same lengths.
      mask = e.memo(`causal|${String(S)}|${String(T)}|${type}`, () => {
        const [s, t] = [e.dim(S), e.dim(T)];
        const full = e.node('Expand', [e.float(new Float32Array([-Infinity]), []), e.node('Concat', [s, t], [attr('axis', 0)])]);
        const diagonal = e.node('Squeeze', [e.node('Add', [e.node('Sub', [t, s]), e.int64([1])]), e.int64([0])]);
        const m = e.node('Trilu', [full, diagonal], [attr('upper', 1)]);
        return type === OnnxType.FLOAT ? m : e.node('Cast', [m], [attr('to', type)]);
      });
    }
    scores = e.node('Add', [scores, mask]);
  }
  const p = e.node('Softmax', [scores], [attr('axis', -1)]);
  const out = e.node('MatMul', [p, v5]);
  return mha ? out : e.node('Reshape', [out, e.int64([0, Hq, -1, Dv])]);
}

