/**
 * Op suite cases of the model ops (engine/graph/ops_model.ts): both RoPE pair orders and layouts, GQA on each
 * lowering path (onnxruntime's fused kernel for decode and single-sequence steps, plain ONNX otherwise), and the
 * cross-entropy loss and its gradient with every reduction.
 */
import type { DType } from '../engine/index.ts';
import { rotaryTables } from '../engine/graph/ops_model.ts';
import type { OpCase } from './op_cases.ts';
import { ints, rng, uniform } from './random.ts';

type Gen = OpCase['inputs'][number];
const numel = (s: number[]) => s.reduce((p, d) => p * d, 1);
const floats = (seed: number, dtype: DType, shape: number[], lo = -2, hi = 2): Gen => ({ dtype, shape, values: uniform(rng(seed), numel(shape), lo, hi) });
const int32 = (shape: number[], values: number[]): Gen => ({ dtype: 'int32', shape, values });
const absent: Gen = { dtype: 'fp32', shape: [], values: null };

/** cos and sin caches [maxPositions, D/2] in `dtype`. */
function caches(maxPositions: number, headDim: number, dtype: DType = 'fp32', theta = 10000): Gen[] {
  const { cos, sin } = rotaryTables(maxPositions, headDim, theta);
  return [
    { dtype, shape: [maxPositions, headDim / 2], values: Array.from(cos) },
    { dtype, shape: [maxPositions, headDim / 2], values: Array.from(sin) },
  ];
}

const ROPE_CASES: OpCase[] = [
  { name: 'RotaryEmbedding [B,H,S,D] rotate-half, caches', op: 'RotaryEmbedding', inputs: [floats(400, 'fp32', [2, 3, 4, 16]), int32([2, 4], [0, 1, 2, 3, 5, 6, 7, 8]), ...caches(12, 16)] },
  {
    name: 'RotaryEmbedding [B,S,H*D] interleaved, caches',
    op: 'RotaryEmbedding',
    inputs: [floats(401, 'fp32', [2, 3, 16]), int32([2, 3], [3, 4, 5, 0, 9, 2]), ...caches(10, 8)],
    attrs: { numHeads: 2, interleaved: true },
  },
  { name: 'RotaryEmbedding [B,H,S,D] from theta', op: 'RotaryEmbedding', inputs: [floats(402, 'fp32', [2, 2, 3, 8]), int32([2, 3], [0, 17, 40, 2, 3, 4]), absent, absent] },
  {
    name: 'RotaryEmbedding [B,S,H*D] interleaved from theta 500000 (Llama 3)',
    op: 'RotaryEmbedding',
    inputs: [floats(403, 'fp32', [1, 4, 32]), int32([1, 4], [60, 61, 62, 63]), absent, absent],
    attrs: { numHeads: 2, interleaved: true, theta: 500000 },
  },
  { name: 'RotaryEmbedding inverse (the gradient)', op: 'RotaryEmbedding', inputs: [floats(404, 'fp32', [1, 2, 3, 8]), int32([1, 3], [4, 0, 7]), ...caches(8, 8)], attrs: { inverse: true } },
  { name: 'RotaryEmbedding fp16, caches', op: 'RotaryEmbedding', inputs: [floats(405, 'fp16', [1, 2, 3, 16]), int32([1, 3], [0, 5, 11]), ...caches(12, 16, 'fp16')] },
  { name: 'RotaryEmbedding fp16 from theta', op: 'RotaryEmbedding', inputs: [floats(407, 'fp16', [1, 2, 2, 16]), int32([1, 2], [3, 20]), absent, absent] },
  { name: 'RotaryEmbedding bf16 from theta', op: 'RotaryEmbedding', inputs: [floats(406, 'bf16', [2, 3, 8]), int32([2, 3], [1, 2, 3, 9, 10, 11]), absent, absent], attrs: { numHeads: 1 } },
];

/** query [B, S, Hq*D], key and value [B, S, Hkv*D], caches [B, Hkv, T, D] and past lengths. */
function gqa(seed: number, B: number, S: number, T: number, Hq: number, Hkv: number, D: number, lens: number[], dtype: DType = 'fp32'): Gen[] {
  return [
    floats(seed, dtype, [B, S, Hq * D]),
    floats(seed + 1, dtype, [B, S, Hkv * D]),
    floats(seed + 2, dtype, [B, S, Hkv * D]),
    floats(seed + 3, dtype, [B, Hkv, T, D]),
    floats(seed + 4, dtype, [B, Hkv, T, D]),
    int32([B], lens),
  ];
}

