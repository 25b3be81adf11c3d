/**
 * Symbolic dimensions (ONNX dim_param): a graph's shapes may name sizes ('batch', 'seq', 'past') that are bound when
 * it runs, so one compiled session serves every size. A named dim is a product of a positive integer and symbols,
 * written canonically as 'seq', 'batch*seq' or '4*seq'; plain sizes stay numbers.
 */
import { ShapeError } from '../errors.ts';

export type Dim = number | string;
export type Shape = readonly Dim[];

/** Two dims an op needs equal that only a run can compare: checked once the symbols are bound. */
export interface DimConstraint {
  readonly op: string;
  readonly what: string;
  readonly a: Dim;
  readonly b: Dim;
}

const SYMBOL = /^[A-Za-z_][A-Za-z0-9_]*$/;

interface Product {
  coef: number;
  syms: string[];
}

function parse(d: Dim): Product {
  if (typeof d === 'number') return { coef: d, syms: [] };
  let coef = 1;
  const syms: string[] = [];
  for (const part of d.split('*')) {
    const p = part.trim();
    if (SYMBOL.test(p)) syms.push(p);
    else if (/^\d+$/.test(p)) coef *= Number(p);
    else throw new ShapeError('shape', [], `dimension ${JSON.stringify(d)} is neither a size nor a symbol name (letters, digits, _) or a product of them`);
  }
  return { coef, syms: syms.sort() };
}

function format({ coef, syms }: Product): Dim {
  if (syms.length === 0 || coef === 0) return coef;
  return coef === 1 ? syms.join('*') : `${coef}*${syms.join('*')}`;
}

/** The canonical form of a dim ('seq*batch' -> 'batch*seq', '1*seq' -> 'seq'). */
export function canonDim(d: Dim): Dim {
  return typeof d === 'number' ? d : format(parse(d));
}

/** A dim as a shape input may give it: a size, or a symbol name. Products only arise from inference. */
export function checkInputDim(d: Dim, what: string): Dim {
  if (typeof d === 'number') {
    if (!Number.isSafeInteger(d) || d < 0) throw new ShapeError('shape', [], `${what}: dimension ${d} is not a non-negative integer`);
    return d;
  }
  if (typeof d !== 'string' || !SYMBOL.test(d)) throw new ShapeError('shape', [], `${what}: dimension ${JSON.stringify(d)} must be a size or a symbol name such as 'batch'`);
  return d;
}

export const isStatic = (shape: Shape): shape is readonly number[] => shape.every((d) => typeof d === 'number');

export function symbolsOf(shape: Shape): string[] {
  return shape.flatMap((d) => (typeof d === 'number' ? [] : parse(d).syms));
}

export function dimProduct(dims: Shape): Dim {
  let coef = 1;
  const syms: string[] = [];
  for (const d of dims) {
    const p = parse(d);
    coef *= p.coef;
    syms.push(...p.syms);
  }
  return format({ coef, syms: syms.sort() });
}

/** a / b when it divides exactly (symbols cancel), else null. */
export function dimDivide(a: Dim, b: Dim): Dim | null {
  const p = parse(a);
  const q = parse(b);
  if (q.coef === 0 || p.coef % q.coef !== 0) return null;
  const rest = [...p.syms];
  for (const s of q.syms) {
    const i = rest.indexOf(s);
    if (i < 0) return null;
    rest.splice(i, 1);
  }
  return format({ coef: p.coef / q.coef, syms: rest });
}

export const sameDim = (a: Dim, b: Dim): boolean => a === b || canonDim(a) === canonDim(b);

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** The size of a dim under a binding of its symbols. */
export function resolveDim(d: Dim, bindings: ReadonlyMap<string, number>): number {
  if (typeof d === 'number') return d;
  const p = parse(d);
  let n = p.coef;
  for (const s of p.syms) {
    const v = bindings.get(s);
    if (v === undefined) throw new ShapeError('shape', [], `symbol '${s}' is not bound by any input of this run`);
    n *= v;
  }
  return n;
}

export function resolveShape(shape: Shape, bindings: ReadonlyMap<string, number>): number[] {
  return shape.map((d) => resolveDim(d, bindings));
}

// Shape inference runs inside Graph.op, synchronously; the constraints it finds are collected for that graph.
let collector: DimConstraint[] | null = null;

export function collectConstraints<T>(into: DimConstraint[], fn: () => T): T {
  const prev = collector;
  collector = into;
  try {
    return fn();
  } finally {
    collector = prev;
  }
}

/**
 * Two dims an op needs equal. Known sizes must agree now; when either is symbolic and they differ, the check is
 * deferred to run time (a constraint of the graph) and the more concrete dim is returned.
 */
export function unifyDims(op: string, a: Dim, b: Dim, what: string, shapes: readonly Shape[] = []): Dim {
  if (sameDim(a, b)) return a;
  if (typeof a === 'number' && typeof b === 'number') throw new ShapeError(op, shapes, `${what} differ (${a} vs ${b})`);
  collector?.push({ op, what, a, b });
  return typeof a === 'number' ? a : b;
}
