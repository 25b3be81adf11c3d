/** Overflow and underflow: what fp32, fp16 and bf16 make of a value (the lecture's "Computational Errors": 10^6 -> inf in fp16). */
import type { FloatDType } from '../dtype/dtype.ts';
import { roundToDtype } from './bits.ts';
import { FLOAT_DTYPES, formatFacts } from './formats.ts';

export type ValueKind = 'normal' | 'subnormal' | 'zero' | 'inf' | 'nan';

export function classifyValue(dtype: FloatDType, v: number): ValueKind {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return 'inf';
  if (v === 0) return 'zero';
  return Math.abs(v) < formatFacts(dtype).smallestNormal ? 'subnormal' : 'normal';
}

export interface ValueRow {
  value: number;
  fp32: number;
  fp16: number;
  bf16: number;
  kind: Record<FloatDType, ValueKind>;
  /** (stored - value) / value; NaN where the format gives inf or the value is 0. */
  relError: Record<FloatDType, number>;
  note: string;
}

/**
 * The lecture's torch.tensor(10**6, dtype=torch.float16), then the edges: fp16's largest value 65504 and the
 * overflow threshold 65520 (halfway to 2^16, where round-to-nearest-even picks inf), integers past 2^11 and 2^8,
 * fp32's largest value that bf16 cannot hold, and tiny values that become subnormal or round to zero.
 */
export const OVERFLOW_VALUES: readonly number[] = Object.freeze([
  1e6, 65504, 65519, 65520, 1e5, 2049, 257, 0.1, 1e-5, 1e-7, 1e-8, 1e-40, 3.4e38,
]);

const relError = (stored: number, value: number) => (value === 0 || !Number.isFinite(stored) ? NaN : (stored - value) / value);

const fmt = (v: number) => (Number.isFinite(v) ? Number(v.toPrecision(6)).toString() : String(v));

function describe(value: number, d: FloatDType, stored: number, kind: ValueKind): string | null {
  const f = formatFacts(d);
  if (kind === 'inf' && Number.isFinite(value)) return `${d}: overflows to inf (largest finite ${fmt(f.maxFinite)})`;
  // Round to nearest gives 0 below half the smallest subnormal: underflow, not a flush-to-zero mode (subnormals survive).
  if (kind === 'zero' && value !== 0) return `${d}: underflows to 0 (below half its smallest subnormal ${fmt(f.smallestSubnormal)})`;
  if (kind === 'subnormal') return `${d}: subnormal ${fmt(stored)} (below ${fmt(f.smallestNormal)}, fewer significant bits)`;
  if (stored !== value) return `${d}: rounds to ${stored} (relative error ${relError(stored, value).toExponential(1)})`;
  return null;
}

/**
 * What each format stores for each value. A value is first an fp32 (as a checkpoint stores weights), then
 * rounded to fp16 and bf16 by the engine's bit-exact conversions; so the fp32 column itself may already be
 * rounded, subnormal (1e-40) or zero.
 */
export function overflowTable(values: readonly number[] = OVERFLOW_VALUES): ValueRow[] {
  return values.map((value) => {
    const stored = { fp32: roundToDtype('fp32', value), fp16: roundToDtype('fp16', value), bf16: roundToDtype('bf16', value) };
    const kind = { fp32: classifyValue('fp32', stored.fp32), fp16: classifyValue('fp16', stored.fp16), bf16: classifyValue('bf16', stored.bf16) };
    const notes = FLOAT_DTYPES.map((d) => describe(value, d, stored[d], kind[d])).filter((s): s is string => s !== null);
    return {
      value,
      ...stored,
      kind,
      relError: { fp32: relError(stored.fp32, value), fp16: relError(stored.fp16, value), bf16: relError(stored.bf16, value) },
      note: notes.length ? notes.join('; ') : 'exact in all three formats',
    };
  });
}

export interface ArithmeticRow {
  expr: string;
  /** The exact result in float64. */
  exact: number;
  fp32: number;
  fp16: number;
  bf16: number;
  why: string;
}

type Rounder = (x: number) => number;

/** Every operand and every intermediate result rounded to the format, as a kernel storing that dtype would. */
const ARITHMETIC: readonly { expr: string; f: (r: Rounder) => number; why: string }[] = [
  { expr: '300 * 300', f: (r) => r(r(300) * r(300)), why: 'a product of two modest values exceeds 65504' },
  { expr: '60000 + 10000', f: (r) => r(r(60000) + r(10000)), why: 'a sum of two finite fp16 values overflows' },
  { expr: 'exp(12)', f: (r) => r(Math.exp(r(12))), why: 'softmax without subtracting the max: exp of a logit of 12 is 162755' },
  { expr: '300 * 300 - 300 * 300', f: (r) => r(r(r(300) * r(300)) - r(r(300) * r(300))), why: 'inf - inf is NaN: one overflow poisons everything after it' },
  { expr: '0.0001 * 0.0001', f: (r) => r(r(0.0001) * r(0.0001)), why: 'underflow: 1e-8 is below half of fp16\'s smallest subnormal' },
  { expr: '1 / (0.0001 * 0.0001)', f: (r) => r(r(1) / r(r(0.0001) * r(0.0001))), why: 'the underflowed 0 then divides: inf' },
];

/** The lecture's "inf and nan" from ordinary arithmetic: each expression evaluated in each format. */
export function arithmeticOverflow(): ArithmeticRow[] {
  return ARITHMETIC.map(({ expr, f, why }) => ({
    expr,
    exact: f((x) => x),
    fp32: f((x) => roundToDtype('fp32', x)),
    fp16: f((x) => roundToDtype('fp16', x)),
    bf16: f((x) => roundToDtype('bf16', x)),
    why,
  }));
}
