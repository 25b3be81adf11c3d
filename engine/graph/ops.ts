/**
 * The engine's op set (names and semantics from the ONNX operator spec, plus RMSNorm, SiLU and Attention from the
 * Llama family): shape and dtype inference, so a bad call fails with a typed error before any kernel runs.
 * Every op is differentiable with a textbook gradient or is integer-only (quantization), which keeps reverse-mode
 * training over this same set possible.
 */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Value } from './graph.ts';
import { attrNum, binaryFloat, dtypeIn, FLOATS, matmulShape, normAxis, req, sameDType, unaryFloat, type AttrValue, type OpSpec, type ValueType } from './infer.ts';
import { dimDivide, dimProduct, sameDim, unifyDims, type Dim, type Shape } from './dims.ts';
import { QUANT_OPS } from './ops_quant.ts';
import { TENSOR_OPS } from './ops_tensor.ts';
import { MODEL_OPS } from './ops_model.ts';
import { invertPerm, op1, scalarLike, sumTo, swapLast } from './grad_util.ts';
import { normGrad } from './grad_norm.ts';
import { attentionGrad } from './grad_attention.ts';
import { geluSlope, geluTanhSlope } from './grad_gelu.ts';
import { gatherGrad } from './grad_gather.ts';

export { broadcastShapes, FLOATS, normAxis, type AttrValue, type Attrs, type GradContext, type OpSpec, type ValueType } from './infer.ts';

// ---- the op set -----------------------------------------------------------------------------------

