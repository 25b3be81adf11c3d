/** Op suite cases of the tensor ops (engine/graph/ops_tensor.ts, ops_slice.ts, ops_index.ts). */
import type { DType } from '../engine/index.ts';
import type { OpCase } from './op_cases.ts';
import { ints, rng, uniform } from './random.ts';

type Gen = OpCase['inputs'][number];
const numel = (shape: number[]) => shape.reduce((p, d) => p * d, 1);
const floats = (seed: number, shape: number[], lo = -2, hi = 2, dtype: DType = 'fp32'): Gen => ({ dtype, shape, values: uniform(rng(seed), numel(shape), lo, hi) });
const integers = (seed: number, shape: number[], lo: number, hi: number, dtype: DType = 'int32'): Gen => ({ dtype, shape, values: ints(rng(seed), numel(shape), lo, hi) });
const given = (dtype: DType, shape: number[], values: number[]): Gen => ({ dtype, shape, values });
/** Small whole numbers as floats, so that comparisons meet equal values. */
const steps = (seed: number, shape: number[], dtype: DType = 'fp32'): Gen => ({ ...integers(seed, shape, -3, 3), dtype });

const MATH: OpCase[] = [
  { name: 'ReduceSum axis 1 keepdims', op: 'ReduceSum', inputs: [floats(300, [3, 5, 2])], attrs: { axes: [1], keepdims: true } },
  { name: 'ReduceSum every axis', op: 'ReduceSum', inputs: [floats(301, [4, 6])], attrs: { keepdims: false } },
  { name: 'Expand [3, 1] to [2, 3, 4]', op: 'Expand', inputs: [floats(302, [3, 1])], attrs: { shape: [2, 3, 4] } },
  { name: 'ReduceMean last axis keepdims', op: 'ReduceMean', inputs: [floats(303, [4, 33])], attrs: { axes: [-1], keepdims: true } },
  { name: 'ReduceMean axes 0,2 no keepdims', op: 'ReduceMean', inputs: [floats(304, [3, 4, 5])], attrs: { axes: [0, 2], keepdims: false } },
  { name: 'ReduceMean every axis', op: 'ReduceMean', inputs: [floats(305, [6, 7])], attrs: { keepdims: false } },
  { name: 'ReduceMean fp16', op: 'ReduceMean', inputs: [floats(306, [5, 16], -2, 2, 'fp16')], attrs: { axes: [1] } },
  { name: 'Exp', op: 'Exp', inputs: [floats(307, [4, 9], -6, 6)] },
  { name: 'Exp fp16 (overflow to inf past 11.09)', op: 'Exp', inputs: [given('fp16', [6], [-20, -1, 0, 2.5, 11, 12])] },
  { name: 'Exp bf16', op: 'Exp', inputs: [floats(308, [24], -4, 4, 'bf16')] },
  { name: 'Log', op: 'Log', inputs: [floats(309, [30], 0.001, 50)] },
  { name: 'Log of 0 and negatives', op: 'Log', inputs: [given('fp32', [4], [0, -1, 1, Math.E])] },
  { name: 'Log fp16', op: 'Log', inputs: [floats(310, [20], 0.01, 100, 'fp16')] },
  { name: 'Sqrt', op: 'Sqrt', inputs: [floats(311, [30], 0, 100)] },
  { name: 'Sqrt of 0, tiny and negative', op: 'Sqrt', inputs: [given('fp32', [4], [0, 1e-30, -4, 2])] },
  { name: 'Sqrt fp16', op: 'Sqrt', inputs: [floats(312, [20], 0, 1000, 'fp16')] },
  { name: 'Neg', op: 'Neg', inputs: [floats(313, [3, 7])] },
  { name: 'Neg bf16', op: 'Neg', inputs: [floats(314, [12], -100, 100, 'bf16')] },
  { name: 'Neg fp16', op: 'Neg', inputs: [floats(315, [12], -100, 100, 'fp16')] },
];

