/**
 * The op suite's cases: each runs on a backend and on the reference backend from the same inputs, and the results
 * must agree within the dtype's tolerance. Plain data and functions, used by the vitest suite and by the GPU check.
 */
import { apply, createDevice, pack4, type Device, type DType, type OpName, type Attrs, type Tensor } from '../engine/index.ts';
import { ints, rng, uniform } from './random.ts';
import { TENSOR_CASES } from './op_cases_tensor.ts';
import { MODEL_CASES } from './op_cases_model.ts';

/**
 * Tolerances per dtype, |got - want| <= atol + rtol * |want|. fp32: both sides accumulate differently (fp32 FMA
 * vs float64), so allow a few ulps times sqrt(K). fp16/bf16: both compute in fp32 and round once, so they may
 * land one ulp apart when the fp32 values straddle a rounding boundary (fp16 ulp 2^-10, bf16 2^-7 relative).
 * Integers: exact.
 */
export const TOL: Record<DType, { atol: number; rtol: number }> = {
  fp32: { atol: 1e-5, rtol: 1e-4 },
  fp16: { atol: 1e-3, rtol: 2 ** -9 },
  bf16: { atol: 1e-2, rtol: 2 ** -6 },
  int8: { atol: 0, rtol: 0 },
  uint8: { atol: 0, rtol: 0 },
  int32: { atol: 0, rtol: 0 },
  int4: { atol: 0, rtol: 0 },
  nf4: { atol: 0, rtol: 0 },
  bool: { atol: 0, rtol: 0 },
};

type Gen = { dtype: DType; shape: number[]; values: number[] | null };
export interface OpCase {
  name: string;
  op: OpName;
  inputs: Gen[];
  attrs?: Attrs;
  /** Looser tolerance for a stated reason (e.g. the quantization step of a dynamic-quantized input). */
  tol?: Partial<Record<DType, { atol: number; rtol: number }>>;
}

const numel = (s: number[]) => s.reduce((p, d) => p * d, 1);

function floats(seed: number, dtype: DType, shape: number[], lo = -2, hi = 2): Gen {
  return { dtype, shape, values: uniform(rng(seed), numel(shape), lo, hi) };
}
function integers(seed: number, dtype: DType, shape: number[], lo: number, hi: number): Gen {
  return { dtype, shape, values: ints(rng(seed), numel(shape), lo, hi) };
}
const absent: Gen = { dtype: 'fp32', shape: [], values: null };

/** A random 4-bit weight in MatMulBnb4 layout: codes of W^T [N, K] flat, two per byte, absmax per block of bs. */
function bnb4(seed: number, K: number, N: number, bs: number): Gen[] {
  const r = rng(seed);
  const nb = Math.ceil((N * K) / bs);
  return [
    { dtype: 'uint8', shape: [Math.ceil((N * K) / 2)], values: ints(r, Math.ceil((N * K) / 2), 0, 255) },
    { dtype: 'fp32', shape: [nb], values: uniform(r, nb, 0.05, 2) },
  ];
}

/** A random 4-bit weight in MatMulNBits layout: codes [N, K/bs, bs/2], scales [N*K/bs], zero points packed. */
function nbits(seed: number, K: number, N: number, bs: number, withZp: boolean): Gen[] {
  const r = rng(seed);
  const nb = K / bs;
  const codes = pack4(Uint8Array.from(ints(r, N * K, 0, 15)));
  const zps = pack4(Uint8Array.from(ints(r, N * nb, 0, 15).flatMap((z, i) => (i % nb === nb - 1 && nb % 2 === 1 ? [z, 0] : [z])).slice(0, N * Math.ceil(nb / 2) * 2)));
  return [
    { dtype: 'uint8', shape: [N, nb, bs / 2], values: Array.from(codes) },
    { dtype: 'fp32', shape: [N * nb], values: uniform(r, N * nb, 0.01, 0.1) },
    withZp ? { dtype: 'uint8', shape: [N * Math.ceil(nb / 2)], values: Array.from(zps) } : absent,
  ];
}

/** Quarter steps from -4 to 4: with a scale of 0.5 every odd one is an exact .5 tie for QuantizeLinear's rounding. */
const quarters = (shape: number[]): Gen => ({ dtype: 'fp32', shape, values: Array.from({ length: numel(shape) }, (_, i) => -4 + (i % 33) * 0.25) });
const scalar = (dtype: DType, v: number): Gen => ({ dtype, shape: [], values: [v] });

