/**
 * Two variants timed in interleaved turns, the order alternating as in bench/stats.ts's ratioOf: each one's median and
 * quartiles, and the spread of the turns' ratios (the KV benchmark's paged against contiguous).
 */
import { timeMs } from '../engine/index.ts';
import { median } from './stats.ts';

/** A median with its interquartile range, in ms. */
export interface Spread {
  ms: number;
  q1Ms: number;
  q3Ms: number;
  runs: number;
}

/** paged / contiguous over interleaved turns, each turn's ratio of two medians: their median, quartiles and extremes. */
export interface TurnRatio {
  median: number;
  q1: number;
  q3: number;
  low: number;
  high: number;
  turns: number;
}

/** The value at fraction f of the sorted values (the nearest rank). */
const at = (sorted: readonly number[], f: number) => sorted[Math.round((sorted.length - 1) * f)];

export function toSpread(samples: readonly number[]): Spread {
  const s = [...samples].sort((a, b) => a - b);
  return { ms: median(s), q1Ms: at(s, 0.25), q3Ms: at(s, 0.75), runs: s.length };
}

export function turnRatio(ratios: readonly number[]): TurnRatio {
  const s = [...ratios].sort((a, b) => a - b);
  return { median: median(s), q1: at(s, 0.25), q3: at(s, 0.75), low: s[0], high: s[s.length - 1], turns: s.length };
}

/**
 * Two variants timed in turns, the order alternating, so that drift on a shared machine reaches both alike: each turn
 * times one then the other (for budgetMs, or exactly `runs` calls), and its ratio is of the two medians.
 */
export async function inTurns(contiguous: () => Promise<unknown>, paged: () => Promise<unknown>, turns: number, how: { budgetMs: number } | { runs: number }) {
  const samples = { c: [] as number[], p: [] as number[] };
  const ratios: number[] = [];
  for (let t = 0; t < turns; t++) {
    const opts = 'runs' in how ? { warmup: 0, minRuns: how.runs, maxRuns: how.runs, budgetMs: 0 } : { warmup: t === 0 ? 3 : 1, minRuns: 5, maxRuns: 200, budgetMs: how.budgetMs };
    const med = { c: 0, p: 0 };
    for (const v of t % 2 === 0 ? (['c', 'p'] as const) : (['p', 'c'] as const)) {
      const r = await timeMs(v === 'c' ? contiguous : paged, opts);
      samples[v].push(...r.samplesMs);
      med[v] = r.medianMs;
    }
    ratios.push(med.p / med.c);
  }
  return { contiguous: toSpread(samples.c), paged: toSpread(samples.p), ratio: turnRatio(ratios), samples, ratios };
}
