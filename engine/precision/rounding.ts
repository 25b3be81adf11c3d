/** Rounding error distributions of fp32 -> fp16 and fp32 -> bf16, against the unit roundoff u (Higham, Accuracy and Stability, 2.1). */
import type { FloatDType } from '../dtype/dtype.ts';
import { roundToDtype } from './bits.ts';
import { formatFacts } from './formats.ts';
import { DEFAULT_SEED, sampleRange } from './random.ts';
import { checkAbort, histogram, positiveInt, summarize, type Histogram } from './util.ts';

/** (fl(x) - x) / x for x rounded to the format; bounded by u = epsilon / 2 wherever fl(x) is normal. */
export function relativeRoundingError(dtype: FloatDType, x: number): number {
  return (roundToDtype(dtype, x) - x) / x;
}

export interface RoundingStats {
  dtype: FloatDType;
  /** epsilon / 2: 2^-11 for fp16, 2^-8 for bf16. */
  unitRoundoff: number;
  /** Of |relative error|. */
  max: number;
  mean: number;
  rms: number;
  /** The same three in units of u: max stays at or below 1. */
  maxOverU: number;
  meanOverU: number;
  rmsOverU: number;
  /**
   * Mean and rms |relative error| a model predicts: absolute error uniform over half an ulp either side, the
   * significand uniform (linear) or log-uniform (log) within each binade. Exact in expectation for whole binades.
   */
  predicted: { mean: number; rms: number };
  /** Signed relative error in units of u, over [-1, 1]. */
  histogram: Histogram;
}

export interface RoundingResult {
  n: number;
  lo: number;
  hi: number;
  spacing: 'linear' | 'log';
  seed: number;
  formats: RoundingStats[];
}

export interface RoundingOptions {
  n?: number;
  /** The default [2^-10, 2^10) spans 20 whole binades, all inside fp16's normal range. */
  lo?: number;
  hi?: number;
  spacing?: 'linear' | 'log';
  dtypes?: readonly FloatDType[];
  bins?: number;
  seed?: number;
  signal?: AbortSignal;
}

// E[1/m] and E[1/m^2] for a significand m in [1, 2): uniform (linear) or with density 1/(m ln 2) (log).
const MOMENTS = {
  linear: { inv: Math.LN2, inv2: 0.5 },
  log: { inv: 1 / (2 * Math.LN2), inv2: 0.375 / Math.LN2 },
} as const;

/**
 * Rounds n seeded fp32 values in [lo, hi) to each format and reports the distribution of the relative error,
 * next to u and the model's prediction: about 0.35 u mean and 0.42 u rms, never more than u.
 */
export function roundingErrors(opts: RoundingOptions = {}): RoundingResult {
  const { n = 100_000, lo = 2 ** -10, hi = 2 ** 10, spacing = 'log', dtypes = ['fp16', 'bf16'], bins = 40, seed = DEFAULT_SEED, signal } = opts;
  positiveInt('roundingErrors n', n);
  const xs = sampleRange(n, lo, hi, spacing, seed);
  const formats = dtypes.map((dtype) => {
    const u = formatFacts(dtype).unitRoundoff;
    const rel = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if ((i & 0xffff) === 0) checkAbort(signal);
      rel[i] = xs[i] === 0 ? NaN : relativeRoundingError(dtype, xs[i]);
    }
    const s = summarize(rel);
    const inUnits = rel.map((e) => e / u);
    const m = MOMENTS[spacing];
    return {
      dtype,
      unitRoundoff: u,
      max: s.max,
      mean: s.mean,
      rms: s.rms,
      maxOverU: s.max / u,
      meanOverU: s.mean / u,
      rmsOverU: s.rms / u,
      // |e| <= ulp / 2 = u * 2^E, e uniform: E|e| = u 2^E / 2 and E[e^2] = u^2 4^E / 3, then divided by x = m 2^E.
      predicted: { mean: (u / 2) * m.inv, rms: u * Math.sqrt(m.inv2 / 3) },
      histogram: histogram(inUnits, -1, 1, bins),
    };
  });
  return { n, lo, hi, spacing, seed, formats };
}
