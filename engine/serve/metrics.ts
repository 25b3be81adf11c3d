/**
 * What a serving run measured, from the timestamps it recorded: per request the time to first token (TTFT), the time
 * per output token after it (TPOT) and the end-to-end latency; overall tokens/s, requests/s, KV memory and
 * preemptions, and the cost of a million tokens at a price per device-hour.
 */

/** One request's life, in ms since the run started. */
export interface RequestRecord {
  id: string;
  promptTokens: number;
  output: number[];
  arrivalMs: number;
  /** When its first token came out (NaN if none did). */
  firstTokenMs: number;
  finishMs: number;
  /** When each output token came out. */
  tokenMs: number[];
  preemptions: number;
  finishReason: 'length' | 'eos' | 'rejected' | 'aborted';
  /** Why it was rejected. */
  error?: string;
}

/** One iteration of the loop. */
export interface StepLog {
  tMs: number;
  ms: number;
  prefillTokens: number;
  decodeSeqs: number;
  running: number;
  waiting: number;
  swapped: number;
  usedBytes: number;
  reservedBytes: number;
  preempted: number;
  swapOutBytes: number;
  swapInBytes: number;
}

export interface Percentiles {
  p50: number;
  p99: number;
  mean: number;
}

export interface ServeMetrics {
  requests: number;
  completed: number;
  rejected: number;
  /** Output tokens per second of the whole run. */
  throughputTokS: number;
  requestsPerS: number;
  ttftMs: Percentiles;
  tpotMs: Percentiles;
  e2eMs: Percentiles;
  kv: { peakUsedBytes: number; peakReservedBytes: number; poolBytes: number };
  preemptions: number;
  swap: { outBytes: number; inBytes: number };
  durationS: number;
  /** Dollars per million output tokens at `pricePerHour` dollars per device-hour (null without a price). */
  costPer1MTokens: number | null;
}

/** The q-quantile of xs by linear interpolation between order statistics (NaN for none). */
export function quantileOf(xs: readonly number[], q: number): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const at = q * (v.length - 1);
  const lo = Math.floor(at);
  return v[lo] + (v[Math.min(lo + 1, v.length - 1)] - v[lo]) * (at - lo);
}

function percentiles(xs: readonly number[]): Percentiles {
  const v = xs.filter((x) => Number.isFinite(x));
  return { p50: quantileOf(v, 0.5), p99: quantileOf(v, 0.99), mean: v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN };
}

/** TTFT: first token - arrival. */
export const ttft = (r: RequestRecord): number => r.firstTokenMs - r.arrivalMs;
/** TPOT: the mean gap between output tokens after the first (NaN with one token). */
export const tpot = (r: RequestRecord): number => (r.output.length > 1 ? (r.finishMs - r.firstTokenMs) / (r.output.length - 1) : NaN);
export const e2e = (r: RequestRecord): number => r.finishMs - r.arrivalMs;

/** Summarizes a run; durationMs defaults to the last finish (or step) time. */
export function serveMetrics(records: readonly RequestRecord[], steps: readonly StepLog[], opts: { poolBytes?: number; pricePerHour?: number; durationMs?: number } = {}): ServeMetrics {
  const done = records.filter((r) => r.finishReason === 'length' || r.finishReason === 'eos');
  const tokens = records.reduce((s, r) => s + r.output.length, 0);
  const end = opts.durationMs ?? Math.max(0, ...records.map((r) => (Number.isFinite(r.finishMs) ? r.finishMs : 0)), ...steps.map((s) => s.tMs + s.ms));
  const seconds = end / 1000;
  const throughput = seconds > 0 ? tokens / seconds : 0;
  return {
    requests: records.length,
    completed: done.length,
    rejected: records.filter((r) => r.finishReason === 'rejected').length,
    throughputTokS: throughput,
    requestsPerS: seconds > 0 ? done.length / seconds : 0,
    ttftMs: percentiles(done.map(ttft)),
    tpotMs: percentiles(done.map(tpot)),
    e2eMs: percentiles(done.map(e2e)),
    kv: {
      peakUsedBytes: Math.max(0, ...steps.map((s) => s.usedBytes)),
      peakReservedBytes: Math.max(0, ...steps.map((s) => s.reservedBytes)),
      poolBytes: opts.poolBytes ?? 0,
    },
    preemptions: steps.reduce((s, x) => s + x.preempted, 0),
    swap: { outBytes: steps.reduce((s, x) => s + x.swapOutBytes, 0), inBytes: steps.reduce((s, x) => s + x.swapInBytes, 0) },
    durationS: seconds,
    costPer1MTokens: opts.pricePerHour !== undefined && throughput > 0 ? (opts.pricePerHour / (throughput * 3600)) * 1e6 : null,
  };
}
