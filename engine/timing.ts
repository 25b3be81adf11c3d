/**
 * Timings a learner can trust on a shared, noisy machine: warm-up runs discarded, then runs until a minimum count
 * and a time budget are both spent, reported as the median with the minimum and the interquartile range, so a
 * sentence that quotes a time can say how much it moved.
 */
import { throwIfAborted } from './abort.ts';
import { ServelabError } from './errors.ts';

export interface TimingOptions {
  /** Runs discarded first (compilation, caches, page faults); default 2. */
  warmup?: number;
  /** At least this many timed runs; default 7. */
  minRuns?: number;
  /** At most this many; default 200. */
  maxRuns?: number;
  /** Keep running (past minRuns, up to maxRuns) until this much time went into timed runs; default 400 ms. */
  budgetMs?: number;
  /** Called with each timed run's milliseconds (a live chart, say). */
  onRun?: (ms: number) => void;
}

export interface Timing {
  medianMs: number;
  minMs: number;
  /** First and third quartiles: half the runs took between them. */
  q1Ms: number;
  q3Ms: number;
  iqrMs: number;
  /** iqrMs / medianMs: 0.05 is a steady measurement, 0.5 a noisy one. */
  relativeSpread: number;
  runs: number;
  /** Every timed run, in order. */
  samplesMs: number[];
}

/** The q-quantile of sorted values, linearly interpolated (numpy's default). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new ServelabError('quantile of no values');
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function summarize(samplesMs: readonly number[]): Timing {
  const s = [...samplesMs].sort((a, b) => a - b);
  const medianMs = quantile(s, 0.5);
  const q1Ms = quantile(s, 0.25);
  const q3Ms = quantile(s, 0.75);
  return { medianMs, minMs: s[0], q1Ms, q3Ms, iqrMs: q3Ms - q1Ms, relativeSpread: medianMs > 0 ? (q3Ms - q1Ms) / medianMs : 0, runs: s.length, samplesMs: [...samplesMs] };
}

/** Times fn (awaited) as described above; an interrupt of the running cell stops between runs. */
export async function timeMs(fn: () => unknown, opts: TimingOptions = {}): Promise<Timing> {
  const { warmup = 2, minRuns = 7, maxRuns = 200, budgetMs = 400, onRun } = opts;
  if (!(minRuns >= 1 && maxRuns >= minRuns)) throw new ServelabError(`timeMs: need 1 <= minRuns <= maxRuns, got ${minRuns} and ${maxRuns}`);
  for (let i = 0; i < warmup; i++) {
    throwIfAborted();
    await fn();
  }
  const samples: number[] = [];
  let spent = 0;
  while (samples.length < minRuns || (samples.length < maxRuns && spent < budgetMs)) {
    throwIfAborted();
    const t0 = performance.now();
    await fn();
    const ms = performance.now() - t0;
    spent += ms;
    samples.push(ms);
    onRun?.(ms);
  }
  return summarize(samples);
}

/** '3.41 ms (IQR 3.30-3.62, 25 runs)': the median with its spread, to quote in a sentence. */
export function formatTiming(t: Timing, digits = 3): string {
  const f = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms.toPrecision(digits));
  return `${f(t.medianMs)} ms (IQR ${f(t.q1Ms)}-${f(t.q3Ms)}, ${t.runs} runs)`;
}
