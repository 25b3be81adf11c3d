/**
 * Run-time checks inside an ONNX graph, which has no assert: a tensor passes through a Reshape whose target is
 * invalid when the check fails, so onnxruntime stops the run with an error naming the node (and so the reason)
 * before a kernel reads out of bounds or silently wraps a negative index.
 */
import { attr, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';

/** A bool scalar: every element of the bool tensor `cond` is true (vacuously for an empty one). */
export function all(e: Emitter, cond: string): string {
  const min = e.node('ReduceMin', [e.node('Cast', [cond], [attr('to', OnnxType.INT32)])], [attr('keepdims', 0)]);
  return e.node('Not', [e.node('Equal', [min, e.int32Scalar(0)])]);
}

/** x flattened to 1-D when `ok` (a bool scalar) holds; otherwise the run fails with `why` in the node's name. */
export function guard(e: Emitter, x: string, ok: string, why: string): string {
  const target = e.node('Where', [ok, e.int64([-1]), e.int64([0])]);
  // allowzero: a 0 in the target is a zero-sized dim, which no non-empty x fits, instead of "copy x's dim".
  const out = e.node('Reshape', [x, target], [attr('allowzero', 1)]);
  e.nodes[e.nodes.length - 1].name = `${why} [check ${e.nodes.length}]`;
  return out;
}