/** The ops activations are quantized with on the backend: ReduceMax(Abs(x)) -> scale -> QuantizeLinear. */
const QUANT_CASES: OpCase[] = [
  { name: 'Abs', op: 'Abs', inputs: [floats(80, 'fp32', [5, 7], -3, 3)] },
  { name: 'Abs fp16', op: 'Abs', inputs: [floats(81, 'fp16', [40], -3, 3)] },
  { name: 'ReduceMax last axis keepdims', op: 'ReduceMax', inputs: [floats(82, 'fp32', [6, 33])], attrs: { axes: [-1], keepdims: true } },
  { name: 'ReduceMax axes 0,2 no keepdims', op: 'ReduceMax', inputs: [floats(83, 'fp32', [3, 4, 5])], attrs: { axes: [0, 2], keepdims: false } },
  { name: 'ReduceMax every axis', op: 'ReduceMax', inputs: [floats(84, 'fp32', [4, 9])], attrs: { keepdims: false } },
  { name: 'ReduceMax fp16 axis 0', op: 'ReduceMax', inputs: [floats(85, 'fp16', [7, 3])], attrs: { axes: [0] } },
  { name: 'Round half to even', op: 'Round', inputs: [{ dtype: 'fp32', shape: [12], values: [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -3.5, 0.49999997, 2.5000002, 1e7 + 0.5, -7.3] }] },
  { name: 'Round random', op: 'Round', inputs: [floats(86, 'fp32', [50], -20, 20)] },
  { name: 'Round fp16', op: 'Round', inputs: [{ dtype: 'fp16', shape: [6], values: [-2.5, 0.5, 1.5, 2.5, 1000.5, -7.3] }] },
  { name: 'Clip min and max', op: 'Clip', inputs: [floats(87, 'fp32', [4, 8], -3, 3)], attrs: { min: -1, max: 1.5 } },
  { name: 'Clip min only (a scale floor)', op: 'Clip', inputs: [{ dtype: 'fp32', shape: [4], values: [0, 1e-40, 2, -1] }], attrs: { min: 2 ** -126 } },
  { name: 'Clip max only fp16', op: 'Clip', inputs: [floats(88, 'fp16', [16], -3, 3)], attrs: { max: 0.1 } },
  { name: 'QuantizeLinear per tensor int8 ties', op: 'QuantizeLinear', inputs: [quarters([33]), scalar('fp32', 0.5), scalar('int8', -3)] },
  { name: 'QuantizeLinear per tensor uint8 saturating', op: 'QuantizeLinear', inputs: [floats(89, 'fp32', [4, 6], -50, 300), scalar('fp32', 0.9), absent] },
  { name: 'QuantizeLinear per axis 0 int8 (rows)', op: 'QuantizeLinear', inputs: [floats(90, 'fp32', [3, 16], -2, 2), floats(91, 'fp32', [3], 0.005, 0.02), absent], attrs: { axis: 0, outputDtype: 'int8' } },
  { name: 'QuantizeLinear per axis 1 uint8 zero points (columns)', op: 'QuantizeLinear', inputs: [floats(92, 'fp32', [5, 4], -2, 2), floats(93, 'fp32', [4], 0.01, 0.03), integers(94, 'uint8', [4], 0, 255)], attrs: { axis: 1 } },
  { name: 'QuantizeLinear per axis -1 of 3-D, scale [1]', op: 'QuantizeLinear', inputs: [quarters([2, 3, 11]), { dtype: 'fp32', shape: [1], values: [0.5] }, { dtype: 'int8', shape: [1], values: [0] }], attrs: { axis: -1 } },
  { name: 'DequantizeLinear per tensor int8', op: 'DequantizeLinear', inputs: [integers(95, 'int8', [4, 5], -128, 127), scalar('fp32', 0.0123), absent] },
  { name: 'DequantizeLinear per tensor uint8 zero point', op: 'DequantizeLinear', inputs: [integers(96, 'uint8', [20], 0, 255), scalar('fp32', 0.37), scalar('uint8', 131)] },
  { name: 'DequantizeLinear per axis 0 int8 zero points', op: 'DequantizeLinear', inputs: [integers(97, 'int8', [3, 8], -128, 127), floats(98, 'fp32', [3], 0.01, 0.1), integers(99, 'int8', [3], -20, 20)], attrs: { axis: 0 } },
  { name: 'DequantizeLinear per axis 1 uint8', op: 'DequantizeLinear', inputs: [integers(100, 'uint8', [4, 6], 0, 255), floats(101, 'fp32', [6], 0.01, 0.1), absent], attrs: { axis: 1 } },
];

