/**
 * Indexing ops (ONNX ArgMax, TopK, GatherND, ScatterND; batch_dims 0): greedy and top-k sampling, and writing a new
 * token's K and V into a preallocated cache. Indices are int32 in the engine; the ONNX lowering widens them.
 */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import { attrNum, dtypeIn, FLOATS, normAxis, req, type Attrs, type GradGraph, type OpSpec } from './infer.ts';
import { formatShape, unifyDims, type Dim } from './dims.ts';
import type { Value } from './graph.ts';
import { keepDims } from './ops_quant.ts';
import { op1, zerosLike } from './grad_util.ts';

const NUMERIC: readonly DType[] = [...FLOATS, 'int32'];
const DATA: readonly DType[] = [...FLOATS, 'int32', 'int8', 'uint8', 'bool'];

export function topKAttrs(op: string, x: Value, attrs: Attrs): { k: number; axis: number; largest: boolean } {
  const k = attrNum(op, attrs, 'k');
  if (!Number.isSafeInteger(k) || k < 0) throw new ShapeError(op, [x.shape], `k must be a non-negative integer, got ${k}`);
  const axis = normAxis(op, attrNum(op, attrs, 'axis', -1), x.shape.length, x.shape);
  const d = x.shape[axis];
  if (typeof d === 'number' && k > d) throw new ShapeError(op, [x.shape], `k = ${k} is more than the ${d} elements along axis ${axis}`);
  const largest = attrs.largest ?? true;
  if (largest !== true && largest !== false && largest !== 0 && largest !== 1) throw new ShapeError(op, [], `largest must be a boolean, got ${JSON.stringify(largest)}`);
  return { k, axis, largest: Boolean(largest) };
}

/** The index depth r of an int32 [..., r] indices operand into data of rank >= r; r must be a size. */
function indexDepth(op: string, data: Value, indices: Value): number {
  dtypeIn(op, indices, ['int32'], 'indices');
  const r = indices.shape[indices.shape.length - 1];
  if (indices.shape.length === 0 || typeof r !== 'number' || r < 1 || r > data.shape.length) {
    throw new ShapeError(op, [data.shape, indices.shape], `indices must be [..., r] with r a size from 1 to data's rank ${data.shape.length}`);
  }
  return r;
}

/** indices.shape[:-1] + data.shape[r:]: what GatherND gives and ScatterND takes as updates. */
function sliceShape(data: Value, indices: Value, r: number): Dim[] {
  return [...indices.shape.slice(0, -1), ...data.shape.slice(r)];
}

export function scatterReduction(attrs: Attrs): 'none' | 'add' {
  const red = attrs.reduction ?? 'none';
  if (red !== 'none' && red !== 'add') throw new ShapeError('ScatterND', [], `reduction must be 'none' or 'add', got ${JSON.stringify(red)}`);
  return red;
}

/**
 * Full coordinates [..., rank] for int32 indices along one axis (what GatherElements / ScatterElements address),
 * so that ScatterND can put values back where TopK found them: every other axis contributes its own position.
 */
export function coordsAlong(g: GradGraph, idx: Value, axis: number): Value {
  const shape = idx.shape;
  const column = (v: Value) => op1(g, 'Reshape', [v], { shape: [...shape, 1] });
  const cols = shape.map((d, m) => {
    if (m === axis) return column(idx);
    const pos = op1(g, 'Range', [], { length: d, dtype: 'int32' });
    const along = op1(g, 'Reshape', [pos], { shape: shape.map((s, i) => (i === m ? s : 1)) });
    return column(op1(g, 'Expand', [along], { shape: [...shape] }));
  });
  return cols.length === 1 ? cols[0] : op1(g, 'Concat', cols, { axis: shape.length });
}

