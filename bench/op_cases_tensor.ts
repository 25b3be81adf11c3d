/** Op suite cases of the tensor ops (engine/graph/ops_tensor.ts): reductions, math, selection, slicing, scattering. */
import type { OpCase } from './op_cases.ts';
import { rng, uniform } from './random.ts';

const floats = (seed: number, shape: number[], lo = -2, hi = 2) => ({ dtype: 'fp32' as const, shape, values: uniform(rng(seed), shape.reduce((p, d) => p * d, 1), lo, hi) });

export const TENSOR_CASES: OpCase[] = [
  { name: 'ReduceSum axis 1 keepdims', op: 'ReduceSum', inputs: [floats(300, [3, 5, 2])], attrs: { axes: [1], keepdims: true } },
  { name: 'ReduceSum every axis', op: 'ReduceSum', inputs: [floats(301, [4, 6])], attrs: { keepdims: false } },
  { name: 'Expand [3, 1] to [2, 3, 4]', op: 'Expand', inputs: [floats(302, [3, 1])], attrs: { shape: [2, 3, 4] } },
];
