/**
 * Tensor ops a whole model and its training need beyond the core set (ONNX operator spec, opset 21): reductions,
 * elementwise math, comparisons and selection, positions; slicing and joining (ops_slice.ts), indexing and
 * scattering (ops_index.ts).
 */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import { attrNum, broadcastShapes, dtypeIn, FLOATS, req, sameDType, unaryFloat, type Attrs, type GradGraph, type OpSpec } from './infer.ts';
import { canonDim, type Dim, type Shape } from './dims.ts';
import type { Value } from './graph.ts';
import { keepDims, reduceAxes } from './ops_quant.ts';
import { op1, scalarLike, sumTo } from './grad_util.ts';
import { SLICE_OPS } from './ops_slice.ts';
import { INDEX_OPS } from './ops_index.ts';

/** The shape a reduction leaves: reduced axes dropped, or kept as 1. */
function reducedShape(op: string, x: Value, attrs: Attrs): Dim[] {
  const axes = reduceAxes(x.shape, attrs.axes, op);
  if (axes.length === 0) throw new ShapeError(op, [x.shape], 'no axis to reduce');
  const keep = keepDims(attrs);
  return x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
}

/** dy of a reduction reshaped so it broadcasts against x again (the reduced axes as 1). */
function keptGrad(g: GradGraph, x: Value, attrs: Attrs, dy: Value, op: string): Value {
  if (keepDims(attrs)) return dy;
  const axes = reduceAxes(x.shape, attrs.axes, op);
  return op1(g, 'Reshape', [dy], { shape: x.shape.map((s, i) => (axes.includes(i) ? 1 : s)) });
}

/**
 * How many elements a mean over `axes` averages, as a value of x's dtype that broadcasts against the kept shape.
 * A size is a literal; a symbolic count is summed from ones over just the reduced axes (N elements, not x's), in
 * fp32 so that it is exact up to 2^24.
 */
function countOf(g: GradGraph, x: Value, axes: readonly number[]): Value {
  const dims = axes.map((a) => x.shape[a]);
  if (dims.every((d) => typeof d === 'number')) {
    const n = (dims as number[]).reduce((p, d) => p * d, 1);
    return op1(g, 'Constant', [], { value: n, dtype: x.dtype });
  }
  const ones = op1(g, 'Expand', [op1(g, 'Constant', [], { value: 1, dtype: 'fp32', shape: x.shape.map(() => 1) })], { shape: x.shape.map((d, i) => (axes.includes(i) ? d : 1)) });
  const n = op1(g, 'ReduceSum', [ones], { keepdims: true });
  return x.dtype === 'fp32' ? n : op1(g, 'Cast', [n], { to: x.dtype });
}

function compare(op: string, allowed: readonly DType[]): OpSpec {
  return {
    infer(inputs) {
      const [a, b] = req(op, inputs, 2);
      sameDType(op, [a, b]);
      dtypeIn(op, a, allowed, 'operands');
      return [{ dtype: 'bool', shape: broadcastShapes(op, a.shape, b.shape) }];
    },
  };
}

/** Range's attributes, checked: `length` a size or a dim of the graph's symbols, start and delta numbers. */
export function rangeAttrs(attrs: Attrs): { length: Dim; start: number; delta: number; dtype: 'int32' | 'fp32' } {
  const op = 'Range';
  const dtype = (attrs.dtype ?? 'int32') as DType;
  if (dtype !== 'int32' && dtype !== 'fp32') throw new DTypeError(op, [String(dtype)], 'dtype must be int32 or fp32');
  const len = attrs.length;
  let length: Dim;
  if (typeof len === 'number') {
    if (!Number.isSafeInteger(len) || len < 0) throw new ShapeError(op, [], `length must be a non-negative integer or a symbolic dim, got ${len}`);
    length = len;
  } else if (typeof len === 'string') length = canonDim(len);
  else throw new ShapeError(op, [], `length must be a size or a symbolic dim such as 'seq', got ${JSON.stringify(len)}`);
  const start = attrNum(op, attrs, 'start', 0);
  const delta = attrNum(op, attrs, 'delta', 1);
  if (dtype === 'int32' && !(Number.isInteger(start) && Number.isInteger(delta))) {
    throw new ShapeError(op, [], `an int32 range needs integer start and delta, got start ${start}, delta ${delta}`);
  }
  return { length, start, delta, dtype };
}

