/**
 * Ops of a Llama-style decoder and its training: rotary position embedding (Su et al. 2021), grouped-query attention
 * over a preallocated KV cache (Ainslie et al. 2023), and the softmax cross-entropy loss with its gradient (names and
 * semantics from onnxruntime's com.microsoft domain and the ONNX spec where they have them).
 */
import { DTypeError, ShapeError } from '../errors.ts';
import type { Value } from './graph.ts';
import { attrNum, dtypeIn, FLOATS, req, sameDType, type Attrs, type OpSpec } from './infer.ts';
import { unifyDims, type Shape } from './dims.ts';

const ROPE = 'RotaryEmbedding';
const GQA = 'GroupQueryAttention';
const PAGED = 'PagedAttention';
const SCE = 'SoftmaxCrossEntropyLoss';
const SCE_GRAD = 'SoftmaxCrossEntropyLossGrad';

/** RoPE's frequency of rotation pair i of a head of `rotaryDim` dims: theta^(-2i / rotaryDim) (Su et al., eq. 15). */
export function rotaryInvFreq(rotaryDim: number, theta = 10000): Float64Array {
  return Float64Array.from({ length: rotaryDim / 2 }, (_, i) => theta ** ((-2 * i) / rotaryDim));
}

/**
 * The cos and sin caches RotaryEmbedding takes: row p holds cos(p * f_i) and sin(p * f_i) for each frequency, [maxPositions,
 * rotaryDim / 2] row-major, computed in float64 (Hugging Face computes the angle in fp32, which is off by p * 2^-24).
 */
export function rotaryTables(maxPositions: number, rotaryDim: number, theta = 10000): { cos: Float64Array; sin: Float64Array } {
  const f = rotaryInvFreq(rotaryDim, theta);
  const half = f.length;
  const cos = new Float64Array(maxPositions * half);
  const sin = new Float64Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      cos[p * half + i] = Math.cos(p * f[i]);
      sin[p * half + i] = Math.sin(p * f[i]);
    }
  }
  return { cos, sin };
}

const flag = (op: string, attrs: Attrs, key: string): boolean => {
  const v = attrs[key] ?? false;
  if (v !== true && v !== false && v !== 0 && v !== 1) throw new ShapeError(op, [], `attribute '${key}' must be a boolean, got ${JSON.stringify(v)}`);
  return Boolean(v);
};

const posInt = (op: string, attrs: Attrs, key: string): number => {
  const v = attrNum(op, attrs, key);
  if (!Number.isInteger(v) || v <= 0) throw new ShapeError(op, [], `attribute '${key}' must be a positive integer, got ${v}`);
  return v;
};

/** How a RotaryEmbedding input is laid out: [B, H, S, D], or [B, S, H*D] with numHeads. */
export interface RopeLayout {
  rank: 3 | 4;
  heads: number;
  headDim: number;
}

export function ropeLayout(x: { shape: Shape }, attrs: Attrs): RopeLayout {
  const s = x.shape;
  if (s.length === 4) {
    const [, H, , D] = s;
    if (typeof H !== 'number' || typeof D !== 'number') throw new ShapeError(ROPE, [s], 'heads and the head dim of x [batch, heads, seq, headDim] must be sizes, not symbols');
    return { rank: 4, heads: H, headDim: D };
  }
  if (s.length === 3) {
    const hidden = s[2];
    const H = posInt(ROPE, attrs, 'numHeads');
    if (typeof hidden !== 'number' || hidden % H !== 0) throw new ShapeError(ROPE, [s], `x [batch, seq, heads*headDim] needs a last dimension that is a multiple of numHeads=${H}`);
    return { rank: 3, heads: H, headDim: hidden / H };
  }
  throw new ShapeError(ROPE, [s], 'x must be [batch, heads, seq, headDim] or [batch, seq, heads*headDim] (with numHeads)');
}

export type Reduction = 'mean' | 'sum' | 'none';

export function reduction(op: string, attrs: Attrs): Reduction {
  const r = attrs.reduction ?? 'mean';
  if (r !== 'mean' && r !== 'sum' && r !== 'none') throw new ShapeError(op, [], `reduction must be 'mean', 'sum' or 'none', got ${JSON.stringify(r)}`);
  return r;
}

