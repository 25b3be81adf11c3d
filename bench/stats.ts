/** Timing: the median of several runs after warm-up, since these machines are shared and noisy. */
export interface Timing {
  ms: number;
  runs: number;
  minMs: number;
  maxMs: number;
}

export async function timeIt(fn: () => Promise<unknown> | unknown, opts: { warmup?: number; minRuns?: number; maxRuns?: number; minTimeMs?: number } = {}): Promise<Timing> {
  const { warmup = 2, minRuns = 5, maxRuns = 50, minTimeMs = 300 } = opts;
  for (let i = 0; i < warmup; i++) await fn();
  const ts: number[] = [];
  const start = performance.now();
  while (ts.length < minRuns || (ts.length < maxRuns && performance.now() - start < minTimeMs)) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  ts.sort((a, b) => a - b);
  const mid = ts.length >> 1;
  const ms = ts.length % 2 ? ts[mid] : (ts[mid - 1] + ts[mid]) / 2;
  return { ms, runs: ts.length, minMs: ts[0], maxMs: ts[ts.length - 1] };
}

/** Per-call time of a very short operation: the median over batches of `inner` calls, in microseconds. */
export async function timeCallUs(fn: () => Promise<unknown>, inner = 200, batches = 15): Promise<number> {
  const t = await timeIt(
    async () => {
      for (let i = 0; i < inner; i++) await fn();
    },
    { warmup: 2, minRuns: batches, maxRuns: batches, minTimeMs: 0 },
  );
  return (t.ms * 1000) / inner;
}