export const TENSOR_OPS = {
  /** Sum over `axes` (every axis when absent); keepdims (default true) keeps reduced axes as length 1. */
  ReduceSum: {
    infer(inputs, attrs) {
      const [x] = req('ReduceSum', inputs, 1);
      dtypeIn('ReduceSum', x, FLOATS);
      return [{ dtype: x.dtype, shape: reducedShape('ReduceSum', x, attrs) }];
    },
    // Every input element contributes once: the gradient is dy broadcast back (kept dims make it broadcastable).
    grad: ({ g, inputs: [x], attrs, dy: [d] }) => [op1(g, 'Expand', [keptGrad(g, x!, attrs, d!, 'ReduceSum')], { shape: [...x!.shape] })],
  },

  /** Mean over `axes` (every axis when absent); keepdims (default true) as ReduceSum. */
  ReduceMean: {
    infer(inputs, attrs) {
      const [x] = req('ReduceMean', inputs, 1);
      dtypeIn('ReduceMean', x, FLOATS);
      for (const a of reduceAxes(x.shape, attrs.axes, 'ReduceMean')) {
        if (x.shape[a] === 0) throw new ShapeError('ReduceMean', [x.shape], `axis ${a} has length 0: the mean of nothing is undefined`);
      }
      return [{ dtype: x.dtype, shape: reducedShape('ReduceMean', x, attrs) }];
    },
    // Each of the N averaged elements contributes 1/N: dy / N broadcast back, N read at run time when symbolic.
    grad({ g, inputs: [x], attrs, dy: [d] }) {
      const n = countOf(g, x!, reduceAxes(x!.shape, attrs.axes, 'ReduceMean'));
      return [op1(g, 'Expand', [op1(g, 'Div', [keptGrad(g, x!, attrs, d!, 'ReduceMean'), n])], { shape: [...x!.shape] })];
    },
  },

  /** Broadcasts x to `shape` (sizes or symbols), numpy style; the result has x's dtype. */
  Expand: {
    infer(inputs, attrs) {
      const [x] = req('Expand', inputs, 1);
      const shape = attrs.shape;
      if (!Array.isArray(shape)) throw new ShapeError('Expand', [x.shape], `shape must be a list of sizes or symbols, got ${JSON.stringify(shape)}`);
      return [{ dtype: x.dtype, shape: broadcastShapes('Expand', x.shape, (shape as Shape).map(canonDim)) }];
    },
    grad: ({ g, inputs: [x], dy: [d] }) => [sumTo(g, d!, x!.shape)],
  },

  // d exp(x) = exp(x) dx, d log(x) = dx / x, d sqrt(x) = dx / (2 sqrt(x)): written with y where it is at hand.
  Exp: { ...unaryFloat('Exp'), grad: ({ g, outputs: [y], dy: [d] }) => [op1(g, 'Mul', [d, y])] },
  Log: { ...unaryFloat('Log'), grad: ({ g, inputs: [x], dy: [d] }) => [op1(g, 'Div', [d, x])] },
  Sqrt: { ...unaryFloat('Sqrt'), grad: ({ g, outputs: [y], dy: [d] }) => [op1(g, 'Div', [op1(g, 'Mul', [d, scalarLike(g, d!, 0.5)]), y])] },
  Neg: { ...unaryFloat('Neg'), grad: ({ g, dy: [d] }) => [op1(g, 'Neg', [d])] },

  /** a == b elementwise with numpy broadcasting, as bool. Piecewise constant: no gradient. */
  Equal: compare('Equal', [...FLOATS, 'int32', 'bool']),
  /** a < b elementwise with numpy broadcasting, as bool. */
  Less: compare('Less', [...FLOATS, 'int32']),

  /** cond ? a : b elementwise; all three broadcast together (a causal mask against scores, say). */
  Where: {
    infer(inputs) {
      const op = 'Where';
      const [c, a, b] = req(op, inputs, 3);
      dtypeIn(op, c, ['bool'], 'cond');
      const d = sameDType(op, [a, b]);
      return [{ dtype: d, shape: broadcastShapes(op, broadcastShapes(op, c.shape, a.shape), b.shape) }];
    },
    // The gradient goes to whichever operand was picked, then is summed back over what broadcasting stretched.
    grad({ g, inputs: [c, a, b], dy: [d] }) {
      const zero = scalarLike(g, d!, 0);
      return [null, sumTo(g, op1(g, 'Where', [c, d, zero]), a!.shape), sumTo(g, op1(g, 'Where', [c, zero, d]), b!.shape)];
    },
  },

  /**
   * offset + start + i * delta for i < length: positions without a data-dependent size. `length` is a size or a
   * dim of the graph's symbols ('seq'); the optional scalar offset (of the range's dtype) is added at run time, so
   * the position ids of a decode step are Range({ length: 'seq' }, past).
   */
  Range: {
    optional: [0],
    infer(inputs, attrs) {
      const [offset] = req('Range', inputs, 1, [0]);
      const { length, dtype } = rangeAttrs(attrs);
      if (offset) {
        if (offset.dtype !== dtype) throw new DTypeError('Range', [offset.dtype, dtype], 'the offset must have the range\'s dtype');
        if (!(offset.shape.length === 0 || (offset.shape.length === 1 && offset.shape[0] === 1))) {
          throw new ShapeError('Range', [offset.shape], 'the offset must be a scalar ([] or [1])');
        }
      }
      return [{ dtype, shape: [length] }];
    },
    grad: ({ g, inputs: [offset], dy: [d] }) => [offset ? sumTo(g, d!, offset.shape) : null],
  },

  ...SLICE_OPS,
  ...INDEX_OPS,
} satisfies Record<string, OpSpec>;
