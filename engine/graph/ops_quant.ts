/**
 * The ops quantization is built from (ONNX operator spec, opset 21): Abs, ReduceMax, Round, Clip, and
 * QuantizeLinear / DequantizeLinear with per-tensor or per-axis scales, so that an activation is quantized on the
 * backend as one graph: ReduceMax(Abs(x)) -> scale -> QuantizeLinear. Round's gradient is zero almost everywhere
 * (quantization-aware training replaces it by the straight-through estimator); the others have textbook gradients
 * or are integer-only.
 */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Value } from './graph.ts';
import { unifyDims, type Shape } from './dims.ts';
import { attrNum, dtypeIn, FLOATS, normAxis, req, unaryFloat, type Attrs, type OpSpec } from './infer.ts';
import { op1, scalarLike, zerosLike } from './grad_util.ts';

const CODES: readonly DType[] = ['int8', 'uint8'];

/** The axes ReduceMax reduces, normalized and checked; absent means every axis (ONNX noop_with_empty_axes = 0). */
export function reduceAxes(shape: Shape, axes: Attrs[string] | undefined, op = 'ReduceMax'): number[] {
  const r = shape.length;
  if (axes === undefined) return [...Array(r).keys()];
  if (!Array.isArray(axes) || axes.length === 0) {
    throw new ShapeError(op, [shape], `axes must be a non-empty list of integers (omit it to reduce every axis), got ${JSON.stringify(axes)}`);
  }
  const norm = axes.map((a) => normAxis(op, a as number, r, shape));
  if (new Set(norm).size !== norm.length) throw new ShapeError(op, [shape], `axes ${JSON.stringify(axes)} name an axis twice`);
  return norm.sort((p, q) => p - q);
}

export function keepDims(attrs: Attrs): boolean {
  const k = attrs.keepdims ?? true;
  if (k !== true && k !== false && k !== 0 && k !== 1) throw new ShapeError('ReduceMax', [], `keepdims must be a boolean (or 0/1), got ${JSON.stringify(k)}`);
  return Boolean(k);
}

/**
 * The per-axis layout of a scale against x: null for per-tensor (a scalar or one-element scale, as ONNX and
 * onnxruntime treat [1]), else the normalized axis whose length the 1-D scale must have.
 */
export function scaleAxis(op: string, x: Value, scale: Value, attrs: Attrs): number | null {
  if (attrs.blockSize !== undefined || attrs.block_size !== undefined) {
    throw new ShapeError(op, [x.shape], 'blocked scales are not supported; reshape x to [..., K/B, B] and quantize per axis');
  }
  dtypeIn(op, scale, ['fp32'], 'scale');
  const s = scale.shape;
  if (s.length === 0 || (s.length === 1 && s[0] === 1)) return null;
  if (s.length !== 1) throw new ShapeError(op, [x.shape, s], 'scale must be a scalar (per tensor) or 1-D (per axis)');
  const axis = normAxis(op, attrNum(op, attrs, 'axis', 1), x.shape.length, x.shape);
  unifyDims(op, x.shape[axis], s[0], `x's length along axis ${axis} and a per-axis scale's length`, [x.shape, s]);
  return axis;
}

function zeroPointLike(op: string, zp: Value | null, scale: Value, dtype?: DType): void {
  if (!zp) return;
  dtypeIn(op, zp, dtype ? [dtype] : CODES, 'zero point');
  if (zp.shape.join() !== scale.shape.join()) throw new ShapeError(op, [scale.shape, zp.shape], 'the zero point must have the scale\'s shape');
}

