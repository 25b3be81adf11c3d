/** Accumulation error: a long sum with every partial sum rounded to fp16, bf16 or fp32, against compensated fp64 (Higham 2002, ch. 4; Neumaier 1974). */
import type { FloatDType } from '../dtype/dtype.ts';
import { ServelabError } from '../errors.ts';
import { roundToDtype } from './bits.ts';
import { formatFacts, ulpAt } from './formats.ts';
import { DEFAULT_SEED, sampleValues, type Distribution } from './random.ts';
import { checkAbort, positiveInt } from './util.ts';

/** Where a value or a partial sum lives: one of the engine's float formats, or a JS number (float64). */
export type SumPrecision = FloatDType | 'fp64';

export const SUM_METHODS = {
  fp16: { input: 'fp16', acc: 'fp16', label: 'fp16 inputs, fp16 sum' },
  bf16: { input: 'bf16', acc: 'bf16', label: 'bf16 inputs, bf16 sum' },
  'fp16-fp32acc': { input: 'fp16', acc: 'fp32', label: 'fp16 inputs, fp32 accumulator (mixed precision)' },
  fp32: { input: 'fp32', acc: 'fp32', label: 'fp32 inputs, fp32 sum' },
  fp64: { input: 'fp32', acc: 'fp64', label: 'fp32 inputs, float64 sum' },
} as const satisfies Record<string, { input: FloatDType; acc: SumPrecision; label: string }>;
export type SumMethod = keyof typeof SUM_METHODS;

const round = (p: SumPrecision, x: number) => (p === 'fp64' ? x : roundToDtype(p, x));

/**
 * Left-to-right sum: each input rounded to `input`, each partial sum to `acc`, starting from 0. The exact sum of
 * two such values is rounded once to fp32 by Math.fround and then to fp16 or bf16, which equals rounding it once
 * (a double rounding through 24 bits is harmless for 11- and 8-bit results, since 24 >= 2p + 2).
 */
export function sequentialSum(values: ArrayLike<number>, input: FloatDType, acc: SumPrecision, signal?: AbortSignal): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) {
    if ((i & 0xffff) === 0) checkAbort(signal);
    s = round(acc, s + round(input, values[i]));
  }
  return s;
}

/** Neumaier's compensated sum in float64: the running error term carries what each addition rounded away. */
export function compensatedSum(values: ArrayLike<number>): number {
  let s = 0;
  let c = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    const t = s + x;
    c += Math.abs(s) >= Math.abs(x) ? s - t + x : x - t + s;
    s = t;
  }
  return s + c;
}

/**
 * The smallest power of two at which a running sum in `dtype` stops growing when `addend` is added: the first
 * P whose ulp is at least 2 * addend, so P + addend rounds back to P (a tie goes to P, whose significand is
 * even). fp16 with addends below 1: 2048 (ulp 2); below 0.5: 1024. Infinity if the format runs out first.
 */
export function stagnationPoint(dtype: FloatDType, addend: number): number {
  const a = Math.abs(addend);
  if (!(a > 0) || !Number.isFinite(a)) throw new ServelabError(`stagnationPoint: addend must be finite and non-zero, got ${addend}`);
  const { maxFinite } = formatFacts(dtype);
  for (let e = Math.floor(Math.log2(a)); 2 ** e <= maxFinite; e++) {
    if (ulpAt(dtype, 2 ** e) >= 2 * a) return 2 ** e;
  }
  return Infinity;
}

export interface SumMethodResult {
  method: SumMethod;
  label: string;
  input: FloatDType;
  acc: SumPrecision;
  final: number;
  /** final - reference. */
  error: number;
  /** |final - reference| / |reference|. */
  relError: number;
  /** How many values had been added when the sum last changed; less than n means it stalled. */
  lastChange: number;
  /**
   * For an fp16 or bf16 accumulator: where the sum stops growing for the largest input (stagnationPoint), and
   * where an input of average magnitude stops counting. null for fp32 and float64 sums.
   */
  stall: { stopsGrowingAt: number; meanAddendLostAt: number } | null;
  series: { sum: number[]; relError: number[] };
}

