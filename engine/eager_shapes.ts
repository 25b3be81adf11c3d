/**
 * The shapes an eager op's one-node graph is built with: sizes become symbols (ONNX dim_param) wherever the op's
 * inference and lowering need no size, so one graph, and one compiled session, serves a call at every size (the
 * shape-polymorphic capture nano-vllm gets from one CUDA graph per batch size, here from one session for all).
 */
import type { Dim } from './graph/dims.ts';
import type { OpName } from './graph/ops.ts';

/** Whether axis `axis` of operand `input` (of rank `rank`) may be a symbol. */
type Rule = (input: number, axis: number, rank: number) => boolean;

const any: Rule = () => true;

/**
 * Ops absent here keep every size: Reshape and Expand take sizes as attributes, QuantizeLinear's lowering builds its
 * default zero point in the scale's shape, and an op added later stays correct until it is listed.
 */
const SYMBOLIC: Partial<Record<OpName, Rule>> = {
  MatMul: any, MatMulInteger: any, DynamicQuantizeLinear: any,
  Add: any, Sub: any, Mul: any, Div: any,
  Softmax: any, LayerNormalization: any, RMSNorm: any, Gelu: any, SiLU: any, Sigmoid: any,
  Gather: any, Transpose: any, Cast: any, Abs: any, Round: any, Clip: any, ReduceMax: any, ReduceSum: any,
  // K and N are attributes the packed weight and its scales are checked against: only A's leading dims vary.
  MatMulNBits: (input, axis, rank) => input === 0 && axis < rank - 1,
  // Heads and head dims must be sizes; batch (axis 0) and lengths (axis 2) vary.
  Attention: (_input, axis) => axis === 0 || axis === 2,
};

/** Which trailing axes broadcast against the other operands' (numpy, aligned from the right). */
const BROADCAST: Partial<Record<OpName, 'all' | 'batch'>> = { Add: 'all', Sub: 'all', Mul: 'all', Div: 'all', MatMul: 'batch', MatMulInteger: 'batch' };

export interface EagerShapes {
  /** Per operand (null where absent): the graph input's shape. */
  shapes: (Dim[] | null)[];
  /** What the graph depends on: a size where it kept one, '*' where a symbol stands. */
  key: string;
}

/**
 * Sizes of 0 stay (a symbol bound to 0 would hide an empty reduction), and so does a 1 that broadcasts against a
 * larger dim of another operand: a symbol bound to 1 does not broadcast, so [1, n] + [m, n] is its own graph.
 */
export function eagerShapes(op: OpName, shapes: readonly (readonly number[] | null)[]): EagerShapes {
  const rule = SYMBOLIC[op];
  const bc = BROADCAST[op];
  const broadcasts = (i: number, axis: number): boolean => {
    const from = shapes[i]!.length - axis; // 1: the last axis
    if (!bc || (bc === 'batch' && from <= 2)) return false;
    return shapes.some((o, j) => j !== i && o !== null && o.length >= from && o[o.length - from] !== 1);
  };
  const out = shapes.map((s, i) => {
    if (!s) return null;
    return s.map((d, axis): Dim => (rule && d !== 0 && !(d === 1 && broadcasts(i, axis)) && rule(i, axis, s.length) ? `s${i}_${axis}` : d));
  });
  const key = out.map((s) => (s ? `[${s.map((d) => (typeof d === 'number' ? d : '*')).join(',')}]` : '-')).join('|');
  return { shapes: out, key };
}