export const INDEX_OPS = {
  /** The index of the first largest element along `axis` (default 0, as ONNX); keepdims default true. int32. */
  ArgMax: {
    infer(inputs, attrs) {
      const op = 'ArgMax';
      const [x] = req(op, inputs, 1);
      dtypeIn(op, x, NUMERIC);
      const axis = normAxis(op, attrNum(op, attrs, 'axis', 0), x.shape.length, x.shape);
      if (x.shape[axis] === 0) throw new ShapeError(op, [x.shape], `axis ${axis} has length 0: no element to pick`);
      const keep = keepDims(attrs);
      return [{ dtype: 'int32', shape: x.shape.flatMap((d, i) => (i === axis ? (keep ? [1] : []) : [d])) }];
    },
  },

  /**
   * The k largest (or smallest) elements along `axis` (default -1), sorted, with their int32 indices; equal values
   * keep index order. k is a size.
   */
  TopK: {
    infer(inputs, attrs) {
      const op = 'TopK';
      const [x] = req(op, inputs, 1);
      dtypeIn(op, x, NUMERIC);
      const { k, axis } = topKAttrs(op, x, attrs);
      const shape = x.shape.map((d, i) => (i === axis ? k : d));
      return [{ dtype: x.dtype, shape }, { dtype: 'int32', shape }];
    },
    // Each picked value came from one place: its gradient goes back there, every other element gets 0.
    grad({ g, inputs: [x], outputs: [, idx], attrs, dy: [dv] }) {
      if (!dv) return [null];
      const { axis } = topKAttrs('TopK', x!, attrs);
      return [op1(g, 'ScatterND', [zerosLike(g, x!), coordsAlong(g, idx, axis), dv], { reduction: 'add' })];
    },
  },

  /** data [s0.., sr-1, rest..] at int32 indices [..., r] -> indices.shape[:-1] + rest (negative indices count from the end). */
  GatherND: {
    infer(inputs) {
      const op = 'GatherND';
      const [data, indices] = req(op, inputs, 2);
      dtypeIn(op, data, DATA, 'data');
      return [{ dtype: data.dtype, shape: sliceShape(data, indices, indexDepth(op, data, indices)) }];
    },
    grad: ({ g, inputs: [data, indices], dy: [d] }) => [op1(g, 'ScatterND', [zerosLike(g, data!), indices, d], { reduction: 'add' }), null],
  },

  /**
   * A copy of data with updates written (reduction 'none') or added ('add') at int32 indices [..., r]; updates are
   * indices.shape[:-1] + data.shape[r:]. With 'none' the indices must be distinct (which write wins is unspecified).
   * A decode step writes its new K and V into a preallocated cache this way.
   */
  ScatterND: {
    infer(inputs, attrs) {
      const op = 'ScatterND';
      const [data, indices, updates] = req(op, inputs, 3);
      dtypeIn(op, data, DATA, 'data');
      const red = scatterReduction(attrs);
      if (red === 'add') dtypeIn(op, data, NUMERIC, "data (reduction 'add')");
      if (updates.dtype !== data.dtype) throw new DTypeError(op, [data.dtype, updates.dtype], 'updates must have data\'s dtype');
      const want = sliceShape(data, indices, indexDepth(op, data, indices));
      const shapes = [data.shape, indices.shape, updates.shape];
      if (updates.shape.length !== want.length) throw new ShapeError(op, shapes, `updates must be ${formatShape(want)} (indices.shape[:-1] + data.shape[r:])`);
      want.forEach((d, i) => unifyDims(op, updates.shape[i], d, `updates dimension ${i} and ${formatShape(want)}`, shapes));
      return [{ dtype: data.dtype, shape: data.shape }];
    },
    // 'none' overwrites: the old values at the indices no longer reach the output. 'add' passes dy through whole.
    grad({ g, inputs: [, indices, updates], attrs, dy: [d] }) {
      const dData = scatterReduction(attrs) === 'add' ? d : op1(g, 'ScatterND', [d, indices, zerosLike(g, updates!)], { reduction: 'none' });
      return [dData, null, op1(g, 'GatherND', [d, indices])];
    },
  },
} satisfies Record<string, OpSpec>;
