/**
 * The reference backend's kernels, one per op (tfjs's registerKernel as a typed table): the type checker refuses an
 * op without a reference kernel, so every op has an oracle.
 */
import type { OpName } from '../../graph/ops.ts';
import { ShapeError } from '../../errors.ts';
import { keepDims, reduceAxes, scaleAxis } from '../../graph/ops_quant.ts';
import type { Value } from '../../graph/graph.ts';
import type { RefKernel, RefOperand } from './kernel.ts';
import * as K from './kernels.ts';
import * as Q from './quant_kernels.ts';
import { TENSOR_KERNELS } from './tensor_table.ts';
import { MODEL_KERNELS } from './model_table.ts';

const num = (v: unknown, d: number) => (v === undefined ? d : (v as number));
const binary = (fn: (p: number, q: number) => number): RefKernel => ({ inputs: [a, b] }) => [K.binary(fn, a!.f(), a!.shape, b!.f(), b!.shape)[0]];
const unary = (fn: (p: number) => number): RefKernel => ({ inputs: [x] }) => [x!.f().map(fn)];
/** Just enough of a Value for the spec helpers that read a shape (scaleAxis). */
const asValue = (o: RefOperand, name: string) => ({ id: -1, name, dtype: o.dtype, shape: o.shape }) as Value;

export const REFERENCE_KERNELS = {
  MatMul: ({ inputs: [a, b] }) => [K.matmul(a!.f(), a!.shape, b!.f(), b!.shape)[0]],
  MatMulInteger: ({ inputs: [a, b, az, bz] }) => [K.matmul(a!.data, a!.shape, b!.data, b!.shape, az ? az.data[0] : 0, bz ? bz.data[0] : 0)[0]],
  DynamicQuantizeLinear: ({ inputs: [x] }) => {
    const q = K.dynamicQuantize(x!.data as Float32Array);
    return [q.y, Float32Array.of(q.scale), Uint8Array.of(q.zeroPoint)];
  },
  MatMulNBits: ({ inputs: [a, b, s, z], attrs }) => [
    K.matmulNBits(a!.data as Float32Array, a!.shape, b!.data as Uint8Array, s!.data as Float32Array, z ? (z.data as Uint8Array) : null, attrs.K as number, attrs.N as number, num(attrs.blockSize, 32))[0],
  ],
  Add: binary((p, q) => p + q),
  Sub: binary((p, q) => p - q),
  Mul: binary((p, q) => p * q),
  Div: binary((p, q) => p / q),
  Softmax: ({ inputs: [x], attrs }) => [K.softmax(x!.f(), x!.shape, num(attrs.axis, -1))],
  LayerNormalization: ({ inputs: [x, s, b], attrs }) => [K.layerNorm(x!.f(), x!.shape, s!.f(), b ? b.f() : null, num(attrs.epsilon, 1e-5), false)],
  RMSNorm: ({ inputs: [x, s], attrs }) => [K.layerNorm(x!.f(), x!.shape, s!.f(), null, num(attrs.epsilon, 1e-6), true)],
  Gelu: ({ inputs: [x], attrs }) => [x!.f().map(attrs.approximate === 'tanh' ? K.geluTanh : K.gelu)],
  SiLU: unary((v) => v * K.sigmoid(v)),
  Sigmoid: unary(K.sigmoid),
  Gather: ({ inputs: [x, i], attrs }) => {
    const axis = num(attrs.axis, 0);
    return [K.gather(x!.f(), x!.shape, i!.data as Int32Array, i!.shape, axis < 0 ? axis + x!.shape.length : axis)[0]];
  },
  // The output's shape is the target resolved in this run; the element counts must agree (a symbol may be off).
  Reshape: ({ inputs: [x], outputs: [o] }) => {
    const count = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
    if (count(o.shape) !== count(x!.shape)) throw new ShapeError('Reshape', [x!.shape, o.shape], `${count(x!.shape)} elements cannot take a shape of ${count(o.shape)}`);
    return [x!.f()];
  },
  Transpose: ({ inputs: [x], attrs }) => [K.transpose(x!.f(), x!.shape, (attrs.perm as number[]) ?? [...x!.shape.keys()].reverse())[0]],
  Cast: ({ inputs: [x] }) => [x!.f()],
  Attention: ({ inputs: [q, k, v], attrs }) => [K.attention(q!.f(), q!.shape, k!.f(), k!.shape, v!.f(), v!.shape, Boolean(attrs.causal), attrs.scale as number | undefined)[0]],
  Abs: unary(Math.abs),
  ReduceMax: ({ inputs: [x], attrs }) => [Q.reduceMax(x!.f(), x!.shape, reduceAxes(x!.shape, attrs.axes), keepDims(attrs))[0]],
  Round: unary(K.roundHalfEven),
  Clip: ({ inputs: [x], attrs }) => {
    const lo = num(attrs.min, -Infinity);
    const hi = num(attrs.max, Infinity);
    return [x!.f().map((v) => Math.min(hi, Math.max(lo, v)))];
  },
  QuantizeLinear: ({ inputs: [x, s, z], attrs, outputs }) => {
    const axis = scaleAxis('QuantizeLinear', asValue(x!, 'x'), asValue(s!, 'scale'), attrs);
    return [Q.quantizeLinear(x!.data as Float32Array, x!.shape, s!.data as Float32Array, z ? (z.data as Int8Array | Uint8Array) : null, axis, outputs[0].dtype as 'int8' | 'uint8')];
  },
  MatMulBnb4: ({ inputs: [a, b, s], attrs }) => [
    Q.matmulBnb4(a!.data as Float32Array, a!.shape, b!.data as Uint8Array, s!.data as Float32Array, attrs.K as number, attrs.N as number, num(attrs.blockSize, 64), num(attrs.quantType, 1))[0],
  ],
  DequantizeLinear: ({ inputs: [x, s, z], attrs }) => {
    const axis = scaleAxis('DequantizeLinear', asValue(x!, 'x'), asValue(s!, 'scale'), attrs);
    return [Q.dequantizeLinear(x!.data as Int8Array | Uint8Array, x!.shape, s!.data as Float32Array, z ? (z.data as Int8Array | Uint8Array) : null, axis)];
  },
  Constant: ({ attrs, outputs: [o] }) => [new Float64Array(o.shape.reduce((p, d) => p * d, 1)).fill(attrs.value as number)],
  ...TENSOR_KERNELS,
  ...MODEL_KERNELS,
} satisfies { [Op in OpName]: RefKernel };
