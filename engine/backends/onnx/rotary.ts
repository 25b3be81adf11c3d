/**
 * RotaryEmbedding lowered to onnxruntime's com.microsoft RotaryEmbedding (CPU and WebGPU kernels, same layouts and
 * pair orders as the engine op). Without caches, each token gets its own cache row: the angles pos * theta^(-2i/D)
 * are computed at run time in fp32 and the token's row index is its flat position in [B, S].
 */
import type { Node } from '../../graph/graph.ts';
import { ropeLayout, rotaryInvFreq } from '../../graph/ops_model.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';
import { all, guard } from './guard.ts';

export function lowerRotary(e: Emitter, n: Node, ins: string[]): string[] {
  const [x, , cos] = n.inputs;
  const { rank, heads, headDim } = ropeLayout(x!, n.attrs);
  const type = onnxType(x!.dtype, e.opts);
  const posShape = e.node('Shape', [ins[1]]);
  let pos = e.node('Cast', [ins[1]], [attr('to', OnnxType.INT64)]);
  let cosC: string;
  let sinC: string;
  if (cos) {
    [cosC, sinC] = [ins[2], ins[3]];
    const maxPos = e.node('Shape', [cosC], [attr('start', 0), attr('end', 1)]);
    const inRange = e.node('And', [e.node('GreaterOrEqual', [pos, e.int64([0], [])]), e.node('Less', [pos, maxPos])]);
    pos = e.node('Reshape', [guard(e, pos, all(e, inRange), 'RotaryEmbedding: a position id is outside the cos/sin caches'), posShape]);
  } else {
    const theta = (n.attrs.theta as number | undefined) ?? 10000;
    const freq = Float32Array.from(rotaryInvFreq(headDim, theta));
    const flat = e.node('Reshape', [e.node('Cast', [ins[1]], [attr('to', OnnxType.FLOAT)]), e.int64([-1, 1])]);
    const angles = e.node('Mul', [flat, e.float(freq, [1, headDim / 2])]);
    [cosC, sinC] = [e.node('Cos', [angles]), e.node('Sin', [angles])];
    if (type !== OnnxType.FLOAT) [cosC, sinC] = [cosC, sinC].map((c) => e.node('Cast', [c], [attr('to', type)]));
    const rows = e.node('Range', [e.int64([0], []), e.node('Size', [ins[1]]), e.int64([1], [])]);
    pos = e.node('Reshape', [rows, posShape]);
  }
  if (n.attrs.inverse) sinC = e.node('Neg', [sinC]);
  const attrs = [attr('interleaved', n.attrs.interleaved ? 1 : 0), ...(rank === 3 ? [attr('num_heads', heads)] : [])];
  return [e.node('RotaryEmbedding', [ins[0], pos, cosC, sinC], attrs, 'com.microsoft')];
}
