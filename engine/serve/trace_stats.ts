/**
 * What a request trace offers a server: how many requests and samples, over how long, at what rate, and its input
 * and output lengths (mean, nearest-rank p50 and p99, max), the lengths the vLLM paper (Kwon et al., SOSP 2023,
 * section 6.1, Fig. 11) shows of its datasets.
 */
import type { TraceRequest } from './trace.ts';

/** Summary of a list of lengths; percentiles by nearest rank (the smallest value with at least p% of them at or below it). */
export interface LengthStats {
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

export interface TraceStats {
  count: number;
  /** Sequences to generate: the sum of every request's n. */
  samples: number;
  /** From the first arrival to the last, in seconds. */
  durationS: number;
  /** Requests per second over the gaps, (count - 1) / durationS; Infinity when all arrive at once, null below 2 requests. */
  offeredRate: number | null;
  input: LengthStats;
  /** maxTokens, per sample. */
  output: LengthStats;
}

function lengthStats(xs: number[]): LengthStats {
  if (xs.length === 0) return { mean: 0, p50: 0, p99: 0, max: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p: number) => s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: rank(50), p99: rank(99), max: s[s.length - 1] };
}

/** What a trace offers a server: how many requests, how fast, how long. All lengths 0 for an empty trace. */
export function traceStats(requests: readonly TraceRequest[]): TraceStats {
  // A loop, not Math.max(...times): spreading a million arguments overflows the stack.
  let first = Infinity;
  let last = -Infinity;
  for (const r of requests) {
    first = Math.min(first, r.arrivalMs);
    last = Math.max(last, r.arrivalMs);
  }
  const durationS = requests.length ? (last - first) / 1000 : 0;
  return {
    count: requests.length,
    samples: requests.reduce((a, r) => a + (r.n ?? 1), 0),
    durationS,
    offeredRate: requests.length < 2 ? null : (requests.length - 1) / durationS,
    input: lengthStats(requests.map((r) => r.prompt.length)),
    output: lengthStats(requests.map((r) => r.maxTokens)),
  };
}
