/** The lessons' timing helper: quantiles as numpy computes them, warm-up discarded, run counts and budget honoured. */
import { describe, expect, it } from 'vitest';
import { formatTiming, quantile, summarize, timeMs } from '../../engine/index.ts';

describe('timing', () => {
  it('quantiles interpolate linearly, as numpy.quantile does', () => {
    // numpy.quantile([1, 2, 3, 4, 10], [0.25, 0.5, 0.75]) == [2., 3., 4.]; of [1, 2, 3, 4]: [1.75, 2.5, 3.25]
    expect([0.25, 0.5, 0.75].map((q) => quantile([1, 2, 3, 4, 10], q))).toEqual([2, 3, 4]);
    expect([0.25, 0.5, 0.75].map((q) => quantile([1, 2, 3, 4], q))).toEqual([1.75, 2.5, 3.25]);
    const t = summarize([4, 1, 10, 3, 2]);
    expect([t.medianMs, t.minMs, t.iqrMs, t.relativeSpread, t.runs]).toEqual([3, 1, 2, 2 / 3, 5]);
    expect(formatTiming(t)).toBe('3.00 ms (IQR 2.00-4.00, 5 runs)');
  });

  it('discards the warm-up runs and keeps running until both the minimum count and the budget are spent', async () => {
    let calls = 0;
    const t = await timeMs(() => void calls++, { warmup: 3, minRuns: 5, maxRuns: 9, budgetMs: 1e9 });
    expect([calls, t.runs, t.samplesMs.length]).toEqual([12, 9, 9]);
    let slow = 0;
    const u = await timeMs(() => new Promise((r) => setTimeout(r, 5, slow++)), { warmup: 0, minRuns: 2, maxRuns: 1000, budgetMs: 30 });
    expect(u.runs).toBeGreaterThanOrEqual(2);
    expect(u.runs).toBeLessThan(12);
    expect(u.minMs).toBeGreaterThanOrEqual(4);
    await expect(timeMs(() => 0, { minRuns: 5, maxRuns: 2 })).rejects.toThrow(/minRuns <= maxRuns/);
  });
});
