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
  return { ms: median(ts), runs: ts.length, minMs: ts[0], maxMs: ts[ts.length - 1] };
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

/**
 * a's time over b's: rounds of `runs` calls each, interleaved with the order alternating so that drift on a shared
 * machine reaches both alike; the median of the rounds' ratios (and of each one's medians).
 */
export async function ratioOf(a: () => Promise<unknown>, b: () => Promise<unknown>, rounds: number, runs: number): Promise<{ aMs: number; bMs: number; ratio: number }> {
  const as: number[] = [];
  const bs: number[] = [];
  const ratios: number[] = [];
  const opts = { warmup: 1, minRuns: runs, maxRuns: runs, minTimeMs: 0 };
  for (let r = 0; r < rounds; r++) {
    let ta, tb;
    if (r % 2 === 0) {
      ta = await timeIt(a, opts);
      tb = await timeIt(b, opts);
    } else {
      tb = await timeIt(b, opts);
      ta = await timeIt(a, opts);
    }
    as.push(ta.ms);
    bs.push(tb.ms);
    ratios.push(ta.ms / tb.ms);
  }
  return { aMs: median(as), bMs: median(bs), ratio: median(ratios) };
}

export function median(v: number[]): number {
  const s = [...v].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
