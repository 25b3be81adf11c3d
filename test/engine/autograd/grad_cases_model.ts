/** Gradient-check cases of the model ops (engine/graph/ops_model.ts); see grad_cases.ts. */
import type { GradCase } from './grad_cases.ts';
import type { CheckInput } from '../../../engine/autograd/gradcheck.ts';
import { rng, uniform } from '../../../bench/random.ts';

const floats = (seed: number, shape: number[], lo = -2, hi = 2): CheckInput => ({ dtype: 'fp32', shape, values: uniform(rng(seed), shape.reduce((p, d) => p * d, 1), lo, hi) });
const ints = (shape: number[], values: number[]): CheckInput => ({ dtype: 'int32', shape, values });

export const MODEL_GRAD_CASES: GradCase[] = [
  { name: 'RotaryEmbedding [B, H, S, D]', op: 'RotaryEmbedding', inputs: [floats(400, [1, 2, 3, 4]), ints([1, 3], [0, 5, 2])] },
  { name: 'RotaryEmbedding interleaved [B, S, H*D]', op: 'RotaryEmbedding', inputs: [floats(401, [2, 2, 8]), ints([2, 2], [3, 4, 0, 1])], attrs: { numHeads: 2, interleaved: true } },
  // Both outputs reach the projected loss: the loss and logProb.
  { name: 'SoftmaxCrossEntropyLoss mean, one label ignored', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(402, [4, 5], -3, 3), ints([4], [1, -100, 4, 0])] },
  { name: 'SoftmaxCrossEntropyLoss sum [B, S, C]', op: 'SoftmaxCrossEntropyLoss', inputs: [floats(403, [2, 3, 4], -3, 3), ints([2, 3], [0, 3, 3, 1, 2, 0])], attrs: { reduction: 'sum' } },
  { name: "SoftmaxCrossEntropyLoss 'none'", op: 'SoftmaxCrossEntropyLoss', inputs: [floats(404, [3, 4], -3, 3), ints([3], [2, 0, 1])], attrs: { reduction: 'none' } },
];