export const CASES: OpCase[] = [
  { name: 'MatMul fp32 2-D', op: 'MatMul', inputs: [floats(1, 'fp32', [7, 13]), floats(2, 'fp32', [13, 5])] },
  { name: 'MatMul fp32 K=512', op: 'MatMul', inputs: [floats(3, 'fp32', [16, 512]), floats(4, 'fp32', [512, 24])] },
  { name: 'MatMul fp32 batched x 2-D', op: 'MatMul', inputs: [floats(5, 'fp32', [2, 3, 4, 5]), floats(6, 'fp32', [5, 6])] },
  { name: 'MatMul fp32 broadcast batch', op: 'MatMul', inputs: [floats(7, 'fp32', [2, 1, 3, 4]), floats(8, 'fp32', [3, 4, 2])] },
  // A native fp16 GEMM may round its running sum to fp16 (the WebGPU provider's shader measurably does; emulated
  // fp16 rounds only the fp32 result). With K = 32 terms of E|ab| = 1 the sum's error grows like
  // sqrt(K) * 2^-11 * sum|ab| ~ 0.09 at worst in practice; 0.006 was measured on lavapipe.
  { name: 'MatMul fp16', op: 'MatMul', inputs: [floats(9, 'fp16', [16, 32]), floats(10, 'fp16', [32, 8])], tol: { fp16: { atol: 0.05, rtol: 2 ** -9 } } },
  { name: 'MatMul bf16', op: 'MatMul', inputs: [floats(11, 'bf16', [16, 32]), floats(12, 'bf16', [32, 8])] },
  { name: 'MatMulInteger int8 x int8', op: 'MatMulInteger', inputs: [integers(13, 'int8', [8, 64], -127, 127), integers(14, 'int8', [64, 4], -127, 127), absent, absent] },
  {
    name: 'MatMulInteger uint8 x uint8 with zero points',
    op: 'MatMulInteger',
    inputs: [integers(15, 'uint8', [5, 32], 0, 255), integers(16, 'uint8', [32, 6], 0, 255), { dtype: 'uint8', shape: [], values: [128] }, { dtype: 'uint8', shape: [], values: [3] }],
  },
  { name: 'MatMulInteger uint8 x int8', op: 'MatMulInteger', inputs: [integers(17, 'uint8', [4, 16], 0, 255), integers(18, 'int8', [16, 3], -128, 127), { dtype: 'uint8', shape: [], values: [7] }, absent] },
  // One code step of difference is allowed: x/scale landing within an fp32 ulp of .5 may round either way.
  { name: 'DynamicQuantizeLinear', op: 'DynamicQuantizeLinear', inputs: [floats(19, 'fp32', [6, 10], -3, 5)], tol: { uint8: { atol: 1, rtol: 0 } } },
  { name: 'DynamicQuantizeLinear all zeros', op: 'DynamicQuantizeLinear', inputs: [{ dtype: 'fp32', shape: [2, 3], values: [0, 0, 0, 0, 0, 0] }] },
  { name: 'MatMulNBits', op: 'MatMulNBits', inputs: [floats(20, 'fp32', [3, 64]), ...nbits(21, 64, 8, 32, false)], attrs: { K: 64, N: 8, blockSize: 32, bits: 4 } },
  { name: 'MatMulNBits zero points', op: 'MatMulNBits', inputs: [floats(22, 'fp32', [2, 96]), ...nbits(23, 96, 5, 32, true)], attrs: { K: 96, N: 5, blockSize: 32, bits: 4 } },
  { name: 'MatMulBnb4 nf4', op: 'MatMulBnb4', inputs: [floats(120, 'fp32', [3, 64]), ...bnb4(121, 64, 6, 64)], attrs: { K: 64, N: 6, blockSize: 64, quantType: 1 } },
  // Blocks span rows of W^T (N K = 200 is not a multiple of K or of 64) and the last block is partial.
  { name: 'MatMulBnb4 nf4 blocks across rows', op: 'MatMulBnb4', inputs: [floats(122, 'fp32', [2, 2, 40]), ...bnb4(123, 40, 5, 64)], attrs: { K: 40, N: 5, blockSize: 64, quantType: 1 } },
  // N K = 27 is odd: the last byte's low nibble is padding.
  { name: 'MatMulBnb4 fp4 odd count', op: 'MatMulBnb4', inputs: [floats(124, 'fp32', [4, 9]), ...bnb4(125, 9, 3, 16)], attrs: { K: 9, N: 3, blockSize: 16, quantType: 0 } },
  { name: 'Add broadcast', op: 'Add', inputs: [floats(24, 'fp32', [3, 1, 4]), floats(25, 'fp32', [5, 1])] },
  { name: 'Sub', op: 'Sub', inputs: [floats(26, 'fp32', [4, 4]), floats(27, 'fp32', [4])] },
  { name: 'Mul fp16', op: 'Mul', inputs: [floats(28, 'fp16', [8, 8]), floats(29, 'fp16', [8, 8])] },
  { name: 'Div', op: 'Div', inputs: [floats(30, 'fp32', [3, 5]), floats(31, 'fp32', [3, 5], 0.5, 2)] },
  { name: 'Add bf16', op: 'Add', inputs: [floats(32, 'bf16', [4, 6]), floats(33, 'bf16', [6])] },
  { name: 'Softmax last axis', op: 'Softmax', inputs: [floats(34, 'fp32', [4, 17], -8, 8)], attrs: { axis: -1 } },
  { name: 'Softmax axis 0', op: 'Softmax', inputs: [floats(35, 'fp32', [5, 3], -8, 8)], attrs: { axis: 0 } },
  { name: 'Softmax fp16', op: 'Softmax', inputs: [floats(36, 'fp16', [3, 32], -4, 4)], attrs: { axis: -1 } },
  { name: 'LayerNormalization', op: 'LayerNormalization', inputs: [floats(37, 'fp32', [3, 4, 16]), floats(38, 'fp32', [16]), floats(39, 'fp32', [16])], attrs: { epsilon: 1e-5 } },
  { name: 'LayerNormalization no bias', op: 'LayerNormalization', inputs: [floats(40, 'fp32', [5, 8]), floats(41, 'fp32', [8]), absent], attrs: { epsilon: 1e-3 } },
  { name: 'RMSNorm', op: 'RMSNorm', inputs: [floats(42, 'fp32', [4, 32]), floats(43, 'fp32', [32])], attrs: { epsilon: 1e-6 } },
  { name: 'RMSNorm fp16', op: 'RMSNorm', inputs: [floats(44, 'fp16', [4, 32]), floats(45, 'fp16', [32])], attrs: { epsilon: 1e-6 } },
  { name: 'Gelu erf', op: 'Gelu', inputs: [floats(46, 'fp32', [64], -5, 5)], attrs: { approximate: 'none' } },
  { name: 'Gelu tanh', op: 'Gelu', inputs: [floats(47, 'fp32', [64], -5, 5)], attrs: { approximate: 'tanh' } },
  { name: 'SiLU', op: 'SiLU', inputs: [floats(48, 'fp32', [3, 21], -6, 6)] },
  { name: 'Sigmoid', op: 'Sigmoid', inputs: [floats(49, 'fp32', [40], -10, 10)] },
  { name: 'Gather rows (embedding)', op: 'Gather', inputs: [floats(50, 'fp32', [10, 4]), { dtype: 'int32', shape: [2, 3], values: [0, 9, 3, 3, 1, -1] }], attrs: { axis: 0 } },
  { name: 'Gather axis 1', op: 'Gather', inputs: [floats(51, 'fp32', [3, 5, 2]), { dtype: 'int32', shape: [2], values: [4, 0] }], attrs: { axis: 1 } },
  { name: 'Gather fp16', op: 'Gather', inputs: [floats(52, 'fp16', [6, 3]), { dtype: 'int32', shape: [2], values: [5, 2] }], attrs: { axis: 0 } },
  { name: 'Reshape', op: 'Reshape', inputs: [floats(53, 'fp32', [2, 3, 4])], attrs: { shape: [4, -1] } },
  { name: 'Transpose', op: 'Transpose', inputs: [floats(54, 'fp32', [2, 3, 4])], attrs: { perm: [2, 0, 1] } },
  { name: 'Transpose int8', op: 'Transpose', inputs: [integers(55, 'int8', [3, 5], -100, 100)], attrs: { perm: [1, 0] } },
  { name: 'Cast fp32 -> fp16', op: 'Cast', inputs: [floats(56, 'fp32', [32], -70000, 70000)], attrs: { to: 'fp16' } },
  { name: 'Cast fp32 -> bf16', op: 'Cast', inputs: [floats(57, 'fp32', [32], -1e5, 1e5)], attrs: { to: 'bf16' } },
  { name: 'Cast fp16 -> fp32', op: 'Cast', inputs: [floats(58, 'fp16', [32])], attrs: { to: 'fp32' } },
  { name: 'Cast int8 -> int32', op: 'Cast', inputs: [integers(59, 'int8', [16], -128, 127)], attrs: { to: 'int32' } },
  { name: 'Cast int32 -> fp32', op: 'Cast', inputs: [integers(60, 'int32', [16], -100000, 100000)], attrs: { to: 'fp32' } },
  { name: 'Attention MHA', op: 'Attention', inputs: [floats(61, 'fp32', [1, 2, 3, 8]), floats(62, 'fp32', [1, 2, 3, 8]), floats(63, 'fp32', [1, 2, 3, 8])], attrs: { causal: false } },
  { name: 'Attention causal GQA', op: 'Attention', inputs: [floats(64, 'fp32', [2, 4, 3, 8]), floats(65, 'fp32', [2, 2, 5, 8]), floats(66, 'fp32', [2, 2, 5, 8])], attrs: { causal: true } },
  { name: 'Attention decode step', op: 'Attention', inputs: [floats(67, 'fp32', [1, 4, 1, 16]), floats(68, 'fp32', [1, 1, 7, 16]), floats(69, 'fp32', [1, 1, 7, 16])], attrs: { causal: true, scale: 0.1 } },
  { name: 'Attention fp16', op: 'Attention', inputs: [floats(70, 'fp16', [1, 2, 4, 8]), floats(71, 'fp16', [1, 2, 4, 8]), floats(72, 'fp16', [1, 2, 4, 8])], attrs: { causal: true } },
  ...QUANT_CASES,
  ...TENSOR_CASES,
  ...MODEL_CASES,
];