export const OPS = {
  MatMul: {
    infer(inputs) {
      const [a, b] = req('MatMul', inputs, 2);
      const d = sameDType('MatMul', [a, b]);
      dtypeIn('MatMul', a, FLOATS, 'operands');
      return [{ dtype: d, shape: matmulShape('MatMul', a.shape, b.shape) }];
    },
    // C = A B: dA = dC B^T, dB = A^T dC, each summed over the batch dims it was broadcast along.
    grad({ g, inputs: [a, b], dy: [dc] }) {
      return [sumTo(g, op1(g, 'MatMul', [dc, swapLast(g, b!)]), a!.shape), sumTo(g, op1(g, 'MatMul', [swapLast(g, a!), dc]), b!.shape)];
    },
  },

  /** A literal: `value` of `dtype`, filling `shape` (default a scalar). Gradients use it for their constants. */
  Constant: {
    infer(inputs, attrs) {
      if (inputs.length !== 0) throw new ShapeError('Constant', [], 'takes no inputs');
      const value = attrs.value;
      if (typeof value !== 'number' || Number.isNaN(value)) throw new ShapeError('Constant', [], `value must be a number, got ${JSON.stringify(value)}`);
      const dtype = (attrs.dtype ?? 'fp32') as DType;
      if (![...FLOATS, 'int32'].includes(dtype)) throw new DTypeError('Constant', [String(dtype)], 'dtype must be fp32/fp16/bf16/int32');
      const shape = (attrs.shape ?? []) as readonly number[];
      if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new ShapeError('Constant', [], `shape must be sizes, got ${JSON.stringify(shape)}`);
      return [{ dtype, shape }];
    },
    grad: () => [],
  },

  /** int8/uint8 operands, optional scalar zero points, exact int32 accumulation. */
  MatMulInteger: {
    optional: [2, 3],
    infer(inputs) {
      const [a, b, az, bz] = req('MatMulInteger', inputs, 4, [2, 3]);
      dtypeIn('MatMulInteger', a, ['int8', 'uint8'], 'A');
      dtypeIn('MatMulInteger', b, ['int8', 'uint8'], 'B');
      for (const [z, of] of [[az, a], [bz, b]] as const) {
        if (!z) continue;
        if (z.dtype !== of.dtype) throw new DTypeError('MatMulInteger', [z.dtype, of.dtype], 'a zero point must have its operand\'s dtype');
        if (z.shape.length !== 0) throw new ShapeError('MatMulInteger', [z.shape], 'zero points must be scalars (per-tensor)');
      }
      return [{ dtype: 'int32', shape: matmulShape('MatMulInteger', a.shape, b.shape) }];
    },
  },

  /** fp32 -> (uint8 y, fp32 scale, uint8 zeroPoint) over the tensor's [min(0,x), max(0,x)] range. */
  DynamicQuantizeLinear: {
    infer(inputs) {
      const [x] = req('DynamicQuantizeLinear', inputs, 1);
      dtypeIn('DynamicQuantizeLinear', x, ['fp32']);
      return [
        { dtype: 'uint8', shape: x.shape },
        { dtype: 'fp32', shape: [] },
        { dtype: 'uint8', shape: [] },
      ];
    },
  },

  /**
   * A [..., K] fp32 times a 4-bit block-quantized B^T: packed codes uint8 [N, K/blockSize, blockSize/2],
   * scales fp32 [N * K/blockSize], optional packed zero points uint8 [N * ceil((K/blockSize)/2)] (default 8).
   * Layout as in onnxruntime's com.microsoft MatMulNBits. accuracyLevel (0-4) is the precision the kernel may
   * compute A in: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (A quantized per block on the fly; fastest on CPUs with
   * VNNI, and the result is then no longer the exact fp32 product of A and the dequantized weight).
   */
  MatMulNBits: {
    optional: [3],
    infer(inputs, attrs) {
      const op = 'MatMulNBits';
      const [a, b, scales, zp] = req(op, inputs, 4, [3]);
      const K = attrNum(op, attrs, 'K');
      const N = attrNum(op, attrs, 'N');
      const bs = attrNum(op, attrs, 'blockSize', 32);
      if (attrNum(op, attrs, 'bits', 4) !== 4) throw new ShapeError(op, [], 'only bits=4 is supported');
      const acc = attrNum(op, attrs, 'accuracyLevel', 0);
      if (!Number.isInteger(acc) || acc < 0 || acc > 4) throw new ShapeError(op, [], `accuracyLevel must be 0..4, got ${acc}`);
      if (bs < 16 || (bs & (bs - 1)) !== 0) throw new ShapeError(op, [], `blockSize must be a power of two >= 16, got ${bs}`);
      dtypeIn(op, a, ['fp32'], 'A');
      dtypeIn(op, b, ['uint8'], 'B (packed codes)');
      dtypeIn(op, scales, ['fp32'], 'scales');
      if (a.shape.length < 1) throw new ShapeError(op, [a.shape], `A must end in K=${K}`);
      unifyDims(op, a.shape[a.shape.length - 1], K, `A's last dimension and K=${K}`, [a.shape]);
      if (K % bs !== 0) throw new ShapeError(op, [a.shape], `K=${K} must be a multiple of blockSize=${bs}`);
      const nb = K / bs;
      const want = [N, nb, bs / 2];
      if (b.shape.join() !== want.join()) throw new ShapeError(op, [b.shape, want], `B must have shape [N, K/blockSize, blockSize/2]`);
      if (scales.shape.length !== 1 || scales.shape[0] !== N * nb) throw new ShapeError(op, [scales.shape], `scales must have shape [${N * nb}]`);
      if (zp) {
        dtypeIn(op, zp, ['uint8'], 'zero points');
        if (zp.shape.length !== 1 || zp.shape[0] !== N * Math.ceil(nb / 2)) throw new ShapeError(op, [zp.shape], `zero points must have shape [${N * Math.ceil(nb / 2)}]`);
      }
      return [{ dtype: 'fp32', shape: [...a.shape.slice(0, -1), N] }];
    },
  },

  Add: { ...binaryFloat('Add'), grad: ({ g, inputs: [a, b], dy: [d] }) => [sumTo(g, d!, a!.shape), sumTo(g, d!, b!.shape)] },
  Sub: {
    ...binaryFloat('Sub'),
    grad: ({ g, inputs: [a, b], dy: [d] }) => [sumTo(g, d!, a!.shape), sumTo(g, op1(g, 'Mul', [d, scalarLike(g, d!, -1)]), b!.shape)],
  },
  Mul: {
    ...binaryFloat('Mul'),
    grad: ({ g, inputs: [a, b], dy: [d] }) => [sumTo(g, op1(g, 'Mul', [d, b]), a!.shape), sumTo(g, op1(g, 'Mul', [d, a]), b!.shape)],
  },
  // y = a / b: da = dy / b, db = -dy y / b.
  Div: {
    ...binaryFloat('Div'),
    grad: ({ g, inputs: [a, b], outputs: [y], dy: [d] }) => {
      const db = op1(g, 'Div', [op1(g, 'Mul', [op1(g, 'Mul', [d, y]), scalarLike(g, d!, -1)]), b]);
      return [sumTo(g, op1(g, 'Div', [d, b]), a!.shape), sumTo(g, db, b!.shape)];
    },
  },

  Softmax: {
    infer(inputs, attrs) {
      const [x] = req('Softmax', inputs, 1);
      dtypeIn('Softmax', x, FLOATS);
      normAxis('Softmax', attrNum('Softmax', attrs, 'axis', -1), x.shape.length, x.shape);
      return [{ dtype: x.dtype, shape: x.shape }];
    },
    // dx = y (dy - sum(dy y)) along the axis: the Jacobian diag(y) - y y^T applied to dy.
    grad({ g, outputs: [y], attrs, dy: [d] }) {
      const dot = op1(g, 'ReduceSum', [op1(g, 'Mul', [d, y])], { axes: [attrNum('Softmax', attrs, 'axis', -1)], keepdims: true });
      return [op1(g, 'Mul', [y, op1(g, 'Sub', [d, dot])])];
    },
  },

  /** Over the last axis: (x - mean) / sqrt(var + epsilon) * scale + bias. */
  LayerNormalization: {
    optional: [2],
    infer(inputs, attrs) {
      const op = 'LayerNormalization';
      const [x, scale, bias] = req(op, inputs, 3, [2]);
      attrNum(op, attrs, 'epsilon', 1e-5);
      return normInfer(op, x, scale, bias);
    },
    grad: (ctx) => normGrad(ctx, false),
  },

  /** RMSNorm (Zhang & Sennrich 2019, used by Llama): x / sqrt(mean(x^2) + epsilon) * scale over the last axis. */
  RMSNorm: {
    infer(inputs, attrs) {
      const [x, scale] = req('RMSNorm', inputs, 2);
      attrNum('RMSNorm', attrs, 'epsilon', 1e-6);
      return normInfer('RMSNorm', x, scale, null);
    },
    grad: (ctx) => normGrad(ctx, true),
  },

  /** approximate: 'none' (erf) or 'tanh'. */
  Gelu: {
    infer(inputs, attrs) {
      const a = attrs.approximate ?? 'none';
      if (a !== 'none' && a !== 'tanh') throw new ShapeError('Gelu', [], `approximate must be 'none' or 'tanh', got ${JSON.stringify(a)}`);
      return unaryFloat('Gelu').infer(inputs, attrs);
    },
    grad: ({ g, inputs: [x], outputs: [y], attrs, dy: [d] }) => [op1(g, 'Mul', [d, attrs.approximate === 'tanh' ? geluTanhSlope(g, x!) : geluSlope(g, x!, y)])],
  },
  /** x * sigmoid(x), the SwiGLU gate's activation. */
  SiLU: {
    ...unaryFloat('SiLU'),
    // d/dx x s(x) = s (1 + x (1 - s)).
    grad({ g, inputs: [x], dy: [d] }) {
      const s = op1(g, 'Sigmoid', [x]);
      const slope = op1(g, 'Mul', [s, op1(g, 'Add', [scalarLike(g, x!, 1), op1(g, 'Mul', [x, op1(g, 'Sub', [scalarLike(g, x!, 1), s])])])]);
      return [op1(g, 'Mul', [d, slope])];
    },
  },
  Sigmoid: {
    ...unaryFloat('Sigmoid'),
    grad: ({ g, outputs: [y], dy: [d] }) => [op1(g, 'Mul', [d, op1(g, 'Mul', [y, op1(g, 'Sub', [scalarLike(g, y, 1), y])])])],
  },

  /** Rows of data picked by int32 indices along `axis` (embedding lookup). */
  Gather: {
    infer(inputs, attrs) {
      const [data, idx] = req('Gather', inputs, 2);
      dtypeIn('Gather', idx, ['int32'], 'indices');
      const axis = normAxis('Gather', attrNum('Gather', attrs, 'axis', 0), data.shape.length, data.shape);
      return [{ dtype: data.dtype, shape: [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)] }];
    },
    // Each picked row's gradient is added back where it came from (an embedding row used twice gets both).
    grad: ({ g, inputs: [data, idx], attrs, dy: [d] }) => [gatherGrad(g, data!, idx!, normAxis('Gather', attrNum('Gather', attrs, 'axis', 0), data!.shape.length, data!.shape), d!), null],
  },

  /** shape may hold one -1; 0 is a literal zero-sized dimension (ONNX allowzero=1). */
  Reshape: {
    infer(inputs, attrs) {
      const [x] = req('Reshape', inputs, 1);
      return [{ dtype: x.dtype, shape: reshapeTarget(x.shape, attrs.shape) }];
    },
    grad: ({ g, inputs: [x], dy: [d] }) => [op1(g, 'Reshape', [d], { shape: [...x!.shape] })],
  },

  Transpose: {
    infer(inputs, attrs) {
      const [x] = req('Transpose', inputs, 1);
      const r = x.shape.length;
      const perm = (attrs.perm as readonly number[] | undefined) ?? [...Array(r).keys()].reverse();
      const ok = Array.isArray(perm) && perm.length === r && [...perm].sort((p, q) => p - q).every((p, i) => p === i);
      if (!ok) throw new ShapeError('Transpose', [x.shape], `perm ${JSON.stringify(perm)} is not a permutation of 0..${r - 1}`);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
    },
    grad({ g, inputs: [x], attrs, dy: [d] }) {
      const perm = (attrs.perm as readonly number[] | undefined) ?? [...x!.shape.keys()].reverse();
      return [op1(g, 'Transpose', [d], { perm: invertPerm(perm) })];
    },
  },

  /** Between float dtypes (rounding to nearest even), from integers to floats, and widening int8/uint8 to int32. */
  Cast: {
    infer(inputs, attrs) {
      const [x] = req('Cast', inputs, 1);
      const to = attrs.to as DType;
      const ints: DType[] = ['int8', 'uint8', 'int32'];
      if (![...FLOATS, 'int32'].includes(to)) throw new DTypeError('Cast', [String(to)], `target must be one of ${[...FLOATS, 'int32'].join('/')}`);
      dtypeIn('Cast', x, to === 'int32' ? ints : [...FLOATS, ...ints]);
      return [{ dtype: to, shape: x.shape }];
    },
    // Between floats the gradient is cast back; rounding to a narrower float is passed straight through (its true
    // derivative is zero almost everywhere, which would stop mixed-precision training).
    grad: ({ g, inputs: [x], dy: [d] }) => [FLOATS.includes(x!.dtype) ? op1(g, 'Cast', [d], { to: x!.dtype }) : null],
  },

  /**
   * Scaled dot-product attention (Vaswani et al. 2017) with grouped-query heads (Ainslie et al. 2023):
   * q [B, Hq, S, D], k [B, Hkv, T, D], v [B, Hkv, T, Dv] -> [B, Hq, S, Dv]. Causal masking aligns the last
   * query with the last key, so S new tokens against T >= S cached keys is a decode or chunked-prefill step.
   */
  Attention: {
    infer(inputs, attrs) {
      const op = 'Attention';
      const [q, k, v] = req(op, inputs, 3);
      const d = sameDType(op, [q, k, v]);
      dtypeIn(op, q, FLOATS, 'q, k, v');
      const shapes = [q.shape, k.shape, v.shape];
      if (shapes.some((s) => s.length !== 4)) throw new ShapeError(op, shapes, 'q, k, v must be [batch, heads, seq, headDim]');
      const [B, Hq, S, D] = q.shape;
      const [Bk, Hkv, T, Dk] = k.shape;
      unifyDims(op, B, Bk, 'batch sizes of q and k', shapes);
      unifyDims(op, B, v.shape[0], 'batch sizes of q and v', shapes);
      if (typeof D !== 'number' || typeof Hq !== 'number' || typeof Hkv !== 'number') throw new ShapeError(op, shapes, 'heads and head dims must be sizes, not symbols');
      unifyDims(op, D, Dk, 'head dims of q and k', shapes);
      unifyDims(op, Hkv, v.shape[1], 'kv heads of k and v', shapes);
      unifyDims(op, T, v.shape[2], 'lengths of k and v', shapes);
      if (Hkv === 0 || Hq % Hkv !== 0) throw new ShapeError(op, shapes, `query heads (${Hq}) must be a multiple of kv heads (${Hkv})`);
      if (attrs.causal && typeof T === 'number' && typeof S === 'number' && T < S) throw new ShapeError(op, shapes, `causal attention needs at least as many keys (${T}) as queries (${S})`);
      if (attrs.scale !== undefined) attrNum(op, attrs, 'scale');
      return [{ dtype: d, shape: [B, Hq, S, v.shape[3]] }];
    },
    grad: attentionGrad,
  },

  ...QUANT_OPS,
  ...TENSOR_OPS,
  ...MODEL_OPS,
} satisfies Record<string, OpSpec>;

