/** Lesson 05 end to end through the real kernel: every code cell in order, no errors, its measurements, and the exercise's feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, solutionsOf } from './lesson_run.ts';

/** The reference solutions, as the solutions file holds them. */
const SOLUTIONS = solutionsOf('lessons/05-serving.solutions.md');

interface Run {
  requests: number;
  completed: number;
  tokS: number;
  iterations: number;
  meanRunning: number;
  peakRunning: number;
  preemptions: number;
  swapOut: number;
  swapIn: number;
  prefillTokens: number;
  peakUsed: number;
  peakReserved: number;
  pool: number;
  cost: number | null;
}

describe('lesson 05 (the serving system) through the kernel', () => {
  const { client, value, liveChart, runAll, exercise } = lessonRun('lessons/05-serving.md');
  let runs: Record<string, Run> = {};

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', async () => {
    await runAll();
    runs = (await value(`Object.fromEntries(Object.entries(served).map(([k, s]) => [k, {
      requests: s.result.metrics.requests, completed: s.result.metrics.completed, tokS: s.result.metrics.throughputTokS,
      iterations: s.iterations, meanRunning: s.meanRunning, peakRunning: s.peakRunning, preemptions: s.result.metrics.preemptions,
      swapOut: s.result.metrics.swap.outBytes, swapIn: s.result.metrics.swap.inBytes, prefillTokens: s.prefillTokens,
      peakUsed: s.result.metrics.kv.peakUsedBytes, peakReserved: s.result.metrics.kv.peakReservedBytes, pool: s.result.metrics.kv.poolBytes,
      cost: s.result.metrics.costPer1MTokens,
    }]))`)) as Record<string, Run>;
  }, 300_000);

  it('serves every request of every run, within the KV pool', () => {
    expect(Object.keys(runs).length).toBeGreaterThanOrEqual(20);
    for (const [name, r] of Object.entries(runs)) {
      expect(r.requests, name).toBeGreaterThan(0);
      expect(r.completed, name).toBe(r.requests);
      expect(r.tokS, name).toBeGreaterThan(0);
      expect(r.peakUsed, name).toBeLessThanOrEqual(r.peakReserved);
      expect(r.peakReserved, name).toBeLessThanOrEqual(r.pool);
    }
  });

  it('measures the three goals on one trace, live, and prices its throughput', async () => {
    const main = runs['continuous, paged'];
    expect(main.requests).toBe((await value('trace.length')) as number);
    expect(main.pool).toBe(2 * 2 ** 20);
    // $2 per device-hour over tokens/s x 3600, per million.
    expect(main.cost).toBeCloseTo((2 / (main.tokS * 3600)) * 1e6, 9);
    const p = (await value('[mm.ttftMs, mm.tpotMs, mm.e2eMs].map((x) => [x.p50, x.p99])')) as number[][];
    for (const [p50, p99] of p) {
      expect(p50).toBeGreaterThan(0);
      expect(p99).toBeGreaterThanOrEqual(p50);
    }
    for (const title of [/^KV memory at each iteration/, /^Tokens through the model/]) {
      const chart = liveChart(title);
      expect(chart.updates).toBeGreaterThanOrEqual(1);
      expect(chart.traces.every((t) => (t.x ?? []).length > 0)).toBe(true);
    }
  });

  it('continuous batching serves a burst faster than static batching in the same memory', () => {
    const [cont, stat] = [runs['continuous, paged: burst'], runs['static, paged: burst']];
    // The schedule of a burst does not depend on the clock: fewer, fuller iterations.
    expect(cont.iterations).toBeLessThan(stat.iterations);
    expect(cont.tokS).toBeGreaterThan(stat.tokS);
  });

  it('paged memory runs more sequences at once than contiguous regions of the same memory, and serves more', () => {
    const [paged, contig] = [runs['continuous, paged: burst'], runs['continuous, contiguous: burst']];
    // 2 MiB holds two regions of the whole context.
    expect(contig.peakRunning).toBe(2);
    expect(runs['continuous, contiguous'].peakRunning).toBeLessThanOrEqual(2);
    expect(paged.peakRunning).toBeGreaterThan(contig.peakRunning);
    expect(paged.meanRunning).toBeGreaterThan(contig.meanRunning);
    expect(paged.tokS).toBeGreaterThan(contig.tokS);
  });

  it('a small pool forces preemption: recomputation prefills again, swapping moves as many bytes back as out', async () => {
    const [rec, swap] = [runs['recompute, 1 MiB'], runs['swap, 1 MiB']];
    const prompts = (await value('promptTokens')) as number;
    expect(rec.preemptions).toBeGreaterThan(0);
    expect(swap.preemptions).toBeGreaterThan(0);
    expect(rec.prefillTokens).toBeGreaterThan(prompts);
    expect([rec.swapOut, rec.swapIn]).toEqual([0, 0]);
    expect(swap.swapOut).toBeGreaterThan(0);
    expect(swap.swapIn).toBe(swap.swapOut);
    // Every byte moved is a whole token's keys and values.
    expect(swap.swapOut % ((await value('bytesPerToken')) as number)).toBe(0);
  });

  it('prefix caching finds the shared prefixes and stores them once', async () => {
    const hits = (await value('counters.map((c) => c.hits)')) as number[];
    // 32 prompts of 96 + 16 tokens on two prefixes: at most all but the first of each prefix hit its 6 full blocks
    // (fewer when a prompt is prefilled in the same iteration as the one that fills them, or after they were evicted).
    expect(hits[1]).toBe(0);
    expect(hits[3]).toBe(0);
    for (const h of [hits[0], hits[2]]) {
      expect(h).toBeGreaterThan(0);
      expect(h % 16).toBe(0);
      expect(h).toBeLessThanOrEqual(30 * 96);
    }
    const kv = (await value('prefixRuns.map((s) => kvPerSequence(s))')) as number[];
    expect(kv[2]).toBeLessThan(kv[3]);
    expect(runs['caching on, all at once'].meanRunning).toBeGreaterThan(runs['caching off, all at once'].meanRunning);
  });

  it('draws latency against throughput as the rate rises', async () => {
    const curve = (await value('curve')) as { rate: number; batching: string; tokS: number }[];
    expect(curve).toHaveLength(8);
    const cont = curve.filter((c) => c.batching === 'continuous');
    expect(cont.at(-1)!.tokS).toBeGreaterThan(cont[0].tokS);
    expect(liveChart(/^Throughput as the arrival rate rises/).traces.map((t) => t.name)).toEqual(['continuous (tokens/s)', 'static (tokens/s)', 'offered (tokens/s)']);
  });

  it('the cheapest exercise fails with its starter code and passes with the reference solution', async () => {
    const { starter, solved } = await exercise('cheapest', SOLUTIONS.cheapest);
    expect(starter.length).toBeGreaterThan(0);
    expect(starter[0].ok).toBe(false);
    expect(solved.length).toBeGreaterThanOrEqual(3);
    expect(solved.every((f) => f.ok)).toBe(true);
  }, 120_000);
});
