/**
 * Symbolic dimensions (ONNX dim_param): a graph's shapes may name sizes ('batch', 'seq', 'past') that are bound when
 * it runs, so one compiled session serves every size. A named dim is a product of a positive integer and symbols,
 * written canonically as 'seq', 'batch*seq' or '4*seq'; plain sizes stay numbers. Joining along an axis adds dims
 * and slicing subtracts them, so a dim may also be a sum of such terms with integer coefficients: a KV cache of
 * 'past' tokens extended by 'seq' new ones is 'past+seq' long, and its last token starts at 'past+seq-1'.
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

/** One term of a dim: an integer coefficient times symbols (sorted; a symbol may repeat). */
export interface DimTerm {
  readonly coef: number;
  readonly syms: readonly string[];
}
type Poly = readonly DimTerm[];

/** Parsed dims by their text: every run resolves its graph's symbolic dims, and a graph has few distinct ones. */
const parsed = new Map<string, Poly>();
const PARSED_MAX = 4096;

function parse(d: Dim): Poly {
  if (typeof d === 'number') return norm([{ coef: d, syms: [] }]);
  let p = parsed.get(d);
  if (!p) {
    if (parsed.size >= PARSED_MAX) parsed.clear();
    p = parseText(d);
    parsed.set(d, p);
  }
  return p;
}

function parseText(d: string): Poly {
  const terms: DimTerm[] = [];
  // 'past+seq-1' -> 'past', '+seq', '-1': each term keeps its sign.
  for (const raw of d.replace(/\s+/g, '').split(/(?=[+-])/)) {
    const body = raw.replace(/^[+-]/, '');
    let coef = raw.startsWith('-') ? -1 : 1;
    const syms: string[] = [];
    for (const p of body.split('*')) {
      if (SYMBOL.test(p)) syms.push(p);
      else if (/^\d+$/.test(p)) coef *= Number(p);
      else throw new ShapeError('shape', [], `dimension ${JSON.stringify(d)} is neither a size nor a symbol name (letters, digits, _), a product of them, or a sum of products`);
    }
    terms.push({ coef, syms: syms.sort() });
  }
  return norm(terms);
}

/** Like terms combined, zero terms dropped, terms ordered by their symbols with the constant last. */
function norm(terms: readonly DimTerm[]): Poly {
  const by = new Map<string, DimTerm>();
  for (const t of terms) {
    const key = t.syms.join('*');
    by.set(key, { coef: (by.get(key)?.coef ?? 0) + t.coef, syms: t.syms });
  }
  const rank = (k: string) => (k === '' ? '\uffff' : k);
  return [...by].filter(([, t]) => t.coef !== 0).sort(([a], [b]) => (rank(a) < rank(b) ? -1 : rank(a) > rank(b) ? 1 : 0)).map(([, t]) => t);
}

function format(p: Poly): Dim {
  if (p.length === 0) return 0;
  if (p.length === 1 && p[0].syms.length === 0) return p[0].coef;
  return p
    .map(({ coef, syms }, i) => {
      const c = Math.abs(coef);
      const body = syms.length === 0 ? `${c}` : c === 1 ? syms.join('*') : `${c}*${syms.join('*')}`;
      return (coef < 0 ? '-' : i === 0 ? '' : '+') + body;
    })
    .join('');
}

const mul = (p: Poly, q: Poly): Poly => norm(p.flatMap((t) => q.map((u) => ({ coef: t.coef * u.coef, syms: [...t.syms, ...u.syms].sort() }))));

/** t / u for single terms, when the coefficient divides and u's symbols are among t's; else null. */
function divTerm(t: DimTerm, u: DimTerm): DimTerm | null {
  if (t.coef % u.coef !== 0) return null;
  const rest = [...t.syms];
  for (const s of u.syms) {
    const i = rest.indexOf(s);
    if (i < 0) return null;
    rest.splice(i, 1);
  }
  return { coef: t.coef / u.coef, syms: rest };
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
  return shape.flatMap((d) => (typeof d === 'number' ? [] : parse(d).flatMap((t) => t.syms)));
}

export function dimProduct(dims: Shape): Dim {
  return format(dims.reduce<Poly>((acc, d) => mul(acc, parse(d)), [{ coef: 1, syms: [] }]));
}

/** The length of dims joined end to end ('past' and 'seq' make 'past+seq'). */
export function dimSum(dims: Shape): Dim {
  return format(norm(dims.flatMap((d) => parse(d))));
}

/** a - b ('past+seq' less 'past' is 'seq'); may be negative for some sizes, which resolveDim refuses. */
export function dimSub(a: Dim, b: Dim): Dim {
  return format(norm([...parse(a), ...parse(b).map((t) => ({ coef: -t.coef, syms: t.syms }))]));
}

/** The terms of a dim in canonical order (sizes as one constant term; 0 has none). */
export function dimTerms(d: Dim): readonly DimTerm[] {
  return parse(d);
}

/**
 * a / b when it divides exactly (symbols cancel), else null. A sum divides by a single term term by term; by a
 * sum only when the quotient is a single term ('2*past+2*seq' / 'past+seq' = 2).
 */
export function dimDivide(a: Dim, b: Dim): Dim | null {
  const p = parse(a);
  const q = parse(b);
  if (q.length === 0) return null;
  if (p.length === 0) return 0;
  if (q.length === 1) {
    const parts = p.map((t) => divTerm(t, q[0]));
    return parts.every((t) => t !== null) ? format(norm(parts as DimTerm[])) : null;
  }
  for (const t of p) {
    const m = divTerm(t, q[0]);
    if (m && format(mul(q, [m])) === format(p)) return format([m]);
  }
  return null;
}

export const sameDim = (a: Dim, b: Dim): boolean => a === b || canonDim(a) === canonDim(b);

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** The size of a dim under a binding of its symbols. */
export function resolveDim(d: Dim, bindings: ReadonlyMap<string, number>): number {
  if (typeof d === 'number') return d;
  let n = 0;
  for (const t of parse(d)) {
    let v = t.coef;
    for (const s of t.syms) {
      const b = bindings.get(s);
      if (b === undefined) throw new ShapeError('shape', [], `symbol '${s}' is not bound by any input of this run`);
      v *= b;
    }
    n += v;
  }
  if (n < 0) {
    const used = symbolsOf([d]).filter((s, i, all) => all.indexOf(s) === i).map((s) => `${s} = ${bindings.get(s)}`);
    throw new ShapeError('shape', [], `dimension '${d}' is ${n} in this run (${used.join(', ')}); a size cannot be negative`);
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