function make(dev: Device, g: Gen): Tensor | null {
  return g.values === null ? null : dev.tensor(g.values, g.shape, g.dtype);
}

/** The first element outside tolerance, described, or null when every element agrees. */
export function mismatch(got: Tensor, want: Tensor, tol = TOL[want.dtype]): string | null {
  if (got.dtype !== want.dtype) return `dtype ${got.dtype}, reference ${want.dtype}`;
  if (got.shape.join() !== want.shape.join()) return `shape [${got.shape}], reference [${want.shape}]`;
  const g = got.toFloat32();
  const w = want.toFloat32();
  for (let i = 0; i < w.length; i++) {
    const ok = Number.isNaN(w[i]) ? Number.isNaN(g[i]) : !Number.isFinite(w[i]) ? g[i] === w[i] : Math.abs(g[i] - w[i]) <= tol.atol + tol.rtol * Math.abs(w[i]);
    if (!ok) return `element ${i} is ${g[i]}, reference ${w[i]} (tolerance atol ${tol.atol}, rtol ${tol.rtol})`;
  }
  return null;
}

/** Largest |got - want| over the elements, for reports. */
export function maxAbsError(got: Tensor, want: Tensor): number {
  const g = got.toFloat32();
  const w = want.toFloat32();
  let m = 0;
  for (let i = 0; i < w.length; i++) if (Number.isFinite(w[i])) m = Math.max(m, Math.abs(g[i] - w[i]));
  return m;
}

export interface CaseResult {
  name: string;
  ok: boolean;
  detail: string | null;
  maxAbsError: number;
}

/** Runs one case on `dev` and on `ref`; outputs are disposed afterwards. */
export async function runCase(c: OpCase, dev: Device, ref: Device): Promise<CaseResult> {
  const got = await apply(c.op, c.inputs.map((g) => make(dev, g)), c.attrs ?? {});
  const want = await apply(c.op, c.inputs.map((g) => make(ref, g)), c.attrs ?? {});
  let detail: string | null = got.length === want.length ? null : `${got.length} outputs, reference ${want.length}`;
  let err = 0;
  want.forEach((w, i) => {
    if (detail || !got[i]) return;
    const m = mismatch(got[i], w, c.tol?.[w.dtype] ?? TOL[w.dtype]);
    if (m) detail = `output ${i}: ${m}`;
    err = Math.max(err, maxAbsError(got[i], w));
  });
  for (const t of [...got, ...want]) t.dispose();
  return { name: c.name, ok: detail === null, detail, maxAbsError: err };
}

export { createDevice };
