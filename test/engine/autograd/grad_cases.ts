/**
 * Gradient-check cases, one or more per differentiable op: each runs backward() against central differences on the
 * reference backend (engine/autograd/gradcheck.ts). grad_ops.test.ts fails for an op with a gradient and no case
 * here; the tensor and model op families keep theirs in grad_cases_tensor.ts and grad_cases_model.ts.
 *
 * Inputs keep 2h (h = 1e-3) away from kinks: Abs at 0, Clip at its bounds, ReduceMax's ties, Round's half-integers.
 */
import type { Attrs, DType, OpName } from '../../../engine/index.ts';
import type { CheckInput, GradCheckOptions } from '../../../engine/autograd/gradcheck.ts';
import { rng, uniform } from '../../../bench/random.ts';
import { TENSOR_GRAD_CASES } from './grad_cases_tensor.ts';
import { MODEL_GRAD_CASES } from './grad_cases_model.ts';

export interface GradCase {
  name: string;
  op: OpName;
  /** null: an absent optional input. */
  inputs: (CheckInput | null)[];
  attrs?: Attrs;
  /** Tolerances other than gradCheck's defaults, with the reason beside them. */
  opts?: GradCheckOptions;
}

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

/** Seeded uniform values in [lo, hi). */
export function floats(seed: number, shape: number[], lo = -2, hi = 2, dtype: DType = 'fp32'): CheckInput {
  return { dtype, shape, values: uniform(rng(seed), numel(shape), lo, hi) };
}

/** Uniform values in [lo, hi) moved at least `gap` away from each of `kinks`. */
export function awayFrom(seed: number, shape: number[], kinks: (x: number) => number, lo = -2, hi = 2, gap = 0.01): CheckInput {
  const r = rng(seed);
  const values = Array.from({ length: numel(shape) }, () => {
    for (;;) {
      const x = lo + (hi - lo) * r();
      if (kinks(x) > gap) return x;
    }
  });
  return { dtype: 'fp32', shape, values };
}

export const ints = (shape: number[], values: number[]): CheckInput => ({ dtype: 'int32', shape, values });

/** Distinct values 0.05 apart in a seeded order: ReduceMax has one argmax per slice and no tie within 2h. */
function distinct(seed: number, shape: number[]): CheckInput {
  const n = numel(shape);
  const r = rng(seed);
  const v = Array.from({ length: n }, (_, i) => -1 + 0.05 * i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [v[i], v[j]] = [v[j], v[i]];
  }
  return { dtype: 'fp32', shape, values: v };
}

