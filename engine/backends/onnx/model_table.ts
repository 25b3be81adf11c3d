/** ONNX lowerings of the model ops (engine/graph/ops_model.ts). */
import type { Node } from '../../graph/graph.ts';
import { ignoreIndex, reduction } from '../../graph/ops_model.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';
import { all, guard } from './guard.ts';
import { lowerRotary } from './rotary.ts';
import { lowerGroupQueryAttention } from './gqa.ts';
import { lowerPagedAttention } from './paged_attention.ts';
import type { Lowering } from './table.ts';

const widen = (e: Emitter, n: Node, i: number, v: string) => (onnxType(n.inputs[i]!.dtype, e.opts) === OnnxType.FLOAT ? v : e.node('Cast', [v], [attr('to', OnnxType.FLOAT)]));

/**
 * logits as [N, C] fp32 and labels as int64 [N], checked: a label that is neither a class nor ignoreIndex stops the
 * run (onnxruntime's SoftmaxCrossEntropyLoss would read a negative one from the end of the row). Native fp16 logits
 * are widened: the CPU provider, where the loss runs, has no fp16 kernel for it.
 */
function rows(e: Emitter, n: Node, at: number, logits: string, labels: string): { x: string; lab: string; C: string; ignore: number } {
  const ignore = ignoreIndex(n.op, n.attrs);
  const C = e.node('Shape', [logits], [attr('start', -1)]);
  const x = e.node('Reshape', [widen(e, n, at, logits), e.node('Concat', [e.int64([-1]), C], [attr('axis', 0)])]);
  const lab = e.node('Cast', [labels], [attr('to', OnnxType.INT64)]);
  const isClass = e.node('And', [e.node('GreaterOrEqual', [lab, e.int64([0], [])]), e.node('Less', [lab, C])]);
  const ok = all(e, e.node('Or', [isClass, e.node('Equal', [lab, e.int64([ignore], [])])]));
  return { x, lab: guard(e, lab, ok, `${n.op}: a label is neither a class index nor ignoreIndex`), C, ignore };
}

/** An fp32 result back to the value's carried type, shaped like `like` (kept as it is without). */
function back(e: Emitter, n: Node, v: string, like: string | null, i: number): string {
  const type = onnxType(n.outputs[i].dtype, e.opts);
  const shaped = like ? e.node('Reshape', [v, e.node('Shape', [like])]) : v;
  return type === OnnxType.FLOAT ? shaped : e.node('Cast', [shaped], [attr('to', type)]);
}

const lowerLoss: Lowering = (e, n, ins) => {
  const { x, lab, ignore } = rows(e, n, 0, ins[0], ins[1]);
  const red = reduction(n.op, n.attrs);
  const [loss, logProb] = e.nodeMulti('SoftmaxCrossEntropyLoss', [x, lab], 2, [attr('reduction', red), attr('ignore_index', ignore)]);
  return [red === 'none' ? back(e, n, loss, ins[1], 0) : back(e, n, loss, null, 0), back(e, n, logProb, ins[0], 1)];
};

/** (softmax - onehot) * dLoss / count per counted row, plus dLogProb - softmax * sum(dLogProb); as the reference. */
const lowerLossGrad: Lowering = (e, n, ins) => {
  const [dLossIn, logits, labels, dLogProbIn] = ins;
  const { x, lab, C, ignore } = rows(e, n, 1, logits, labels);
  const red = reduction(n.op, n.attrs);
  const p = e.node('Softmax', [x], [attr('axis', -1)]);
  let d = '';
  if (dLossIn) {
    const counted = e.node('Not', [e.node('Equal', [lab, e.int64([ignore], [])])]);
    const w = e.node('Cast', [counted], [attr('to', OnnxType.FLOAT)]);
    const dLoss = widen(e, n, 0, dLossIn);
    let g = e.node('Mul', [w, red === 'none' ? e.node('Reshape', [dLoss, e.int64([-1])]) : dLoss]);
    if (red === 'mean') g = e.node('Div', [g, e.node('ReduceSum', [w], [attr('keepdims', 0)])]);
    const classes = e.node('Range', [e.int64([0], []), e.node('Squeeze', [C, e.int64([0])]), e.int64([1], [])]);
    const target = e.node('Where', [counted, lab, e.int64([0], [])]);
    const onehot = e.node('Cast', [e.node('Equal', [e.node('Unsqueeze', [target, e.int64([1])]), classes])], [attr('to', OnnxType.FLOAT)]);
    d = e.node('Mul', [e.node('Sub', [p, onehot]), e.node('Unsqueeze', [g, e.int64([1])])]);
  }
  if (dLogProbIn) {
    const dl = e.node('Reshape', [widen(e, n, 3, dLogProbIn), e.node('Shape', [x])]);
    const t = e.node('Sub', [dl, e.node('Mul', [p, e.node('ReduceSum', [dl, e.int64([1])], [attr('keepdims', 1)])])]);
    d = d ? e.node('Add', [d, t]) : t;
  }
  return [back(e, n, d, logits, 0)];
};

export const MODEL_LOWERINGS = {
  RotaryEmbedding: lowerRotary,
  GroupQueryAttention: lowerGroupQueryAttention,
  PagedAttention: lowerPagedAttention,
  SoftmaxCrossEntropyLoss: lowerLoss,
  SoftmaxCrossEntropyLossGrad: lowerLossGrad,
} satisfies Record<string, Lowering>;
