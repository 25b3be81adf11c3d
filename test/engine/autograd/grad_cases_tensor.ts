/** Gradient-check cases of the tensor ops (engine/graph/ops_tensor.ts, ops_slice.ts, ops_index.ts); see grad_cases.ts. */
import type { GradCase } from './grad_cases.ts';
import type { CheckInput } from '../../../engine/autograd/gradcheck.ts';
import { rng, uniform } from '../../../bench/random.ts';

const floats = (seed: number, shape: number[], lo = -2, hi = 2): CheckInput => ({ dtype: 'fp32', shape, values: uniform(rng(seed), shape.reduce((p, d) => p * d, 1), lo, hi) });
const ints = (shape: number[], values: number[]): CheckInput => ({ dtype: 'int32', shape, values });

export const TENSOR_GRAD_CASES: GradCase[] = [
  { name: 'ReduceSum axis 1 keepdims', op: 'ReduceSum', inputs: [floats(300, [3, 4, 2])], attrs: { axes: [1], keepdims: true } },
  { name: 'ReduceSum every axis', op: 'ReduceSum', inputs: [floats(301, [3, 4])], attrs: { keepdims: false } },
  { name: 'Expand [3, 1] to [2, 3, 4]', op: 'Expand', inputs: [floats(302, [3, 1])], attrs: { shape: [2, 3, 4] } },
  { name: 'ReduceMean axes 0, 2', op: 'ReduceMean', inputs: [floats(303, [2, 3, 4])], attrs: { axes: [0, 2], keepdims: false } },
  { name: 'Exp', op: 'Exp', inputs: [floats(304, [10], -2, 2)] },
  { name: 'Log', op: 'Log', inputs: [floats(305, [10], 0.5, 3)] },
  { name: 'Sqrt', op: 'Sqrt', inputs: [floats(306, [10], 0.5, 3)] },
  { name: 'Neg', op: 'Neg', inputs: [floats(307, [2, 5])] },
  {
    name: 'Where broadcast (b summed over the rows it was stretched along)',
    op: 'Where',
    inputs: [{ dtype: 'bool', shape: [3, 4], values: [1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1] }, floats(308, [3, 4]), floats(309, [4])],
  },
  { name: 'Range with an offset', op: 'Range', inputs: [{ dtype: 'fp32', shape: [], values: [0.75] }], attrs: { length: 5, start: 1, delta: 0.5, dtype: 'fp32' } },
  { name: 'Slice two axes, step 2', op: 'Slice', inputs: [floats(310, [4, 6])], attrs: { starts: [1, 0], ends: [3, 6], axes: [0, 1], steps: [1, 2] } },
  { name: 'Concat axis 1', op: 'Concat', inputs: [floats(311, [2, 3]), floats(312, [2, 2])], attrs: { axis: 1 } },
  { name: 'Split axis 0', op: 'Split', inputs: [floats(313, [5, 3])], attrs: { axis: 0, sizes: [2, 3] } },
  // Values 0.05 apart: the top two of each row stay the top two within 2h.
  { name: 'TopK k=2', op: 'TopK', inputs: [{ dtype: 'fp32', shape: [2, 5], values: [0.3, -0.2, 0.9, 0.45, 0.1, -0.5, 0.05, -0.15, 0.6, 0.2] }], attrs: { k: 2, axis: -1 } },
  { name: 'GatherND rows, one twice', op: 'GatherND', inputs: [floats(314, [3, 4]), ints([3, 1], [2, 0, 2])] },
  { name: "ScatterND 'none'", op: 'ScatterND', inputs: [floats(315, [5, 3]), ints([2, 1], [1, 3]), floats(316, [2, 3])], attrs: { reduction: 'none' } },
  { name: "ScatterND 'add', one index twice", op: 'ScatterND', inputs: [floats(317, [4, 2]), ints([3, 1], [1, 1, 3]), floats(318, [3, 2])], attrs: { reduction: 'add' } },
];
