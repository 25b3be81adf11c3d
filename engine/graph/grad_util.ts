/** What the op gradients share: one-output ops, literals and zeros, undoing broadcasting, means, permutations. */
import { sameDim, type Dim, type Shape } from './dims.ts';
import type { Value } from './graph.ts';
import type { Attrs, GradGraph } from './infer.ts';

type Graph = GradGraph;

export const op1 = (g: Graph, op: string, inputs: readonly (Value | null | undefined)[], attrs: Attrs = {}): Value => g.op(op, inputs, attrs)[0];

/** A scalar literal of v's dtype, for gradient formulas (-1, 0.5, ...). */
export const scalarLike = (g: Graph, v: Value, value: number): Value => op1(g, 'Constant', [], { value, dtype: v.dtype });

/**
 * Sums a gradient over the axes broadcasting added or stretched, so it takes the operand's shape again
 * (the adjoint of numpy broadcasting).
 */
export function sumTo(g: Graph, dy: Value, shape: Shape): Value {
  const lead = dy.shape.length - shape.length;
  const axes: number[] = [];
  // Where the dims differ but neither is 1, the graph's constraints make them equal at run time: nothing to sum.
  dy.shape.forEach((d, i) => {
    if (i < lead || (shape[i - lead] === 1 && !sameDim(d, 1))) axes.push(i);
  });
  if (axes.length === 0) return dy;
  const summed = op1(g, 'ReduceSum', [dy], { axes, keepdims: true });
  return lead > 0 ? op1(g, 'Reshape', [summed], { shape: [...shape] }) : summed;
}

/** [..., M, N] -> [..., N, M]. */
export function swapLast(g: Graph, v: Value): Value {
  const r = v.shape.length;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return op1(g, 'Transpose', [v], { perm });
}

/** Zeros of `shape` in v's dtype (a broadcast scalar, so symbolic shapes work). */
export const zerosLike = (g: Graph, v: Value, shape: Shape = v.shape): Value =>
  shape.length === 0 ? scalarLike(g, v, 0) : op1(g, 'Expand', [scalarLike(g, v, 0)], { shape: [...shape] });

/**
 * The mean over the last axis, kept: a sum times 1/n when n is a size (exact for powers of two, one rounding
 * otherwise), ReduceMean when n is only known at run time.
 */
export function meanLast(g: Graph, x: Value): Value {
  const n: Dim = x.shape[x.shape.length - 1];
  if (typeof n !== 'number') return op1(g, 'ReduceMean', [x], { axes: [-1], keepdims: true });
  return op1(g, 'Mul', [op1(g, 'ReduceSum', [x], { axes: [-1], keepdims: true }), scalarLike(g, x, 1 / n)]);
}

/** The inverse of a permutation (Transpose's perm). */
export function invertPerm(perm: readonly number[]): number[] {
  const inv: number[] = [];
  perm.forEach((p, i) => (inv[p] = i));
  return inv;
}
