/**
 * The gradient of scaled dot-product attention with grouped-query heads (Ainslie et al. 2023), recomputing the
 * probabilities from q, k and v instead of storing them, as FlashAttention's backward pass does (Dao et al. 2022):
 *   P = softmax(scale q k^T + mask);  dV = P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dP P));
 *   dQ = scale dS K;  dK = scale dS^T Q;
 * with K and V repeated over each kv head's group of query heads, and dK, dV summed back over the group.
 */
import type { Dim } from './dims.ts';
import { sameDim } from './dims.ts';
import type { Value } from './graph.ts';
import type { GradContext, GradGraph } from './infer.ts';
import { op1, scalarLike, swapLast } from './grad_util.ts';

export function attentionGrad({ g, inputs: [q, k, v], attrs, dy: [dOut] }: GradContext): Value[] {
  const [B, Hq, S, D] = q!.shape;
  const [, Hkv, T] = k!.shape;
  const groups = (Hq as number) / (Hkv as number);
  const scale = scalarLike(g, q!, (attrs.scale as number | undefined) ?? 1 / Math.sqrt(D as number));
  const mm = (a: Value, b: Value) => op1(g, 'MatMul', [a, b]);
  const mul = (a: Value, b: Value) => op1(g, 'Mul', [a, b]);

  const kx = repeatKv(g, k!, groups);
  const vx = repeatKv(g, v!, groups);
  let scores = mul(mm(q!, swapLast(g, kx)), scale); // [B, Hq, S, T]
  if (attrs.causal) scores = op1(g, 'Where', [causalMask(g, S, T), scalarLike(g, q!, -Infinity), scores]);
  const p = op1(g, 'Softmax', [scores], { axis: -1 });

  const dP = mm(dOut!, swapLast(g, vx));
  const dS = mul(p, op1(g, 'Sub', [dP, op1(g, 'ReduceSum', [mul(dP, p)], { axes: [-1], keepdims: true })]));
  const dq = mul(mm(dS, kx), scale);
  const dk = sumGroups(g, mul(mm(swapLast(g, dS), q!), scale), B, Hkv as number, groups);
  const dv = sumGroups(g, mm(swapLast(g, p), dOut!), B, Hkv as number, groups);
  return [dq, dk, dv];
}

/** [B, Hkv, T, D] -> [B, Hkv * groups, T, D], kv head h serving query heads h * groups ... h * groups + groups - 1. */
function repeatKv(g: GradGraph, x: Value, groups: number): Value {
  if (groups === 1) return x;
  const [B, H, T, D] = x.shape;
  const x5 = op1(g, 'Reshape', [x], { shape: [B, H, 1, T, D] });
  const wide = op1(g, 'Expand', [x5], { shape: [B, H, groups, T, D] });
  return op1(g, 'Reshape', [wide], { shape: [B, (H as number) * groups, T, D] });
}

/** The adjoint of repeatKv: [B, Hkv * groups, T, D] -> [B, Hkv, T, D], summing each group. */
function sumGroups(g: GradGraph, x: Value, B: Dim, Hkv: number, groups: number): Value {
  if (groups === 1) return x;
  const [, , T, D] = x.shape;
  const x5 = op1(g, 'Reshape', [x], { shape: [B, Hkv, groups, T, D] });
  return op1(g, 'ReduceSum', [x5], { axes: [2], keepdims: false });
}

/**
 * [S, T] bool, true where key j lies after query i once the last query is aligned with the last key
 * (j > i + T - S), as the forward op masks. T - S is a literal when both are sizes or the same symbol, else it is
 * counted at run time from broadcast ones (no data-dependent shape).
 */
function causalMask(g: GradGraph, S: Dim, T: Dim): Value {
  const rows = op1(g, 'Reshape', [op1(g, 'Range', [], { length: S, dtype: 'fp32' })], { shape: [S, 1] });
  const cols = op1(g, 'Range', [], { length: T, dtype: 'fp32' });
  const f32 = (value: number) => op1(g, 'Constant', [], { value, dtype: 'fp32' });
  let offset: Value;
  if (sameDim(S, T)) offset = f32(0);
  else if (typeof S === 'number' && typeof T === 'number') offset = f32(T - S);
  else {
    const count = (n: Dim) => op1(g, 'ReduceSum', [op1(g, 'Expand', [f32(1)], { shape: [n] })], { keepdims: false });
    offset = op1(g, 'Sub', [count(T), count(S)]);
  }
  return op1(g, 'Less', [op1(g, 'Add', [rows, offset]), cols]);
}