export type OpName = keyof typeof OPS;

function normInfer(op: string, x: Value, scale: Value, bias: Value | null): ValueType[] {
  dtypeIn(op, x, FLOATS);
  const last = x.shape[x.shape.length - 1];
  for (const p of [scale, bias]) {
    if (!p) continue;
    if (p.dtype !== x.dtype) throw new DTypeError(op, [x.dtype, p.dtype], `${p.name} must have x's dtype`);
    if (p.shape.length !== 1) throw new ShapeError(op, [x.shape, p.shape], `${p.name} must be [${last}]`);
    unifyDims(op, p.shape[0], last, `${p.name}'s length and x's last dimension`, [x.shape, p.shape]);
  }
  return [{ dtype: x.dtype, shape: x.shape }];
}

/**
 * The output shape of Reshape: target dims are sizes, symbols of the graph ('batch') and at most one -1, which takes
 * what is left (symbols cancel: [batch, seq, 4096] -> [batch, -1] gives [batch, 4096*seq]).
 */
export function reshapeTarget(from: Shape, target: AttrValue | undefined): Dim[] {
  const ok = (d: unknown) => (typeof d === 'number' && Number.isInteger(d) && d >= -1) || (typeof d === 'string' && d.length > 0);
  if (!Array.isArray(target) || !target.every(ok)) {
    throw new ShapeError('Reshape', [from], `target shape must be integers >= -1 or symbol names, got ${JSON.stringify(target)}`);
  }
  const t = target as readonly Dim[];
  const n = dimProduct(from);
  const known = dimProduct(t.filter((d) => d !== -1));
  const free = t.filter((d) => d === -1).length;
  if (free > 1) throw new ShapeError('Reshape', [from, t], 'at most one dimension may be -1');
  if (free === 1) {
    const rest = known === 0 ? null : dimDivide(n, known);
    if (rest === null) throw new ShapeError('Reshape', [from, t], `${n} elements do not divide into the known dimensions (${known})`);
    return t.map((d) => (d === -1 ? rest : d));
  }
  if (!sameDim(known, n)) {
    if (typeof known === 'number' && typeof n === 'number') throw new ShapeError('Reshape', [from, t], `${n} elements cannot take a shape of ${known}`);
    unifyDims('Reshape', n, known, 'element counts of the input and the target', [from, t]);
  }
  return [...t];
}