export const QUANT_OPS = {
  Abs: {
    ...unaryFloat('Abs'),
    // dy sign(x), with sign(0) = 0 (the subgradient PyTorch takes).
    grad({ g, inputs: [x], dy: [d] }) {
      const zero = scalarLike(g, x!, 0);
      const sign = op1(g, 'Where', [op1(g, 'Less', [x, zero]), scalarLike(g, x!, -1), op1(g, 'Where', [op1(g, 'Less', [zero, x]), scalarLike(g, x!, 1), zero])]);
      return [op1(g, 'Mul', [d, sign])];
    },
  },

  /** Max over `axes` (all when absent); keepdims (default true) keeps reduced axes as length 1. */
  ReduceMax: {
    infer(inputs, attrs) {
      const [x] = req('ReduceMax', inputs, 1);
      dtypeIn('ReduceMax', x, FLOATS);
      const axes = reduceAxes(x.shape, attrs.axes);
      const keep = keepDims(attrs);
      for (const a of axes) if (x.shape[a] === 0) throw new ShapeError('ReduceMax', [x.shape], `axis ${a} has length 0: the max of nothing is undefined`);
      const shape = x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
      return [{ dtype: x.dtype, shape }];
    },
    // dy goes to the elements equal to the max, shared evenly among ties (as TensorFlow and torch.amax do).
    grad({ g, inputs: [x], outputs: [y], attrs, dy: [d] }) {
      const axes = reduceAxes(x!.shape, attrs.axes);
      const kept = x!.shape.map((s, i) => (axes.includes(i) ? 1 : s));
      const unsqueeze = (v: Value) => (keepDims(attrs) ? v : op1(g, 'Reshape', [v], { shape: kept }));
      const hit = op1(g, 'Where', [op1(g, 'Equal', [x, unsqueeze(y)]), scalarLike(g, x!, 1), zerosLike(g, x!)]);
      const count = op1(g, 'ReduceSum', [hit], { axes, keepdims: true });
      return [op1(g, 'Mul', [hit, op1(g, 'Div', [unsqueeze(d!), count])])];
    },
  },

  /**
   * Round half to even (ONNX Round; 2.5 -> 2, -3.5 -> -4). Its gradient is the true one, zero (it is a step
   * function); quantization-aware training instead passes dy through unchanged (the straight-through estimator,
   * Bengio et al. 2013): PyTorch writes it x + (round(x) - x).detach(), here the rounding error round(x) - x would be
   * fed as an input that is not a param.
   */
  Round: { ...unaryFloat('Round'), grad: ({ g, inputs: [x] }) => [zerosLike(g, x!)] },

  /** Clamp to [min, max]; either bound may be absent. Bounds are attributes here, inputs in ONNX (lowered as constants). */
  Clip: {
    infer(inputs, attrs) {
      const [x] = req('Clip', inputs, 1);
      dtypeIn('Clip', x, FLOATS);
      const lo = attrs.min === undefined ? -Infinity : attrNum('Clip', attrs, 'min');
      const hi = attrs.max === undefined ? Infinity : attrNum('Clip', attrs, 'max');
      if (lo > hi) throw new ShapeError('Clip', [x.shape], `min ${lo} is above max ${hi}`);
      return [{ dtype: x.dtype, shape: x.shape }];
    },
    // dy where min <= x <= max (bounds included, as PyTorch), 0 where the clamp is active.
    grad({ g, inputs: [x], attrs, dy: [d] }) {
      let dx = d!;
      const zero = scalarLike(g, d!, 0);
      if (attrs.min !== undefined) dx = op1(g, 'Where', [op1(g, 'Less', [x, scalarLike(g, x!, attrs.min as number)]), zero, dx]);
      if (attrs.max !== undefined) dx = op1(g, 'Where', [op1(g, 'Less', [scalarLike(g, x!, attrs.max as number), x]), zero, dx]);
      return [dx];
    },
  },

  /**
   * y = saturate(roundHalfEven(x / scale) + zeroPoint), the division in fp32. The codes take the zero point's dtype,
   * or `outputDtype` (default uint8, as ONNX) when there is none. Scale and zero point: scalar, or 1-D along `axis`
   * (default 1, as ONNX).
   */
  QuantizeLinear: {
    optional: [2],
    infer(inputs, attrs) {
      const op = 'QuantizeLinear';
      const [x, scale, zp] = req(op, inputs, 3, [2]);
      dtypeIn(op, x, ['fp32'], 'x');
      scaleAxis(op, x, scale, attrs);
      const want = attrs.outputDtype as DType | undefined;
      if (want !== undefined && !CODES.includes(want)) throw new DTypeError(op, [String(want)], 'outputDtype must be one of int8/uint8');
      zeroPointLike(op, zp, scale, want);
      return [{ dtype: zp?.dtype ?? want ?? 'uint8', shape: x.shape }];
    },
  },

  /**
   * A [..., K] fp32 times a bitsandbytes 4-bit weight (onnxruntime's com.microsoft MatMulBnb4): B holds the codes of
   * W^T [N, K] flattened, two per byte with the FIRST element in the HIGH nibble, uint8 [ceil(N K / 2)]; absmax fp32
   * [ceil(N K / blockSize)] scales each block of blockSize consecutive codes (a block may span two rows of W^T).
   * quantType 0 is FP4, 1 is NF4 (bitsandbytes' tables). blockSize is 16, 32, 64, 128 or 256 (the kernel's list).
   * Weight-only: the kernel dequantizes W to fp32 and runs an fp32 GEMM.
   */
  MatMulBnb4: {
    infer(inputs, attrs) {
      const op = 'MatMulBnb4';
      const [a, b, absmax] = req(op, inputs, 3);
      const K = attrNum(op, attrs, 'K');
      const N = attrNum(op, attrs, 'N');
      const bs = attrNum(op, attrs, 'blockSize', 64);
      const qt = attrNum(op, attrs, 'quantType', 1);
      if (!Number.isSafeInteger(K) || !Number.isSafeInteger(N) || K < 1 || N < 1) throw new ShapeError(op, [], `K and N must be positive integers, got K=${K}, N=${N}`);
      if (qt !== 0 && qt !== 1) throw new ShapeError(op, [], `quantType must be 0 (FP4) or 1 (NF4), got ${qt}`);
      if (![16, 32, 64, 128, 256].includes(bs)) throw new ShapeError(op, [], `blockSize must be one of 16, 32, 64, 128, 256, got ${bs}`);
      dtypeIn(op, a, ['fp32'], 'A');
      dtypeIn(op, b, ['uint8'], 'B (packed codes)');
      dtypeIn(op, absmax, ['fp32'], 'absmax');
      if (a.shape.length < 1) throw new ShapeError(op, [a.shape], `A must end in K=${K}`);
      unifyDims(op, a.shape[a.shape.length - 1], K, `A's last dimension and K=${K}`, [a.shape]);
      if (b.shape.length !== 1 || b.shape[0] !== Math.ceil((N * K) / 2)) throw new ShapeError(op, [b.shape], `B must have shape [${Math.ceil((N * K) / 2)}] (ceil(N K / 2))`);
      const nb = Math.ceil((N * K) / bs);
      if (absmax.shape.length !== 1 || absmax.shape[0] !== nb) throw new ShapeError(op, [absmax.shape], `absmax must have shape [${nb}] (ceil(N K / blockSize))`);
      return [{ dtype: 'fp32', shape: [...a.shape.slice(0, -1), N] }];
    },
  },

  /** y = (x - zeroPoint) * scale in fp32; scale and zero point laid out as for QuantizeLinear. */
  DequantizeLinear: {
    optional: [2],
    infer(inputs, attrs) {
      const op = 'DequantizeLinear';
      const [x, scale, zp] = req(op, inputs, 3, [2]);
      dtypeIn(op, x, CODES, 'x');
      scaleAxis(op, x, scale, attrs);
      zeroPointLike(op, zp, scale, x.dtype);
      return [{ dtype: 'fp32', shape: x.shape }];
    },
  },
} satisfies Record<string, OpSpec>;