const SELECT: OpCase[] = [
  { name: 'Equal fp32 broadcast', op: 'Equal', inputs: [steps(320, [4, 5]), steps(321, [5])] },
  { name: 'Equal int32', op: 'Equal', inputs: [integers(322, [3, 4], -2, 2), integers(323, [3, 1], -2, 2)] },
  { name: 'Equal bool', op: 'Equal', inputs: [integers(324, [8], 0, 1, 'bool'), integers(325, [8], 0, 1, 'bool')] },
  { name: 'Equal fp16', op: 'Equal', inputs: [steps(326, [10], 'fp16'), steps(327, [10], 'fp16')] },
  { name: 'Less fp32 broadcast', op: 'Less', inputs: [steps(328, [3, 1, 4]), steps(329, [5, 1])] },
  { name: 'Less int32', op: 'Less', inputs: [integers(330, [12], -3, 3), integers(331, [12], -3, 3)] },
  { name: 'Less fp16', op: 'Less', inputs: [steps(332, [2, 6], 'fp16'), steps(333, [6], 'fp16')] },
  { name: 'Where broadcast (a causal mask)', op: 'Where', inputs: [integers(334, [4, 1], 0, 1, 'bool'), floats(335, [1, 5]), given('fp32', [], [-Infinity])] },
  { name: 'Where all broadcast', op: 'Where', inputs: [integers(336, [2, 1, 3], 0, 1, 'bool'), floats(337, [4, 1]), floats(338, [3])] },
  { name: 'Where int32', op: 'Where', inputs: [integers(339, [6], 0, 1, 'bool'), integers(340, [6], -100, 100), integers(341, [6], -100, 100)] },
  { name: 'Where fp16', op: 'Where', inputs: [integers(342, [3, 4], 0, 1, 'bool'), floats(343, [3, 4], -2, 2, 'fp16'), floats(344, [4], -2, 2, 'fp16')] },
  { name: 'Range int32 with an offset (position ids)', op: 'Range', inputs: [given('int32', [], [7])], attrs: { length: 5 } },
  { name: 'Range int32 start, negative delta, [1] offset', op: 'Range', inputs: [given('int32', [1], [-2])], attrs: { length: 6, start: 10, delta: -3, dtype: 'int32' } },
  { name: 'Range fp32', op: 'Range', inputs: [given('fp32', [], [0.25])], attrs: { length: 9, start: -1, delta: 0.5, dtype: 'fp32' } },
  { name: 'Range of length 0', op: 'Range', inputs: [given('int32', [], [3])], attrs: { length: 0 } },
];

const SLICE: OpCase[] = [
  { name: 'Slice rows and columns', op: 'Slice', inputs: [floats(350, [5, 6])], attrs: { starts: [1, 2], ends: [4, 5], axes: [0, 1] } },
  { name: 'Slice negative bounds, axes omitted', op: 'Slice', inputs: [floats(351, [4, 7])], attrs: { starts: [-3, 0], ends: [-1, 2 ** 31 - 1] } },
  { name: 'Slice step 2 on the last axis', op: 'Slice', inputs: [floats(352, [2, 3, 9])], attrs: { starts: [1], ends: [9], axes: [-1], steps: [2] } },
  { name: 'Slice reversed (step -1, to the start)', op: 'Slice', inputs: [floats(353, [3, 5])], attrs: { starts: [-1], ends: [-(2 ** 31)], axes: [1], steps: [-1] } },
  { name: 'Slice step -2 with clamped bounds', op: 'Slice', inputs: [floats(354, [8, 2])], attrs: { starts: [100], ends: [0], axes: [0], steps: [-2] } },
  { name: 'Slice the last token', op: 'Slice', inputs: [floats(355, [2, 5, 4])], attrs: { starts: [-1], ends: [2 ** 31 - 1], axes: [1] } },
  { name: 'Slice empty (start past end)', op: 'Slice', inputs: [floats(356, [4, 3])], attrs: { starts: [3], ends: [1], axes: [0] } },
  { name: 'Slice int32', op: 'Slice', inputs: [integers(357, [6, 4], -50, 50)], attrs: { starts: [2], ends: [5], axes: [0] } },
  { name: 'Slice fp16', op: 'Slice', inputs: [floats(358, [4, 8], -2, 2, 'fp16')], attrs: { starts: [0, 4], ends: [2, 8], axes: [0, 1] } },
  { name: 'Concat three on axis 1', op: 'Concat', inputs: [floats(359, [2, 3, 4]), floats(360, [2, 1, 4]), floats(361, [2, 5, 4])], attrs: { axis: 1 } },
  { name: 'Concat int32 on axis 0', op: 'Concat', inputs: [integers(362, [2, 3], -9, 9), integers(363, [4, 3], -9, 9)], attrs: { axis: 0 } },
  { name: 'Concat fp16 on axis -1 (KV cache append)', op: 'Concat', inputs: [floats(364, [1, 2, 5, 4], -2, 2, 'fp16'), floats(365, [1, 2, 5, 1], -2, 2, 'fp16')], attrs: { axis: -1 } },
  { name: 'Concat with an empty part', op: 'Concat', inputs: [floats(366, [0, 3]), floats(367, [2, 3])], attrs: { axis: 0 } },
  { name: 'Split into 2, 3, 1', op: 'Split', inputs: [floats(368, [3, 6])], attrs: { axis: 1, sizes: [2, 3, 1] } },
  { name: 'Split bf16 on axis 0', op: 'Split', inputs: [floats(369, [4, 2], -2, 2, 'bf16')], attrs: { axis: 0, sizes: [1, 3] } },
];

