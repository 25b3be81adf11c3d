/**
 * Slicing and joining along axes (ONNX Slice, Concat, Split) on symbolic shapes. Joining adds dims ('past' and
 * 'seq' make 'past+seq', the KV cache after a step) and slicing subtracts them, so one graph serves every length.
 */
import { DTypeError, ShapeError } from '../errors.ts';
import { normAxis, req, type Attrs, type GradGraph, type OpSpec } from './infer.ts';
import { canonDim, dimSub, dimSum, formatShape, unifyDims, type Dim, type Shape } from './dims.ts';
import type { Value } from './graph.ts';
import { invertPerm, op1, zerosLike } from './grad_util.ts';

/** Ends at or past this on a symbolic axis mean "to the end" (ONNX's INT_MAX idiom). */
export const SLICE_TO_END = 2 ** 31 - 1;

/** One sliced axis: the first index taken, the step, and the length taken (sizes, or dims of the graph's symbols). */
export interface SliceAxis {
  readonly axis: number;
  readonly start: Dim;
  readonly step: number;
  readonly length: Dim;
  /** Bounds taken as given rather than clamped (a symbolic axis or end): checked when the graph runs. */
  readonly trusted: boolean;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * ONNX Slice on one axis of length d. With sizes throughout, bounds clamp exactly as ONNX specifies. Where the axis
 * or the end is symbolic the step must be 1 and nothing can be clamped: a negative start or end counts from the
 * end ('seq-1'), an end of SLICE_TO_END or more runs to the end, and every other bound is taken as given and must
 * lie inside the axis when the graph runs (a kernel refuses it otherwise).
 */
function sliceOne(op: string, shape: Shape, axis: number, start: number, end: Dim, step: number): SliceAxis {
  const d = shape[axis];
  if (typeof d === 'number' && typeof end === 'number') {
    const lo = step > 0 ? 0 : -1;
    const hi = step > 0 ? d : d - 1;
    const clamp = (v: number, min: number) => Math.min(Math.max(v < 0 ? v + d : v, min), hi);
    const s = clamp(start, 0);
    const e = clamp(end, lo);
    const length = Math.max(0, Math.ceil((e - s) / step));
    return { axis, start: s, step, length, trusted: false };
  }
  if (step !== 1) throw new ShapeError(op, [shape], `axis ${axis}: slicing ${typeof d === 'number' ? 'to a symbolic end' : `the symbolic axis '${d}'`} needs step 1 (got ${step}); give sizes to use other steps`);
  const from = (v: number) => (v < 0 ? (typeof d === 'number' ? Math.max(0, d + v) : dimSum([d, v])) : v);
  const s = from(start);
  const e = typeof end === 'string' ? canonDim(end) : end >= SLICE_TO_END ? d : from(end);
  const len = dimSub(e, s);
  return { axis, start: s, step, length: typeof len === 'number' ? Math.max(0, len) : len, trusted: true };
}

/** Slice's attributes against an input shape: one entry per sliced axis, in the order given. */
export function sliceAxes(op: string, shape: Shape, attrs: Attrs): SliceAxis[] {
  const { starts, ends } = attrs;
  const r = shape.length;
  if (!Array.isArray(starts) || !starts.every(isInt)) throw new ShapeError(op, [shape], `starts must be integers, got ${JSON.stringify(starts)}`);
  const okEnd = (v: unknown) => isInt(v) || (typeof v === 'string' && v.length > 0);
  if (!Array.isArray(ends) || !ends.every(okEnd)) throw new ShapeError(op, [shape], `ends must be integers or symbolic dims, got ${JSON.stringify(ends)}`);
  const axes = (attrs.axes ?? [...Array(starts.length).keys()]) as readonly number[];
  const steps = (attrs.steps ?? starts.map(() => 1)) as readonly number[];
  if (!Array.isArray(axes) || !axes.every(isInt)) throw new ShapeError(op, [shape], `axes must be integers, got ${JSON.stringify(axes)}`);
  if (!Array.isArray(steps) || !steps.every((s) => isInt(s) && s !== 0)) throw new ShapeError(op, [shape], `steps must be non-zero integers, got ${JSON.stringify(steps)}`);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) {
    throw new ShapeError(op, [shape], `starts, ends, axes and steps must have one entry per sliced axis (got ${starts.length}, ${ends.length}, ${axes.length}, ${steps.length})`);
  }
  const norm = axes.map((a) => normAxis(op, a, r, shape));
  if (new Set(norm).size !== norm.length) throw new ShapeError(op, [shape], `axes ${JSON.stringify(axes)} name an axis twice`);
  return norm.map((a, i) => sliceOne(op, shape, a, starts[i] as number, ends[i] as Dim, steps[i]));
}

export function slicedShape(shape: Shape, axes: readonly SliceAxis[]): Dim[] {
  const out = [...shape];
  for (const a of axes) out[a.axis] = a.length;
  return out;
}

/** The sizes a Split attribute gives, checked. */
export function splitSizes(op: string, x: Value, attrs: Attrs): { axis: number; sizes: Dim[] } {
  const axis = normAxis(op, (attrs.axis ?? 0) as number, x.shape.length, x.shape);
  const sizes = attrs.sizes;
  const ok = (v: unknown) => (isInt(v) && v >= 0) || (typeof v === 'string' && v.length > 0);
  if (!Array.isArray(sizes) || sizes.length === 0 || !sizes.every(ok)) {
    throw new ShapeError(op, [x.shape], `sizes must be a non-empty list of sizes or symbolic dims, got ${JSON.stringify(sizes)}`);
  }
  return { axis, sizes: sizes.map((s) => canonDim(s as Dim)) };
}

