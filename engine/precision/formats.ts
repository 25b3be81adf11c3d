/** Range and spacing of fp32, fp16 and bf16, read off their bit patterns (IEEE 754 binary32/binary16; bfloat16). */
import { floatInfo, type FloatDType } from '../dtype/dtype.ts';
import { bitsToFloat, floatToBits, largestFinite, nextRepresentable, roundToDtype } from './bits.ts';
import { logSpace } from './util.ts';

export const FLOAT_DTYPES: readonly FloatDType[] = Object.freeze(['fp32', 'fp16', 'bf16'] as const);

export interface FormatFacts {
  dtype: FloatDType;
  bits: number;
  exponentBits: number;
  /** Stored fraction bits; the significand has one more (the implicit leading 1). */
  mantissaBits: number;
  maxFinite: number;
  smallestNormal: number;
  smallestSubnormal: number;
  /** Machine epsilon: the gap between 1 and the next value. */
  epsilon: number;
  /** Largest relative error of rounding a value in the normal range: epsilon / 2. */
  unitRoundoff: number;
  /** Significant decimal digits, (mantissaBits + 1) * log10(2). */
  decimalDigits: number;
  /** Decades between the smallest subnormal and the largest finite value. */
  rangeDecades: number;
}

/**
 * The facts of one format. Only the field widths come from the dtype layer; every value is a decoded bit
 * pattern: largest finite = the pattern below +inf, smallest normal = exponent field 1, smallest subnormal =
 * pattern 1, epsilon = the pattern after 1.0 minus 1.
 */
export function formatFacts(dtype: FloatDType): FormatFacts {
  const { exponentBits, mantissaBits } = floatInfo(dtype);
  const maxFinite = largestFinite(dtype);
  const smallestSubnormal = bitsToFloat(dtype, 1);
  const epsilon = nextRepresentable(dtype, 1) - 1;
  return {
    dtype,
    bits: 1 + exponentBits + mantissaBits,
    exponentBits,
    mantissaBits,
    maxFinite,
    smallestNormal: bitsToFloat(dtype, 2 ** mantissaBits),
    smallestSubnormal,
    epsilon,
    unitRoundoff: epsilon / 2,
    decimalDigits: (mantissaBits + 1) * Math.log10(2),
    rangeDecades: Math.log10(maxFinite / smallestSubnormal),
  };
}

/** fp32, fp16 and bf16 side by side: the table of the lecture's "Numerical Precision" slide, measured. */
export function formatTable(dtypes: readonly FloatDType[] = FLOAT_DTYPES): FormatFacts[] {
  return dtypes.map(formatFacts);
}

/**
 * Unit in the last place at x: x is rounded to the format, then ulp = next value above |x| minus |x|. At the
 * largest finite value, whose next pattern is inf, it is the gap below instead (numpy's spacing says inf there).
 * A value that rounds to inf has ulp inf; at 0 it is the smallest subnormal.
 */
export function ulpAt(dtype: FloatDType, x: number): number {
  if (Number.isNaN(x)) return NaN;
  const v = Math.abs(roundToDtype(dtype, x));
  if (!Number.isFinite(v)) return Infinity;
  const up = nextRepresentable(dtype, v);
  return Number.isFinite(up) ? up - v : v - bitsToFloat(dtype, floatToBits(dtype, v) - 1);
}

export interface UlpSeries {
  dtype: FloatDType;
  /** Magnitudes, log-spaced. */
  x: number[];
  ulp: number[];
  /** ulp / x: between epsilon / 2 and epsilon in the normal range, up to 1 among the subnormals. */
  relative: number[];
}

/**
 * ULP as a function of magnitude on a log grid, for a log-log plot: a staircase that doubles every binade
 * and flattens to the smallest subnormal below the normal range.
 */
export function ulpSeries(dtype: FloatDType, from?: number, to?: number, points = 200): UlpSeries {
  const f = formatFacts(dtype);
  const lo = from ?? f.smallestSubnormal;
  const hi = to ?? f.maxFinite;
  const x = logSpace(lo, hi, points);
  const ulp = x.map((v) => ulpAt(dtype, v));
  return { dtype, x, ulp, relative: ulp.map((u, i) => u / x[i]) };
}
