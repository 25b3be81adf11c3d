/**
 * Tensor ops a whole model and its training need beyond the core set (ONNX operator spec, opset 21): reductions,
 * elementwise math, comparisons and selection, slicing and joining, indexing and scattering.
 */
import { ShapeError } from '../errors.ts';
import { broadcastShapes, dtypeIn, FLOATS, req, type OpSpec } from './infer.ts';
import type { Shape } from './dims.ts';
import { keepDims, reduceAxes } from './ops_quant.ts';
import { op1, sumTo } from './grad_util.ts';

export const TENSOR_OPS = {
  /** Sum over `axes` (every axis when absent); keepdims (default true) keeps reduced axes as length 1. */
  ReduceSum: {
    infer(inputs, attrs) {
      const [x] = req('ReduceSum', inputs, 1);
      dtypeIn('ReduceSum', x, FLOATS);
      const axes = reduceAxes(x.shape, attrs.axes, 'ReduceSum');
      const keep = keepDims(attrs);
      if (axes.length === 0) throw new ShapeError('ReduceSum', [x.shape], 'no axis to reduce');
      return [{ dtype: x.dtype, shape: x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d])) }];
    },
    // Every input element contributes once: the gradient is dy broadcast back (kept dims make it broadcastable).
    grad({ g, inputs: [x], attrs, dy: [d] }) {
      const axes = reduceAxes(x!.shape, attrs.axes, 'ReduceSum');
      const kept = keepDims(attrs) ? d! : op1(g, 'Reshape', [d], { shape: x!.shape.map((s, i) => (axes.includes(i) ? 1 : s)) });
      return [op1(g, 'Expand', [kept], { shape: [...x!.shape] })];
    },
  },

  /** Broadcasts x to `shape` (sizes or symbols), numpy style; the result has x's dtype. */
  Expand: {
    infer(inputs, attrs) {
      const [x] = req('Expand', inputs, 1);
      const shape = attrs.shape;
      if (!Array.isArray(shape)) throw new ShapeError('Expand', [x.shape], `shape must be a list of sizes or symbols, got ${JSON.stringify(shape)}`);
      return [{ dtype: x.dtype, shape: broadcastShapes('Expand', x.shape, shape as Shape) }];
    },
    grad: ({ g, inputs: [x], dy: [d] }) => [sumTo(g, d!, x!.shape)],
  },
} satisfies Record<string, OpSpec>;
