/** Shared pieces of the precision experiments: abort checks, log-spaced grids and error summaries. */
import { throwIfAborted } from '../abort.ts';
import { ServelabError } from '../errors.ts';

/** Stops a long loop when its own signal or the enclosing cell's scope (engine/abort.ts) was aborted. */
export function checkAbort(signal: AbortSignal | undefined): void {
  signal?.throwIfAborted();
  throwIfAborted();
}

/** `points` values from `from` to `to` (both included), evenly spaced in log10. */
export function logSpace(from: number, to: number, points: number): number[] {
  if (!(from > 0 && to > from && Number.isFinite(to))) {
    throw new ServelabError(`logSpace: need 0 < from < to < inf, got from=${from}, to=${to}`);
  }
  if (!Number.isSafeInteger(points) || points < 2) throw new ServelabError(`logSpace: points must be an integer >= 2, got ${points}`);
  const a = Math.log10(from);
  const step = (Math.log10(to) - a) / (points - 1);
  // The ends are given exactly, so a grid from a format's smallest to its largest value stays inside the format.
  return Array.from({ length: points }, (_, i) => (i === 0 ? from : i === points - 1 ? to : 10 ** (a + i * step)));
}

export interface ErrorSummary {
  max: number;
  mean: number;
  rms: number;
  count: number;
}

/** Max, mean and root-mean-square of |e| over the finite entries. */
export function summarize(errors: ArrayLike<number>): ErrorSummary {
  let max = 0;
  let sum = 0;
  let sq = 0;
  let count = 0;
  for (let i = 0; i < errors.length; i++) {
    const e = Math.abs(errors[i]);
    if (!Number.isFinite(e)) continue;
    if (e > max) max = e;
    sum += e;
    sq += e * e;
    count++;
  }
  return { max, mean: count ? sum / count : NaN, rms: count ? Math.sqrt(sq / count) : NaN, count };
}

export interface Histogram {
  /** bins + 1 edges, ascending. */
  edges: number[];
  counts: number[];
  /** Values outside [edges[0], edges[bins]]. */
  outside: number;
}

export function histogram(values: ArrayLike<number>, lo: number, hi: number, bins: number): Histogram {
  if (!(hi > lo) || !Number.isSafeInteger(bins) || bins < 1) {
    throw new ServelabError(`histogram: need lo < hi and an integer bins >= 1, got lo=${lo}, hi=${hi}, bins=${bins}`);
  }
  const counts = new Array<number>(bins).fill(0);
  const width = (hi - lo) / bins;
  let outside = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v >= lo && v <= hi)) {
      outside++;
      continue;
    }
    counts[Math.min(bins - 1, Math.floor((v - lo) / width))]++;
  }
  return { edges: Array.from({ length: bins + 1 }, (_, i) => lo + i * width), counts, outside };
}

/** Fails with a message that names the option, so a bad call in a notebook cell says what to fix. */
export function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new ServelabError(`${name} must be a positive integer, got ${v}`);
  return v;
}