const GQA_CASES: OpCase[] = [
  { name: 'GroupQueryAttention decode, lengths 0, 3, 7 (fused)', op: 'GroupQueryAttention', inputs: gqa(410, 3, 1, 8, 4, 2, 8, [0, 3, 7]), attrs: { numHeads: 4, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention decode, scale 0.2, MQA (fused)', op: 'GroupQueryAttention', inputs: gqa(420, 2, 1, 5, 4, 1, 16, [4, 1]), attrs: { numHeads: 4, kvNumHeads: 1, scale: 0.2 } },
  { name: 'GroupQueryAttention chunk of 3 after 2, batch 1 (fused)', op: 'GroupQueryAttention', inputs: gqa(430, 1, 3, 8, 4, 2, 8, [2]), attrs: { numHeads: 4, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention padded prompts, batch 2 (plain)', op: 'GroupQueryAttention', inputs: gqa(440, 2, 4, 6, 4, 2, 8, [0, 0]), attrs: { numHeads: 4, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention chunks after 1 and 5, batch 2 (plain)', op: 'GroupQueryAttention', inputs: gqa(450, 2, 2, 8, 6, 2, 8, [1, 5]), attrs: { numHeads: 6, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention head dim 4, decode (plain)', op: 'GroupQueryAttention', inputs: gqa(460, 2, 1, 4, 2, 2, 4, [3, 0]), attrs: { numHeads: 2, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention fp16 decode (fused)', op: 'GroupQueryAttention', inputs: gqa(470, 2, 1, 8, 4, 2, 16, [2, 6], 'fp16'), attrs: { numHeads: 4, kvNumHeads: 2 } },
  { name: 'GroupQueryAttention fp16 chunks (plain)', op: 'GroupQueryAttention', inputs: gqa(480, 2, 2, 6, 2, 1, 8, [0, 3], 'fp16'), attrs: { numHeads: 2, kvNumHeads: 1 } },
];

/**
 * PagedAttention inputs: caches [Hkv, slots, D] of slots / bs blocks and, per sequence, `past` cached positions in
 * blocks drawn at random from the pool (so tables are scattered, as after many allocations); `shared` makes every
 * sequence's first `shared` blocks the same (a shared prefix). Padded table entries point at block 0.
 */
function paged(seed: number, B: number, S: number, slots: number, Hq: number, Hkv: number, D: number, past: number[], opts: { shared?: number; tree?: number[][]; dtype?: DType; bs?: number } = {}): Gen[] {
  const dtype = opts.dtype ?? 'fp32';
  const bs = opts.bs ?? 1;
  const r = rng(seed + 9);
  const free = Array.from({ length: slots / bs }, (_, i) => i);
  const take = () => free.splice(Math.floor(r() * free.length), 1)[0];
  const prefix = Array.from({ length: opts.shared ?? 0 }, take);
  const nb = Math.max(1, ...past.map((p) => Math.ceil(p / bs)));
  const table: number[] = [];
  for (let b = 0; b < B; b++) {
    const need = Math.ceil(past[b] / bs);
    const row = [...prefix.slice(0, need), ...Array.from({ length: Math.max(0, need - prefix.length) }, take)];
    table.push(...row, ...Array(nb - row.length).fill(0));
  }
  const ins = [
    floats(seed, dtype, [B, S, Hq * D]),
    floats(seed + 1, dtype, [B, S, Hkv * D]),
    floats(seed + 2, dtype, [B, S, Hkv * D]),
    floats(seed + 3, dtype, [Hkv, slots, D]),
    floats(seed + 4, dtype, [Hkv, slots, D]),
    int32([B, nb], table),
    int32([B], past),
  ];
  if (opts.tree) ins.push({ dtype: 'bool', shape: [B, S, S], values: Array.from({ length: B }, () => opts.tree!.flat()).flat() });
  return ins;
}

/** Ancestor-or-self visibility of a token tree given each node's parent (-1: the cached prefix). */
const treeMask = (parents: number[]) =>
  parents.map((_, i) => {
    const row = parents.map(() => 0);
    for (let a = i; a >= 0; a = parents[a]) row[a] = 1;
    return row;
  });

const PAGED_CASES: OpCase[] = [
  { name: 'PagedAttention decode, lengths 0, 5, 11, scattered slots', op: 'PagedAttention', inputs: paged(600, 3, 1, 40, 4, 2, 8, [0, 5, 11]), attrs: { numHeads: 4, kvNumHeads: 2 } },
  {
    name: 'PagedAttention decode, blocks of 4, lengths 3, 9, 16',
    op: 'PagedAttention',
    inputs: paged(605, 3, 1, 48, 4, 2, 8, [3, 9, 16], { bs: 4 }),
    attrs: { numHeads: 4, kvNumHeads: 2, blockSize: 4 },
  },
  {
    name: 'PagedAttention decode, a shared prefix of 2 blocks of 4, MQA, scale 0.3',
    op: 'PagedAttention',
    inputs: paged(610, 2, 1, 32, 4, 1, 8, [8, 11], { shared: 2, bs: 4 }),
    attrs: { numHeads: 4, kvNumHeads: 1, scale: 0.3, blockSize: 4 },
  },
  { name: 'PagedAttention prefill chunks of 4 after 0 and 3', op: 'PagedAttention', inputs: paged(620, 2, 4, 24, 2, 2, 8, [0, 3]), attrs: { numHeads: 2, kvNumHeads: 2 } },
  {
    name: 'PagedAttention token tree of 5 after 4 and 2 (tree mask)',
    op: 'PagedAttention',
    inputs: paged(630, 2, 5, 32, 4, 2, 8, [4, 2], { tree: treeMask([-1, 0, 0, 1, -1]) }),
    attrs: { numHeads: 4, kvNumHeads: 2 },
  },
  {
    name: 'PagedAttention fp16 decode',
    op: 'PagedAttention',
    inputs: paged(640, 2, 1, 20, 4, 2, 16, [3, 7], { dtype: 'fp16' }),
    attrs: { numHeads: 4, kvNumHeads: 2 },
    // With native fp16 (webgpu) the scores and p v are plain fp16 products, each rounded at 2^-11: not one fused kernel.
    tol: { fp16: { atol: 5e-3, rtol: 2 ** -9 } },
  },
];

const labels = (seed: number, shape: number[], C: number, ignored: number[] = [], ignore = -100): Gen => {
  const v = ints(rng(seed), numel(shape), 0, C - 1);
  for (const i of ignored) v[i] = ignore;
  return int32(shape, v);
};

const LOSS_CASES: OpCase[] = [
  { name: 'SoftmaxCrossEntropyLoss mean, one ignored', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(500, 'fp32', [6, 10], -4, 4), labels(501, [6], 10, [2])] },
  { name: 'SoftmaxCrossEntropyLoss sum [B,S,C]', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(502, 'fp32', [2, 3, 7], -4, 4), labels(503, [2, 3], 7, [4])], attrs: { reduction: 'sum' } },
  { name: 'SoftmaxCrossEntropyLoss none', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(504, 'fp32', [5, 4], -4, 4), labels(505, [5], 4, [0, 3])], attrs: { reduction: 'none' } },
  {
    name: 'SoftmaxCrossEntropyLoss ignoreIndex 2 (a class)',
    op: 'SoftmaxCrossEntropyLoss',
    inputs: [floats(506, 'fp32', [4, 3], -4, 4), int32([4], [2, 0, 2, 1])],
    attrs: { ignoreIndex: 2 },
  },
  { name: 'SoftmaxCrossEntropyLoss mean, all ignored (NaN)', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(507, 'fp32', [2, 5]), int32([2], [-100, -100])] },
  { name: 'SoftmaxCrossEntropyLoss fp16 [B,S,C]', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(508, 'fp16', [2, 2, 33], -6, 6), labels(509, [2, 2], 33)] },
  { name: 'SoftmaxCrossEntropyLossGrad mean', op: 'SoftmaxCrossEntropyLossGrad', inputs: [floats(510, 'fp32', [], 0.5, 2), floats(511, 'fp32', [6, 10], -4, 4), labels(512, [6], 10, [1]), absent] },
  {
    name: 'SoftmaxCrossEntropyLossGrad none with dLogProb [B,S,C]',
    op: 'SoftmaxCrossEntropyLossGrad',
    inputs: [floats(513, 'fp32', [2, 3]), floats(514, 'fp32', [2, 3, 5], -4, 4), labels(515, [2, 3], 5, [5]), floats(516, 'fp32', [2, 3, 5])],
    attrs: { reduction: 'none' },
  },
  {
    name: 'SoftmaxCrossEntropyLossGrad dLogProb only',
    op: 'SoftmaxCrossEntropyLossGrad',
    inputs: [absent, floats(517, 'fp32', [3, 4], -4, 4), labels(518, [3], 4), floats(519, 'fp32', [3, 4])],
    attrs: { reduction: 'sum' },
  },
  { name: 'SoftmaxCrossEntropyLossGrad fp16 sum', op: 'SoftmaxCrossEntropyLossGrad', inputs: [floats(520, 'fp16', [], 0.5, 2), floats(521, 'fp16', [4, 16], -4, 4), labels(522, [4], 16, [3]), absent], attrs: { reduction: 'sum' } },
];

export const MODEL_CASES: OpCase[] = [...ROPE_CASES, ...GQA_CASES, ...PAGED_CASES, ...LOSS_CASES];