const CORE_GRAD_CASES: GradCase[] = [
  { name: 'MatMul 2-D', op: 'MatMul', inputs: [floats(1, [3, 5]), floats(2, [5, 4])] },
  { name: 'MatMul batched x 2-D (dB summed over the batch)', op: 'MatMul', inputs: [floats(3, [2, 3, 4]), floats(4, [4, 2])] },
  { name: 'MatMul broadcast batch', op: 'MatMul', inputs: [floats(5, [2, 1, 2, 3]), floats(6, [3, 3, 2])] },
  { name: 'Add broadcast', op: 'Add', inputs: [floats(7, [3, 1, 4]), floats(8, [5, 1])] },
  { name: 'Sub', op: 'Sub', inputs: [floats(9, [4, 3]), floats(10, [3])] },
  { name: 'Mul broadcast', op: 'Mul', inputs: [floats(11, [2, 3]), floats(12, [2, 1])] },
  { name: 'Div', op: 'Div', inputs: [floats(13, [3, 4]), floats(14, [4], 0.5, 2)] },
  { name: 'Softmax last axis', op: 'Softmax', inputs: [floats(15, [3, 7], -3, 3)], attrs: { axis: -1 } },
  { name: 'Softmax axis 0', op: 'Softmax', inputs: [floats(16, [4, 3], -3, 3)], attrs: { axis: 0 } },
  { name: 'LayerNormalization', op: 'LayerNormalization', inputs: [floats(17, [2, 3, 8]), floats(18, [8]), floats(19, [8])], attrs: { epsilon: 1e-5 } },
  { name: 'LayerNormalization no bias', op: 'LayerNormalization', inputs: [floats(20, [4, 6]), floats(21, [6]), null], attrs: { epsilon: 1e-3 } },
  { name: 'RMSNorm', op: 'RMSNorm', inputs: [floats(22, [3, 8]), floats(23, [8])], attrs: { epsilon: 1e-6 } },
  { name: 'RMSNorm 3-D', op: 'RMSNorm', inputs: [floats(24, [2, 2, 5]), floats(25, [5])], attrs: { epsilon: 1e-5 } },
  // x = 0 exactly takes the Phi(0) = 1/2 branch of the slope.
  { name: 'Gelu erf', op: 'Gelu', inputs: [{ dtype: 'fp32', shape: [3, 8], values: [0, ...uniform(rng(26), 23, -4, 4)] }], attrs: { approximate: 'none' } },
  { name: 'Gelu tanh', op: 'Gelu', inputs: [{ dtype: 'fp32', shape: [3, 8], values: [0, ...uniform(rng(27), 23, -4, 4)] }], attrs: { approximate: 'tanh' } },
  { name: 'SiLU', op: 'SiLU', inputs: [floats(28, [4, 6], -6, 6)] },
  { name: 'Sigmoid', op: 'Sigmoid', inputs: [floats(29, [20], -6, 6)] },
  // Row 3 is picked twice: its gradient is the sum of both.
  { name: 'Gather rows (embedding)', op: 'Gather', inputs: [floats(30, [6, 4]), ints([2, 3], [0, 5, 3, 3, 1, 2])], attrs: { axis: 0 } },
  { name: 'Gather axis 1, a negative index', op: 'Gather', inputs: [floats(31, [3, 5, 2]), ints([2], [-1, 0])], attrs: { axis: 1 } },
  { name: 'Reshape', op: 'Reshape', inputs: [floats(32, [2, 3, 4])], attrs: { shape: [4, -1] } },
  { name: 'Transpose', op: 'Transpose', inputs: [floats(33, [2, 3, 4])], attrs: { perm: [2, 0, 1] } },
  // The step is taken on the fp16 input itself (h is the fp16 distance actually stepped); the gradient is rounded to
  // fp16 once, 2^-11 relative.
  { name: 'Cast fp16 -> fp32', op: 'Cast', inputs: [floats(34, [12], -2, 2, 'fp16')], attrs: { to: 'fp32' }, opts: { eps: 2 ** -6 } },
  { name: 'Attention MHA', op: 'Attention', inputs: [floats(35, [1, 2, 3, 4]), floats(36, [1, 2, 3, 4]), floats(37, [1, 2, 3, 4])], attrs: { causal: false } },
  { name: 'Attention causal GQA, fewer queries than keys', op: 'Attention', inputs: [floats(38, [2, 4, 2, 4]), floats(39, [2, 2, 3, 4]), floats(40, [2, 2, 3, 5])], attrs: { causal: true } },
  { name: 'Attention causal, scale', op: 'Attention', inputs: [floats(41, [1, 2, 4, 4]), floats(42, [1, 1, 4, 4]), floats(43, [1, 1, 4, 4])], attrs: { causal: true, scale: 0.3 } },
  { name: 'Abs', op: 'Abs', inputs: [awayFrom(44, [16], (x) => Math.abs(x))] },
  { name: 'Clip min and max', op: 'Clip', inputs: [awayFrom(45, [16], (x) => Math.min(Math.abs(x + 1), Math.abs(x - 0.5)))], attrs: { min: -1, max: 0.5 } },
  { name: 'Clip min only', op: 'Clip', inputs: [awayFrom(46, [12], (x) => Math.abs(x))], attrs: { min: 0 } },
  { name: 'ReduceMax last axis', op: 'ReduceMax', inputs: [distinct(47, [3, 5])], attrs: { axes: [-1], keepdims: true } },
  { name: 'ReduceMax axes 0, 2 no keepdims', op: 'ReduceMax', inputs: [distinct(48, [3, 2, 4])], attrs: { axes: [0, 2], keepdims: false } },
  { name: 'ReduceMax every axis', op: 'ReduceMax', inputs: [distinct(49, [4, 3])], attrs: { keepdims: false } },
  { name: 'Round (zero)', op: 'Round', inputs: [awayFrom(50, [12], (x) => Math.abs(Math.abs(x % 1) - 0.5), -3, 3)] },
];

export const GRAD_CASES: GradCase[] = [...CORE_GRAD_CASES, ...TENSOR_GRAD_CASES, ...MODEL_GRAD_CASES];

/** Ops with a gradient that no case can check: Constant has no input. */
export const NOT_CHECKABLE: readonly OpName[] = ['Constant'];
