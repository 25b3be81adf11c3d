/** Reference kernels of the model ops (engine/graph/ops_model.ts). */
import type { RefKernel } from './kernel.ts';
import { ignoreIndex, reduction, ropeLayout } from '../../graph/ops_model.ts';
import * as M from './model_kernels.ts';

export const MODEL_KERNELS = {
  RotaryEmbedding: ({ inputs: [x, pos, cos, sin], attrs }) => [
    M.rotaryEmbedding(x!.f(), x!.shape, pos!.data as Int32Array, cos ? cos.f() : null, sin ? sin.f() : null, {
      ...ropeLayout(x!, attrs),
      interleaved: Boolean(attrs.interleaved),
      inverse: Boolean(attrs.inverse),
      theta: (attrs.theta as number | undefined) ?? 10000,
    }),
  ],
  GroupQueryAttention: ({ inputs: [q, k, v, pk, pv, lens], attrs }) => {
    const r = M.groupQueryAttention(q!.f(), k!.f(), v!.f(), pk!.f(), pv!.f(), lens!.data as Int32Array, pk!.shape, q!.shape[1], attrs.numHeads as number, attrs.scale as number | undefined);
    return [r.out, r.presentKey, r.presentValue];
  },
  PagedAttention: ({ inputs: [q, k, v, kc, vc, table, lens, tree], attrs }) => {
    const [B, S] = q!.shape;
    const nb = table!.shape[1];
    const bs = (attrs.blockSize as number | undefined) ?? 1;
    const tm = tree ? (tree.data as Uint8Array) : null;
    return [M.pagedAttention(q!.f(), k!.f(), v!.f(), kc!.f(), vc!.f(), kc!.shape, table!.data as Int32Array, nb, bs, lens!.data as Int32Array, tm, B, S, attrs.numHeads as number, attrs.scale as number | undefined)];
  },
  SoftmaxCrossEntropyLoss: ({ inputs: [logits, labels], attrs }) => {
    const C = logits!.shape[logits!.shape.length - 1];
    const r = M.softmaxCrossEntropy(logits!.f(), labels!.data as Int32Array, C, reduction('SoftmaxCrossEntropyLoss', attrs), ignoreIndex('SoftmaxCrossEntropyLoss', attrs));
    return [r.loss, r.logProb];
  },
  SoftmaxCrossEntropyLossGrad: ({ inputs: [dLoss, logits, labels, dLogProb], attrs }) => {
    const C = logits!.shape[logits!.shape.length - 1];
    const op = 'SoftmaxCrossEntropyLossGrad';
    return [M.softmaxCrossEntropyGrad(dLoss ? dLoss.f() : null, logits!.f(), labels!.data as Int32Array, dLogProb ? dLogProb.f() : null, C, reduction(op, attrs), ignoreIndex(op, attrs))];
  },
} satisfies Record<string, RefKernel>;
