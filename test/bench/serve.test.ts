/**
 * The serving benchmark: a replay's summary follows from its records and StepLogs as worked out by hand, the best
 * prefix-cache hit rate is counted by hand, a missed target says why, and tiny real replays (a random tiny model)
 * produce every requested token, keep contiguous regions to what the pool holds, and move or recompute what
 * preemption says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, type Device } from '../../engine/index.ts';
import { LlamaModel } from '../../engine/model/llama.ts';
import { serveMetrics, type RequestRecord, type StepLog } from '../../engine/serve/metrics.ts';
import { sharedPrefixTrace } from '../../engine/serve/trace.ts';
import { benchServe, printServe, serveTargets, type ServeBench } from '../../bench/serve.ts';
import { medianSummary, ratioOf, serveRun, summarize, type RunSummary } from '../../bench/serve_runs.ts';
import { bestHitRate, PrefixHits } from '../../bench/prefix_hits.ts';
import { randomWeights, TINY_LLAMA } from '../engine/model/tiny_config.ts';

const step = (tMs: number, ms: number, prefillTokens: number, decodeSeqs: number, running: number, waiting: number): StepLog => ({
  tMs, ms, prefillTokens, decodeSeqs, running, waiting, swapped: 0, usedBytes: 0, reservedBytes: 0, preempted: 0, swapOutBytes: 0, swapInBytes: 0,
});
const record = (id: string, promptTokens: number, tokenMs: number[]): RequestRecord => ({
  id, promptTokens, output: tokenMs.map((_, i) => i), arrivalMs: 0, firstTokenMs: tokenMs[0], finishMs: tokenMs.at(-1)!, tokenMs, preemptions: 0, finishReason: 'length',
});

describe('serve benchmark helpers', () => {
  it('summarizes a replay from its records and StepLogs', () => {
    // r0 (4 prompt tokens) prefills in [0, 10) while r1 waits; r1 prefills in [10, 20); both decode in [20, 25); r0 alone in [25, 30).
    const steps = [step(0, 10, 4, 0, 1, 1), step(10, 10, 2, 0, 2, 0), step(20, 5, 0, 2, 2, 0), step(25, 5, 0, 1, 1, 0)];
    const records = [record('r0', 4, [10, 25, 30]), record('r1', 2, [20, 25])];
    const s = summarize('x', { records, steps, metrics: serveMetrics(records, steps), interrupted: false });
    expect(s.outputTokens).toBe(5);
    expect(s.tokS).toBeCloseTo(5 / 0.03, 9);
    // Running while a request waited: step 0 only; over all steps (1 + 2 + 2 + 1) / 4.
    expect(s.running).toEqual({ underLoad: 1, mean: 1.5, peak: 2 });
    expect(s.decoding).toBe(1.5);
    expect(s.decodeStepMs).toBe(5);
    expect(s.prefillShare).toBeCloseTo(20 / 30, 12);
    // Up to the end of the last iteration with a request waiting (10 ms): one token.
    expect(s.loadedTokS).toBeCloseTo(100, 9);
    expect(s.recomputedTokens).toBe(0);
    // End-to-end 30 and 25 ms: p99 by linear interpolation.
    expect(s.e2eMs).toEqual({ p50: 27.5, p99: expect.closeTo(29.95, 9) });
  });

  it('takes medians over repeats and ratios over pairs', () => {
    const base = { label: 'x', running: { underLoad: 1, mean: 1, peak: 1 } } as RunSummary;
    const runs = [3, 1, 2].map((tokS) => ({ ...base, tokS, durationS: 10 / tokS, ttftMs: { p50: tokS, p99: 2 * tokS }, tpotMs: { p50: 1, p99: 1 }, e2eMs: { p50: 1, p99: 1 }, decoding: tokS, decodeStepMs: 1, prefillShare: 0, loadedTokS: tokS }));
    const m = medianSummary(runs);
    expect([m.tokS, m.ttftMs.p99, m.decoding, m.loadedTokS]).toEqual([2, 4, 2, 2]);
    expect(ratioOf([1.2, 1.9, 1.6])).toEqual({ median: 1.6, low: 1.2, high: 1.9, runs: 3 });
    expect(ratioOf([NaN, 2])).toEqual({ median: 2, low: 2, high: 2, runs: 1 });
  });

  it('counts the best prefix-cache hit rate by hand', () => {
    const req = (id: string, arrivalMs: number) => ({ id, arrivalMs, prompt: new Array(48).fill(1), maxTokens: 1 });
    // Prefixes of 40 tokens in blocks of 16: 2 full blocks (32 tokens) hit, for every request of a prefix but its first.
    expect(bestHitRate([req('p0-0', 0), req('p1-1', 1), req('p0-2', 2)], 40, 16)).toBeCloseTo(32 / 144, 12);
    expect(bestHitRate([req('p0-0', 0)], 40, 16)).toBe(0);
  });

  it('says why a missed target is missed', () => {
    const run = (tokS: number, decoding: number, decodeStepMs: number, underLoad: number, peak: number) => ({ tokS, decoding, decodeStepMs, prefillShare: 0.25, running: { underLoad, mean: underLoad, peak }, preemptions: 0 });
    const s = {
      batching: { continuous: run(2000, 24, 16, 63, 64), static: run(1200, 8, 6, 47, 64), ratio: { median: 1.67, low: 1.2, high: 1.9, runs: 3 } },
      layouts: { regionTokens: 256, maxNumSeqs: 256, underLoadRatio: 5.7, paged: run(1800, 26, 20, 89.3, 150), contiguous: run(2300, 12, 6, 15.7, 16) },
    } as unknown as ServeBench;
    const [batching, layouts] = serveTargets(s);
    expect(batching).toMatchObject({ met: false, measured: '1.67x (2000 vs 1200 tok/s; 1.20-1.90 over 3 pairs)' });
    expect(batching.gap).toMatch(/^0\.33x short: continuous batching decodes 3\.0x the sequences an iteration \(24\.0 vs 8\.0\).*\(16\.0 vs 6\.0 ms\)/);
    expect(layouts).toMatchObject({ met: true, measured: '5.70x while requests wait (89.3 vs 15.7); peak 150 vs 16', gap: undefined });
  });
});

describe('serve benchmark, tiny real replays', () => {
  let dev: Device;
  let model: LlamaModel;
  beforeAll(async () => {
    dev = await createDevice('cpu');
    const w = randomWeights(TINY_LLAMA, 5);
    model = await LlamaModel.fromWeights(dev, TINY_LLAMA, (n) => w.get(n)!);
  });
  afterAll(async () => {
    model.dispose();
    await dev.dispose();
  });

  /** Ten requests queued at 0: prompts of 3..21 tokens, outputs of 4..13. */
  const trace = Array.from({ length: 10 }, (_, i) => ({
    id: `r${i}`,
    arrivalMs: 0,
    prompt: Array.from({ length: 3 + ((i * 7) % 19) }, (_, j) => (i * 13 + j * 5) % 64),
    maxTokens: 4 + ((i * 5) % 10),
  }));
  const tokens = trace.reduce((a, r) => a + r.maxTokens, 0);

  it('continuous and static batching produce every token, within maxNumSeqs', async () => {
    for (const batching of ['continuous', 'static'] as const) {
      const s = await serveRun(model, trace, { batching, numSlots: 512, maxNumSeqs: 4 }, batching);
      expect([s.completed, s.outputTokens, s.recomputedTokens, s.preemptions], batching).toEqual([10, tokens, 0, 0]);
      expect(s.running.peak).toBe(4);
      expect(s.decoding).toBeLessThanOrEqual(4);
      expect(s.tokS).toBeCloseTo(tokens / s.durationS, 6);
    }
  }, 60_000);

  it('contiguous regions hold as many sequences as the pool has regions; paged blocks hold more', async () => {
    const contiguous = await serveRun(model, trace, { layout: 'contiguous', numSlots: 120, maxSeqLen: 40, maxNumSeqs: 16 }, 'contiguous');
    const paged = await serveRun(model, trace, { layout: 'paged', numSlots: 120, blockSize: 8, maxSeqLen: 40, maxNumSeqs: 16 }, 'paged');
    expect(contiguous.running.peak).toBe(3);
    // A StepLog counts after its iteration: a region freed by a request that just finished is filled by the next one.
    expect(contiguous.running.underLoad).toBeGreaterThan(2);
    expect(contiguous.running.underLoad).toBeLessThanOrEqual(3);
    expect(paged.running.peak).toBeGreaterThan(3);
    expect([contiguous.outputTokens, paged.outputTokens]).toEqual([tokens, tokens]);
  }, 60_000);

  it('preemption by recomputation computes tokens again; by swapping it moves them out and back', async () => {
    const recompute = await serveRun(model, trace, { numSlots: 48, blockSize: 8, preemption: 'recompute' }, 'recompute');
    const swap = await serveRun(model, trace, { numSlots: 48, blockSize: 8, preemption: 'swap' }, 'swap');
    expect(recompute.preemptions).toBeGreaterThan(0);
    expect(recompute.recomputedTokens).toBeGreaterThan(0);
    expect(recompute.swapBytes).toEqual({ out: 0, in: 0 });
    expect(swap.preemptions).toBeGreaterThan(0);
    expect(swap.swapBytes.out).toBeGreaterThan(0);
    expect(swap.swapBytes.in).toBe(swap.swapBytes.out);
  }, 60_000);

  it('counts prefix-cache hits from the block manager: every full prefix block after the first request of its prefix', async () => {
    const text = Uint8Array.from({ length: 4000 }, (_, i) => (i * 7 + (i >> 5)) % 64);
    // One request every 15 ms, so no two are admitted in one iteration.
    const shared = sharedPrefixTrace({ rate: 1, count: 6, prefixTokens: 32, suffixTokens: 4, outputTokens: 3, numPrefixes: 2, seed: 3, text }).map((r, i) => ({ ...r, arrivalMs: 15 * i }));
    const hits = new PrefixHits(new Map(shared.map((r) => [r.id, r.prompt.length])));
    await serveRun(model, shared, { numSlots: 512, blockSize: 8 }, 'prefix', (e) => hits.observe(e));
    expect(hits.promptTokens).toBe(6 * 36);
    expect(hits.sameStepHitTokens).toBe(0);
    expect(hits.hitRate).toBeGreaterThan(0);
    expect(hits.hitRate).toBeCloseTo(bestHitRate(shared, 32, 8), 12);
  }, 60_000);
});

describe('serve benchmark, the whole section at a tiny size', () => {
  it('runs every part on the built-in model, prints it and checks both targets', async () => {
    const s = await benchServe('cpu', { plan: { requests: 6, repeats: 1, prefixRequests: 6, preemptRequests: 6, rates: [50], rateSeconds: 0.1 } });
    const tokens = Math.round(s.batching.trace.output.mean * s.batching.trace.count);
    for (const run of [s.batching.continuous, s.batching.static, s.layouts.paged, s.layouts.contiguous]) {
      expect([run.completed, run.outputTokens], run.label).toEqual([6, tokens]);
    }
    expect(s.layouts.contiguous.running.peak).toBeLessThanOrEqual(s.layouts.budgetBytes / s.bytesPerToken / s.layouts.regionTokens);
    expect(s.prefix.hitRate).toBeLessThanOrEqual(s.prefix.bestHitRate);
    expect(s.rates.rows).toHaveLength(1);
    expect(serveTargets(s).map((t) => typeof t.met)).toEqual(['boolean', 'boolean']);
    expect(printServe(s).join('\n')).not.toMatch(/undefined|NaNx/);
  }, 60_000);
});
