/** The gradient of Gather (an embedding lookup): a scatter-add of dy into zeros of the data's shape. */
import type { Value } from './graph.ts';
import type { GradGraph } from './infer.ts';
import { invertPerm, op1, zerosLike } from './grad_util.ts';

/**
 * Gather's adjoint: dy scattered with addition into zeros of data's shape. ScatterND indexes the leading axis, so
 * the gathered axis is moved to the front (and dy's index axes with it) and moved back after.
 */
export function gatherGrad(g: GradGraph, data: Value, idx: Value, axis: number, d: Value): Value {
  const r = data.shape.length;
  const ir = idx.shape.length;
  const front = [axis, ...[...Array(r).keys()].filter((i) => i !== axis)];
  const dyPerm = [...Array(ir).keys()].map((i) => axis + i);
  for (let i = 0; i < d.shape.length; i++) if (i < axis || i >= axis + ir) dyPerm.push(i);
  const updates = axis === 0 ? d : op1(g, 'Transpose', [d], { perm: dyPerm });
  const indices = op1(g, 'Reshape', [idx], { shape: [...idx.shape, 1] });
  const zeros = zerosLike(g, d, front.map((i) => data.shape[i]));
  const summed = op1(g, 'ScatterND', [zeros, indices, updates], { reduction: 'add' });
  return axis === 0 ? summed : op1(g, 'Transpose', [summed], { perm: invertPerm(front) });
}
