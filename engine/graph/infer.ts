/** Shape and dtype inference helpers shared by the op specs (ONNX operator semantics: numpy broadcasting, axes). */
import { DTypeError, ShapeError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Value } from './graph.ts';

export type AttrValue = number | boolean | string | readonly number[];
export type Attrs = Readonly<Record<string, AttrValue>>;
export interface ValueType {
  dtype: DType;
  shape: readonly number[];
}
export type In = Value | null;

export interface OpSpec {
  /** Inputs that may be null (absent optional inputs). */
  readonly optional?: readonly number[];
  infer(inputs: readonly In[], attrs: Attrs): ValueType[];
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

export function normAxis(op: string, axis: number, rank: number, shape: readonly number[]): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(op, [shape], `axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new ShapeError(op, [a, b], `cannot broadcast dimension ${x} against ${y}`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** [..., M, K] x [..., K, N] -> [..., M, N] with broadcast batch dimensions. */
export function matmulShape(op: string, a: readonly number[], b: readonly number[]): number[] {
  if (a.length < 2 || b.length < 2) throw new ShapeError(op, [a, b], 'operands need rank >= 2');
  const [m, k] = a.slice(-2);
  const [k2, n] = b.slice(-2);
  if (k !== k2) throw new ShapeError(op, [a, b], `inner dimensions differ (${k} vs ${k2})`);
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
