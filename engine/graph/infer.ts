/** Shape and dtype inference helpers shared by the op specs (ONNX operator semantics: numpy broadcasting, axes). */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Value } from './graph.ts';
import { unifyDims, type Dim, type Shape } from './dims.ts';

export type AttrValue = number | boolean | string | readonly number[] | readonly Dim[];
export type Attrs = Readonly<Record<string, AttrValue>>;
export interface ValueType {
  dtype: DType;
  shape: Shape;
}
export type In = Value | null;

/**
 * The part of a Graph a gradient builds with. Ops are named by string here so that the op table's type does not
 * depend on itself; Graph.op still refuses an unknown name.
 */
export interface GradGraph {
  op(op: string, inputs: readonly (Value | null | undefined)[], attrs?: Attrs): Value[];
}

/** What an op's gradient sees: its node, and the gradient of the loss with respect to each of its outputs. */
export interface GradContext {
  /** The backward graph the gradient's nodes are added to. */
  readonly g: GradGraph;
  readonly inputs: readonly In[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
  /** d loss / d output, per output; null for an output nothing downstream depends on. */
  readonly dy: readonly (Value | null)[];
}

export interface OpSpec {
  /** Inputs that may be null (absent optional inputs). */
  readonly optional?: readonly number[];
  infer(inputs: readonly In[], attrs: Attrs): ValueType[];
  /**
   * Reverse mode (micrograd's _backward, tfjs's registerGradient): d loss / d input for each input, built from ops
   * in ctx.g; null for an input that gets no gradient (an integer index, say). Absent: not differentiable.
   */
  grad?(ctx: GradContext): (Value | null)[];
}

export const FLOATS: readonly DType[] = ['fp32', 'fp16', 'bf16'];

// ---- helpers ---------------------------------------------------------------------------------------

export function req(op: string, inputs: readonly In[], n: number, optional: readonly number[] = []): Value[] {
  if (inputs.length < n - optional.length || inputs.length > n) {
    throw new ShapeError(op, inputs.map((v) => v?.shape ?? []), `expects ${n} inputs, got ${inputs.length}`);
  }
  inputs.forEach((v, i) => {
    if (!v && !optional.includes(i)) throw new ShapeError(op, [], `input ${i} is required`);
  });
  return inputs as Value[];
}

export function dtypeIn(op: string, v: Value, allowed: readonly DType[], what = v.name): void {
  if (!allowed.includes(v.dtype)) throw new DTypeError(op, [v.dtype], `${what} must be one of ${allowed.join('/')}`);
}

export function sameDType(op: string, vs: readonly Value[]): DType {
  const d = vs[0].dtype;
  if (vs.some((v) => v.dtype !== d)) throw new DTypeError(op, vs.map((v) => v.dtype), 'operands must share one dtype');
  return d;
}

export function normAxis(op: string, axis: number, rank: number, shape: Shape): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(op, [shape], `axis ${axis} out of range for rank ${rank}`);
  return a;
}

/**
 * numpy broadcasting of two shapes. A symbolic dim broadcasts against 1; two different symbols, or a symbol and a
 * size, must be equal when the graph runs (a symbol bound to 1 does not broadcast: name the dim 1 for that).
 */
export function broadcastShapes(op: string, a: Shape, b: Shape): Dim[] {
  const r = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1) out.push(x);
    else if (typeof x === 'number' && typeof y === 'number' && x !== y) throw new ShapeError(op, [a, b], `cannot broadcast dimension ${x} against ${y}`);
    else out.push(unifyDims(op, x, y, `broadcast dimensions ${x} and ${y}`, [a, b]));
  }
  return out;
}

/** [..., M, K] x [..., K, N] -> [..., M, N] with broadcast batch dimensions. */
export function matmulShape(op: string, a: Shape, b: Shape): Dim[] {
  if (a.length < 2 || b.length < 2) throw new ShapeError(op, [a, b], 'operands need rank >= 2');
  const [m, k] = a.slice(-2);
  const [k2, n] = b.slice(-2);
  unifyDims(op, k, k2, 'inner dimensions', [a, b]);
  return [...broadcastShapes(op, a.slice(0, -2), b.slice(0, -2)), m, n];
}

export function attrNum(op: string, attrs: Attrs, key: string, dflt?: number): number {
  const v = attrs[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ShapeError(op, [], `attribute '${key}' must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

export const unaryFloat = (op: string): OpSpec => ({
  infer(inputs) {
    const [x] = req(op, inputs, 1);
    dtypeIn(op, x, FLOATS);
    return [{ dtype: x.dtype, shape: x.shape }];
  },
});

export const binaryFloat = (op: string): OpSpec => ({
  infer(inputs) {
    const [a, b] = req(op, inputs, 2);
    const d = sameDType(op, [a, b]);
    dtypeIn(op, a, FLOATS, 'operands');
    return [{ dtype: d, shape: broadcastShapes(op, a.shape, b.shape) }];
  },
});