/**
 * Undoes a slice of one axis: dy [.., length, ..] back into zeros [.., d, ..]. A unit step pads with zero blocks
 * before and after (their lengths may be symbolic); another step, only on sizes, scatters the rows into place.
 */
function unslice(g: GradGraph, dy: Value, d: Dim, a: SliceAxis): Value {
  const at = (len: Dim) => dy.shape.map((s, i) => (i === a.axis ? len : s));
  if (a.step === 1) {
    const before = a.start;
    const after = dimSub(d, dimSum([a.start, a.length]));
    const parts = [before === 0 ? null : zerosLike(g, dy, at(before)), dy, after === 0 ? null : zerosLike(g, dy, at(after))].filter((v): v is Value => v !== null);
    return parts.length === 1 ? dy : op1(g, 'Concat', parts, { axis: a.axis });
  }
  const r = dy.shape.length;
  const perm = [a.axis, ...[...Array(r).keys()].filter((i) => i !== a.axis)];
  const front = a.axis === 0 ? dy : op1(g, 'Transpose', [dy], { perm });
  const rows = op1(g, 'Reshape', [op1(g, 'Range', [], { length: a.length, start: a.start as number, delta: a.step, dtype: 'int32' })], { shape: [a.length, 1] });
  const zeros = zerosLike(g, dy, [d, ...front.shape.slice(1)]);
  const placed = op1(g, 'ScatterND', [zeros, rows, front], { reduction: 'none' });
  return a.axis === 0 ? placed : op1(g, 'Transpose', [placed], { perm: invertPerm(perm) });
}

export const SLICE_OPS = {
  /**
   * x[starts:ends:steps] along `axes` (default 0..n-1), as ONNX Slice. An end may be a symbolic dim ('seq', or
   * 'past+seq' after a Concat); see sliceOne for what symbolic axes allow.
   */
  Slice: {
    infer(inputs, attrs) {
      const [x] = req('Slice', inputs, 1);
      return [{ dtype: x.dtype, shape: slicedShape(x.shape, sliceAxes('Slice', x.shape, attrs)) }];
    },
    grad({ g, inputs: [x], attrs, dy: [d] }) {
      let dx = d!;
      for (const a of sliceAxes('Slice', x!.shape, attrs)) dx = unslice(g, dx, x!.shape[a.axis], a);
      return [dx];
    },
  },

  /** Joins inputs along `axis`; the other dims must agree. Symbolic lengths add up ('past' + 'seq' = 'past+seq'). */
  Concat: {
    infer(inputs, attrs) {
      const op = 'Concat';
      if (inputs.length === 0 || inputs.some((v) => !v)) throw new ShapeError(op, [], 'needs one or more inputs, none absent');
      const xs = inputs as Value[];
      const shapes = xs.map((v) => v.shape);
      if (xs.some((v) => v.dtype !== xs[0].dtype)) throw new DTypeError(op, xs.map((v) => v.dtype), 'inputs must share one dtype');
      const r = xs[0].shape.length;
      if (r === 0 || xs.some((v) => v.shape.length !== r)) throw new ShapeError(op, shapes, 'inputs must have one rank, at least 1');
      const axis = normAxis(op, (attrs.axis ?? 0) as number, r, xs[0].shape);
      const shape = xs[0].shape.map((d, i) => (i === axis ? dimSum(shapes.map((s) => s[i])) : xs.slice(1).reduce((acc, v) => unifyDims(op, acc, v.shape[i], `dimensions ${i} of the inputs`, shapes), d)));
      return [{ dtype: xs[0].dtype, shape }];
    },
    // The adjoint of joining is splitting: each input gets its own stretch of dy.
    grad({ g, inputs, attrs, dy: [d] }) {
      if (inputs.length === 1) return [d];
      const axis = normAxis('Concat', (attrs.axis ?? 0) as number, d!.shape.length, d!.shape);
      return g.op('Split', [d], { axis, sizes: inputs.map((v) => v!.shape[axis]) });
    },
  },

  /** Cuts x along `axis` into pieces of `sizes` (sizes or symbolic dims that add up to the axis): Concat's adjoint. */
  Split: {
    infer(inputs, attrs) {
      const op = 'Split';
      const [x] = req(op, inputs, 1);
      const { axis, sizes } = splitSizes(op, x, attrs);
      unifyDims(op, x.shape[axis], dimSum(sizes), `the length of axis ${axis} of ${formatShape(x.shape)} and the sum of sizes ${JSON.stringify(sizes)}`, [x.shape]);
      return sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === axis ? s : d)) }));
    },
    grad({ g, outputs, attrs, dy }) {
      const axis = normAxis('Split', (attrs.axis ?? 0) as number, outputs[0].shape.length, outputs[0].shape);
      const parts = dy.map((d, i) => d ?? zerosLike(g, outputs[i]));
      return [parts.length === 1 ? parts[0] : op1(g, 'Concat', parts, { axis })];
    },
  },
} satisfies Record<string, OpSpec>;