const INDEX: OpCase[] = [
  { name: 'ArgMax last axis (greedy decoding)', op: 'ArgMax', inputs: [floats(380, [3, 50])], attrs: { axis: -1, keepdims: false } },
  { name: 'ArgMax axis 0 keepdims, ties take the first', op: 'ArgMax', inputs: [given('fp32', [3, 4], [1, 5, 2, 0, 3, 5, 2, -1, 3, 0, 2, -1])], attrs: { axis: 0, keepdims: true } },
  { name: 'ArgMax int32', op: 'ArgMax', inputs: [integers(381, [4, 6], -1000, 1000)], attrs: { axis: 1 } },
  { name: 'TopK largest 3 of the last axis', op: 'TopK', inputs: [floats(382, [4, 20])], attrs: { k: 3 } },
  { name: 'TopK smallest 2 along axis 0', op: 'TopK', inputs: [floats(383, [5, 3, 2])], attrs: { k: 2, axis: 0, largest: false } },
  { name: 'TopK fp16', op: 'TopK', inputs: [{ dtype: 'fp16', shape: [2, 16], values: Array.from({ length: 32 }, (_, i) => ((i * 7) % 32) / 8 - 2) }], attrs: { k: 5 } },
  { name: 'TopK int32, k = the whole axis', op: 'TopK', inputs: [{ dtype: 'int32', shape: [2, 6], values: [5, -2, 9, 0, 3, 7, 1, 8, -6, 4, 2, 11] }], attrs: { k: 6, axis: 1 } },
  { name: 'GatherND pairs into rows', op: 'GatherND', inputs: [floats(384, [3, 4, 5]), given('int32', [2, 2], [0, 3, 2, -1])] },
  { name: 'GatherND whole elements', op: 'GatherND', inputs: [floats(385, [3, 4]), given('int32', [2, 2, 2], [0, 0, 2, 3, 1, 1, -1, -4])] },
  { name: 'GatherND fp16 first axis', op: 'GatherND', inputs: [floats(386, [5, 3], -2, 2, 'fp16'), given('int32', [3, 1], [4, 0, 2])] },
  {
    name: 'ScatterND writes K at new positions of a [B, H, T, D] cache',
    op: 'ScatterND',
    // batch 0 writes position 3, batch 1 position 1, for both heads: one [D] row per (b, h, t).
    inputs: [floats(387, [2, 2, 5, 4]), given('int32', [2, 2, 1, 3], [0, 0, 3, 0, 1, 3, 1, 0, 1, 1, 1, 1]), floats(388, [2, 2, 1, 4])],
  },
  { name: 'ScatterND rows of a 2-D cache (negative index)', op: 'ScatterND', inputs: [floats(389, [6, 3]), given('int32', [2, 1], [4, -6]), floats(390, [2, 3])] },
  { name: 'ScatterND fp16 cache rows', op: 'ScatterND', inputs: [floats(391, [4, 8], -2, 2, 'fp16'), given('int32', [2, 1], [2, 0]), floats(392, [2, 8], -2, 2, 'fp16')], attrs: { reduction: 'none' } },
  { name: 'ScatterND add, repeated indices', op: 'ScatterND', inputs: [floats(393, [5, 2]), given('int32', [4, 1], [1, 3, 1, 0]), floats(394, [4, 2])], attrs: { reduction: 'add' } },
  { name: 'ScatterND add fp16, repeated indices', op: 'ScatterND', inputs: [floats(399, [5, 2], -2, 2, 'fp16'), given('int32', [4, 1], [1, 3, 1, 0]), floats(400, [4, 2], -2, 2, 'fp16')], attrs: { reduction: 'add' } },
  { name: 'ScatterND add bf16', op: 'ScatterND', inputs: [floats(401, [3, 2], -2, 2, 'bf16'), given('int32', [2, 1], [2, 2]), floats(402, [2, 2], -2, 2, 'bf16')], attrs: { reduction: 'add' } },
  { name: 'ScatterND add elements', op: 'ScatterND', inputs: [floats(395, [3, 3]), given('int32', [3, 2], [0, 0, 2, 1, 0, 0]), floats(396, [3])], attrs: { reduction: 'add' } },
  { name: 'ScatterND int32', op: 'ScatterND', inputs: [integers(397, [4, 2], -9, 9), given('int32', [1, 1], [3]), integers(398, [1, 2], 100, 200)] },
];

export const TENSOR_CASES: OpCase[] = [...MATH, ...SELECT, ...SLICE, ...INDEX];