export interface AccumulationResult {
  n: number;
  /** 'custom' when the values were given. */
  distribution: Distribution | 'custom';
  seed: number;
  /** Compensated float64 sum of the fp32 inputs: the reference. */
  reference: number;
  /** Number of values summed at each series point (evenly spaced, ending at n). */
  steps: number[];
  methods: SumMethodResult[];
}

export interface AccumulationOptions {
  n?: number;
  distribution?: Distribution;
  /** Your own inputs instead of seeded ones (fp32 values; n and distribution are then ignored). */
  values?: ArrayLike<number>;
  methods?: readonly SumMethod[];
  /** Series length for plotting. */
  points?: number;
  seed?: number;
  signal?: AbortSignal;
}

/**
 * Sums n values (10^5 uniform [0, 1) by default) by each method, recording the running sum and its relative
 * error against the compensated float64 running sum. With fp16 the sum stalls at 2048, with bf16 at 256.
 */
export function accumulationError(opts: AccumulationOptions = {}): AccumulationResult {
  const { distribution = 'uniform', methods = Object.keys(SUM_METHODS) as SumMethod[], points = 200, seed = DEFAULT_SEED, signal } = opts;
  const xs = opts.values ? Float32Array.from(opts.values) : sampleValues(positiveInt('accumulationError n', opts.n ?? 100_000), distribution, seed);
  const n = positiveInt('accumulationError: number of values', xs.length);
  positiveInt('accumulationError points', points);
  const specs = methods.map((m) => {
    const spec = SUM_METHODS[m];
    if (!spec) throw new ServelabError(`unknown sum method ${JSON.stringify(m)}; expected one of ${Object.keys(SUM_METHODS).join(', ')}`);
    return spec;
  });
  const at = Array.from({ length: Math.min(points, n) }, (_, j) => Math.round(((j + 1) * n) / Math.min(points, n)));
  const sums = new Float64Array(specs.length);
  const lastChange = new Array<number>(specs.length).fill(0);
  const series = specs.map(() => ({ sum: [] as number[], relError: [] as number[] }));
  let s = 0;
  let c = 0;
  let next = 0;
  for (let i = 0; i < n; i++) {
    if ((i & 0x3fff) === 0) checkAbort(signal);
    const x = xs[i];
    const t = s + x;
    c += Math.abs(s) >= Math.abs(x) ? s - t + x : x - t + s;
    s = t;
    for (let k = 0; k < specs.length; k++) {
      const v = round(specs[k].acc, sums[k] + round(specs[k].input, x));
      if (v !== sums[k]) lastChange[k] = i + 1;
      sums[k] = v;
    }
    if (i + 1 === at[next]) {
      const ref = s + c;
      for (let k = 0; k < specs.length; k++) {
        series[k].sum.push(sums[k]);
        series[k].relError.push(Math.abs(sums[k] - ref) / Math.abs(ref));
      }
      next++;
    }
  }
  const reference = s + c;
  let meanAbs = 0;
  let maxAbs = 0;
  for (let i = 0; i < n; i++) {
    meanAbs += Math.abs(xs[i]) / n;
    maxAbs = Math.max(maxAbs, Math.abs(xs[i]));
  }
  return {
    n,
    distribution: opts.values ? 'custom' : distribution,
    seed,
    reference,
    steps: at,
    methods: specs.map((spec, k) => {
      const acc = spec.acc;
      const low = acc === 'fp16' || acc === 'bf16';
      const largest = roundToDtype(spec.input, maxAbs);
      return {
        method: methods[k],
        label: spec.label,
        input: spec.input,
        acc,
        final: sums[k],
        error: sums[k] - reference,
        relError: Math.abs(sums[k] - reference) / Math.abs(reference),
        lastChange: lastChange[k],
        stall: low && maxAbs > 0
          ? {
              stopsGrowingAt: Number.isFinite(largest) ? stagnationPoint(acc, largest) : Infinity,
              meanAddendLostAt: stagnationPoint(acc, meanAbs),
            }
          : null,
        series: series[k],
      };
    }),
  };
}