export const ignoreIndex = (op: string, attrs: Attrs): number => {
  const v = attrNum(op, attrs, 'ignoreIndex', -100);
  if (!Number.isInteger(v)) throw new ShapeError(op, [], `ignoreIndex must be an integer, got ${v}`);
  return v;
};

/** logits [..., C] and int32 labels [...]: the leading dims must agree. */
function checkLogits(op: string, logits: Value, labels: Value): void {
  dtypeIn(op, logits, FLOATS, 'logits');
  dtypeIn(op, labels, ['int32'], 'labels');
  const ls = logits.shape;
  if (ls.length < 2) throw new ShapeError(op, [ls, labels.shape], 'logits must be [..., classes] with at least one leading dim ([N, C] or [B, S, C])');
  if (labels.shape.length !== ls.length - 1) throw new ShapeError(op, [ls, labels.shape], 'labels must have the shape of logits without its last (class) dim');
  labels.shape.forEach((d, i) => unifyDims(op, ls[i], d, `logits and labels along axis ${i}`, [ls, labels.shape]));
}

export const MODEL_OPS = {
  /**
   * Rotary position embedding: each pair of a head's dims is rotated by the angle pos * theta^(-2i/D). x [B, H, S, D]
   * (the Attention op's layout) or [B, S, H*D] with attribute numHeads (the layout projections produce); positionIds
   * int32 [B, S]. Pairs are (i, i + D/2) as Hugging Face's Llama rotates half the head (default), or (2i, 2i+1) with
   * interleaved (Meta's reference code and the paper). cosCache and sinCache [maxPositions, D/2] in x's dtype give
   * the angles' cos and sin by position (rotaryTables); without them the angles are computed from theta (default
   * 10000). inverse rotates by -angle: the transpose of the rotation, hence its gradient.
   */
  RotaryEmbedding: {
    optional: [2, 3],
    infer(inputs, attrs) {
      const [x, pos, cos, sin] = req(ROPE, inputs, 4, [2, 3]);
      dtypeIn(ROPE, x, FLOATS, 'x');
      dtypeIn(ROPE, pos, ['int32'], 'positionIds');
      const { rank, headDim } = ropeLayout(x, attrs);
      if (headDim % 2 !== 0) throw new ShapeError(ROPE, [x.shape], `the head dim (${headDim}) must be even: dims rotate in pairs`);
      const [B, S] = rank === 4 ? [x.shape[0], x.shape[2]] : [x.shape[0], x.shape[1]];
      if (pos.shape.length !== 2) throw new ShapeError(ROPE, [x.shape, pos.shape], 'positionIds must be [batch, seq]');
      unifyDims(ROPE, B, pos.shape[0], 'batch sizes of x and positionIds', [x.shape, pos.shape]);
      unifyDims(ROPE, S, pos.shape[1], 'sequence lengths of x and positionIds', [x.shape, pos.shape]);
      if (!cos !== !sin) throw new ShapeError(ROPE, [], 'cosCache and sinCache must both be given or both be absent');
      if (cos && sin) {
        sameDType(ROPE, [x, cos, sin]);
        for (const c of [cos, sin]) {
          if (c.shape.length !== 2) throw new ShapeError(ROPE, [c.shape], `${c.name} must be [maxPositions, ${headDim / 2}]`);
          unifyDims(ROPE, c.shape[1], headDim / 2, `${c.name}'s last dim and half the head dim`, [x.shape, c.shape]);
        }
        unifyDims(ROPE, cos.shape[0], sin.shape[0], 'maxPositions of cosCache and sinCache', [cos.shape, sin.shape]);
      } else if (attrNum(ROPE, attrs, 'theta', 10000) <= 0) throw new ShapeError(ROPE, [], 'theta must be positive');
      flag(ROPE, attrs, 'interleaved');
      flag(ROPE, attrs, 'inverse');
      return [{ dtype: x.dtype, shape: x.shape }];
    },
    // y = R(pos) x with R orthogonal: dx = R(pos)^T dy = R(-pos) dy. The caches are tables, not parameters.
    grad({ g, inputs: [, pos, cos, sin], attrs, dy: [d] }) {
      const dx = g.op(ROPE, [d, pos, cos, sin], { ...attrs, inverse: !flag(ROPE, attrs, 'inverse') })[0];
      return [dx, null, null, null];
    },
  },

  /**
   * Causal grouped-query attention of S new tokens per sequence against a preallocated KV cache, as a decode or
   * (chunked) prefill step of continuous batching: query [B, S, Hq*D], key and value [B, S, Hkv*D], pastKey and
   * pastValue [B, Hkv, maxSeq, D], pastLengths int32 [B] (tokens already cached per sequence). The new keys and values
   * are written at rows pastLengths[b] .. pastLengths[b]+S-1 of each sequence's cache (the other rows are kept), and
   * query i of sequence b attends to rows 0 .. pastLengths[b]+i. Outputs: attention [B, S, Hq*D] and presentKey,
   * presentValue (the updated caches). Attributes numHeads, kvNumHeads, scale (default 1/sqrt(D)). Each
   * pastLengths[b] + S must fit in maxSeq: a run that overflows throws. Right-padded prompts (pastLengths 0) work:
   * padding writes rows that the next step's pastLengths overwrites and no real query sees.
   */
  GroupQueryAttention: {
    infer(inputs, attrs) {
      const [q, k, v, pk, pv, lens] = req(GQA, inputs, 6);
      const d = sameDType(GQA, [q, k, v, pk, pv]);
      dtypeIn(GQA, q, FLOATS, 'query, key, value and caches');
      dtypeIn(GQA, lens, ['int32'], 'pastLengths');
      const Hq = posInt(GQA, attrs, 'numHeads');
      const Hkv = posInt(GQA, attrs, 'kvNumHeads');
      if (Hq % Hkv !== 0) throw new ShapeError(GQA, [], `numHeads (${Hq}) must be a multiple of kvNumHeads (${Hkv})`);
      const shapes = [q.shape, k.shape, v.shape, pk.shape, pv.shape, lens.shape];
      if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) throw new ShapeError(GQA, shapes, 'query, key and value must be [batch, seq, heads*headDim]');
      if (pk.shape.length !== 4 || pv.shape.length !== 4) throw new ShapeError(GQA, shapes, 'pastKey and pastValue must be [batch, kvHeads, maxSeq, headDim]');
      if (lens.shape.length !== 1) throw new ShapeError(GQA, shapes, 'pastLengths must be [batch]');
      const [B, S, hidden] = q.shape;
      if (typeof hidden !== 'number' || hidden % Hq !== 0) throw new ShapeError(GQA, shapes, `query's last dim must be a multiple of numHeads=${Hq}`);
      const D = hidden / Hq;
      for (const x of [k, v]) {
        unifyDims(GQA, x.shape[0], B, `batch sizes of query and ${x.name}`, shapes);
        unifyDims(GQA, x.shape[1], S, `sequence lengths of query and ${x.name}`, shapes);
        unifyDims(GQA, x.shape[2], Hkv * D, `${x.name}'s last dim and kvNumHeads * headDim (${Hkv} * ${D})`, shapes);
      }
      for (const c of [pk, pv]) {
        unifyDims(GQA, c.shape[0], B, `batch sizes of query and ${c.name}`, shapes);
        unifyDims(GQA, c.shape[1], Hkv, `${c.name}'s heads and kvNumHeads`, shapes);
        unifyDims(GQA, c.shape[3], D, `${c.name}'s head dim and query's (${D})`, shapes);
      }
      const T = unifyDims(GQA, pk.shape[2], pv.shape[2], 'cache lengths of pastKey and pastValue', shapes);
      unifyDims(GQA, lens.shape[0], B, 'batch sizes of query and pastLengths', shapes);
      if (typeof T === 'number' && typeof S === 'number' && S > T) throw new ShapeError(GQA, shapes, `${S} new tokens cannot fit in a cache of ${T}`);
      if (attrs.scale !== undefined) attrNum(GQA, attrs, 'scale');
      return [
        { dtype: d, shape: q.shape },
        { dtype: d, shape: pk.shape },
        { dtype: d, shape: pv.shape },
      ];
    },
  },

  /**
   * Attention through a paged KV cache (Kwon et al., SOSP 2023) for a decode or (chunked) prefill step of any set of
   * sequences; it reads the cache and writes nothing (writing the new keys and values into their slots, vLLM's
   * reshape_and_cache, is the caller's: a ScatterND, or a copy on the host). The caches are pools of token slots shared
   * by all sequences, head-major so that a block of one head is contiguous: keyCache, valueCache [Hkv, slots, D], slots
   * a multiple of the attribute blockSize (default 1). Inputs: query [B, S, Hq*D], key and value [B, S, Hkv*D] (the
   * new tokens, already rotated), the two caches, blockTable int32 [B, nb] (cached position j of sequence b is in slot
   * blockTable[b, j / blockSize] * blockSize + j % blockSize; nb * blockSize >= every pastLengths[b], and every entry
   * must be a valid block, though only those holding positions before pastLengths[b] are read), pastLengths int32 [B],
   * and optionally treeMask bool [B, S, S]: which new tokens each new token sees (SpecInfer's tree attention; default
   * causal, j <= i; each token must see itself). Query i of sequence b attends to the cached positions
   * 0 .. pastLengths[b]-1 and to the new tokens its mask allows. Output: attention [B, S, Hq*D]. Attributes numHeads,
   * kvNumHeads, blockSize, scale (default 1/sqrt(D)).
   */
  PagedAttention: {
    optional: [7],
    infer(inputs, attrs) {
      const [q, k, v, kc, vc, table, lens, tree] = req(PAGED, inputs, 8, [7]);
      const d = sameDType(PAGED, [q, k, v, kc, vc]);
      dtypeIn(PAGED, q, FLOATS, 'query, key, value and caches');
      dtypeIn(PAGED, table, ['int32'], 'blockTable');
      dtypeIn(PAGED, lens, ['int32'], 'pastLengths');
      if (tree) dtypeIn(PAGED, tree, ['bool'], 'treeMask');
      const Hq = posInt(PAGED, attrs, 'numHeads');
      const Hkv = posInt(PAGED, attrs, 'kvNumHeads');
      if (Hq % Hkv !== 0) throw new ShapeError(PAGED, [], `numHeads (${Hq}) must be a multiple of kvNumHeads (${Hkv})`);
      const shapes = [q, k, v, kc, vc, table, lens, ...(tree ? [tree] : [])].map((x) => x.shape);
      if ([q, k, v].some((x) => x.shape.length !== 3)) throw new ShapeError(PAGED, shapes, 'query, key and value must be [batch, seq, heads*headDim]');
      if (kc.shape.length !== 3 || vc.shape.length !== 3) throw new ShapeError(PAGED, shapes, 'keyCache and valueCache must be [kvHeads, slots, headDim]');
      if (table.shape.length !== 2 || lens.shape.length !== 1) throw new ShapeError(PAGED, shapes, 'blockTable must be [batch, blocks] and pastLengths [batch]');
      const bs = attrs.blockSize === undefined ? 1 : posInt(PAGED, attrs, 'blockSize');
      const slots = kc.shape[1];
      if (typeof slots === 'number' && slots % bs !== 0) throw new ShapeError(PAGED, shapes, `the caches' ${slots} slots are not a whole number of blocks of ${bs}`);
      const [B, S, hidden] = q.shape;
      if (typeof hidden !== 'number' || hidden % Hq !== 0) throw new ShapeError(PAGED, shapes, `query's last dim must be a multiple of numHeads=${Hq}`);
      const D = hidden / Hq;
      for (const x of [k, v]) {
        unifyDims(PAGED, x.shape[0], B, `batch sizes of query and ${x.name}`, shapes);
        unifyDims(PAGED, x.shape[1], S, `sequence lengths of query and ${x.name}`, shapes);
        unifyDims(PAGED, x.shape[2], Hkv * D, `${x.name}'s last dim and kvNumHeads * headDim (${Hkv} * ${D})`, shapes);
      }
      for (const c of [kc, vc]) {
        unifyDims(PAGED, c.shape[0], Hkv, `${c.name}'s heads and kvNumHeads`, shapes);
        unifyDims(PAGED, c.shape[2], D, `${c.name}'s head dim and query's (${D})`, shapes);
      }
      unifyDims(PAGED, kc.shape[1], vc.shape[1], 'slots of keyCache and valueCache', shapes);
      unifyDims(PAGED, table.shape[0], B, 'batch sizes of query and blockTable', shapes);
      unifyDims(PAGED, lens.shape[0], B, 'batch sizes of query and pastLengths', shapes);
      if (tree) {
        if (tree.shape.length !== 3) throw new ShapeError(PAGED, shapes, 'treeMask must be [batch, seq, seq]');
        unifyDims(PAGED, tree.shape[0], B, 'batch sizes of query and treeMask', shapes);
        unifyDims(PAGED, tree.shape[1], S, 'new tokens of query and treeMask', shapes);
        unifyDims(PAGED, tree.shape[2], S, 'new tokens of query and treeMask', shapes);
      }
      if (attrs.scale !== undefined) attrNum(PAGED, attrs, 'scale');
      return [{ dtype: d, shape: q.shape }];
    },
  },

  /**
   * Cross entropy of softmax(logits) against integer labels (ONNX SoftmaxCrossEntropyLoss with the class on the last
   * axis, as a language model's logits come): logits [..., C], labels int32 [...]; a label equal to ignoreIndex
   * (default -100, as PyTorch) adds nothing. reduction 'mean' (default; over the labels not ignored, NaN when all
   * are), 'sum' or 'none' ([...]). Outputs: the loss and logProb [..., C] (log_softmax of the logits).
   */
  SoftmaxCrossEntropyLoss: {
    infer(inputs, attrs) {
      const [logits, labels] = req(SCE, inputs, 2);
      checkLogits(SCE, logits, labels);
      const r = reduction(SCE, attrs);
      ignoreIndex(SCE, attrs);
      return [
        { dtype: logits.dtype, shape: r === 'none' ? logits.shape.slice(0, -1) : [] },
        { dtype: logits.dtype, shape: logits.shape },
      ];
    },
    grad({ g, inputs: [logits, labels], attrs, dy: [dLoss, dLogProb] }) {
      return [g.op(SCE_GRAD, [dLoss, logits, labels, dLogProb], attrs)[0], null];
    },
  },

  /**
   * d loss / d logits of SoftmaxCrossEntropyLoss, exact: (softmax(logits) - onehot(label)) * dLoss / count (mean;
   * count = labels not ignored) for each row not ignored, plus dLogProb - softmax * sum(dLogProb) when the log
   * probabilities reach the loss too. Inputs dLoss (the loss's shape; absent when only logProb is used), logits,
   * labels, dLogProb (optional); attributes as the loss's.
   */
  SoftmaxCrossEntropyLossGrad: {
    optional: [0, 3],
    infer(inputs, attrs) {
      const [dLoss, logits, labels, dLogProb] = req(SCE_GRAD, inputs, 4, [0, 3]);
      checkLogits(SCE_GRAD, logits, labels);
      const r = reduction(SCE_GRAD, attrs);
      ignoreIndex(SCE_GRAD, attrs);
      if (!dLoss && !dLogProb) throw new ShapeError(SCE_GRAD, [logits.shape], 'needs dLoss, dLogProb or both');
      if (dLoss) {
        if (dLoss.dtype !== logits.dtype) throw new DTypeError(SCE_GRAD, [dLoss.dtype, logits.dtype], 'dLoss must have the logits\' dtype');
        const want = r === 'none' ? labels.shape : [];
        if (dLoss.shape.length !== want.length) throw new ShapeError(SCE_GRAD, [dLoss.shape, logits.shape], `dLoss must have the loss's shape [${want.join(', ')}]`);
        want.forEach((w, i) => unifyDims(SCE_GRAD, dLoss.shape[i], w, `dLoss and labels along axis ${i}`, [dLoss.shape, labels.shape]));
      }
      if (dLogProb) {
        if (dLogProb.dtype !== logits.dtype) throw new DTypeError(SCE_GRAD, [dLogProb.dtype, logits.dtype], 'dLogProb must have the logits\' dtype');
        if (dLogProb.shape.length !== logits.shape.length) throw new ShapeError(SCE_GRAD, [dLogProb.shape, logits.shape], 'dLogProb must have the logits\' shape');
        logits.shape.forEach((w, i) => unifyDims(SCE_GRAD, dLogProb.shape[i], w, `dLogProb and logits along axis ${i}`, [dLogProb.shape, logits.shape]));
      }
      return [{ dtype: logits.dtype, shape: logits.shape }];
    },
  },
} satisfies Record<string, OpSpec>;
