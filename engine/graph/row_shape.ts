/**
 * The input shape of a layer's step graph: x [..., K] with every leading dim symbolic ('m' for a 2-D batch of rows,
 * 'd0', 'd1', ... above), so one graph, and one compiled session, serves every batch and sequence length.
 */
import type { DType } from '../dtype/dtype.ts';
import type { Dim } from './dims.ts';
import type { Graph, Value } from './graph.ts';

export function rowShape(rank: number, last: number): Dim[] {
  if (rank === 1) return [last];
  if (rank === 2) return ['m', last];
  return [...Array.from({ length: rank - 1 }, (_, i) => `d${i}`), last];
}

/**
 * Input 'x' of a product graph taken as fp32 rows [M, K], and the way back: a result [M, N] reshaped to x's leading
 * dims and cast to x's dtype.
 */
export function fp32Rows(g: Graph, dtype: DType, rank: number, K: number): { x: Value; rows: Value; back(y: Value, N: number): Value } {
  const x = g.input('x', dtype, rowShape(rank, K));
  const lead = x.shape.slice(0, -1);
  const xf = dtype === 'fp32' ? x : g.op('Cast', [x], { to: 'fp32' })[0];
  const rows = rank === 2 ? xf : g.op('Reshape', [xf], { shape: [-1, K] })[0];
  const back = (y: Value, N: number) => {
    const shaped = rank === 2 ? y : g.op('Reshape', [y], { shape: [...lead, N] })[0];
    return dtype === 'fp32' ? shaped : g.op('Cast', [shaped], { to: dtype })[0];
  };
  return { x, rows, back };
}
