/**
 * The serving engine on a real (tiny, random) model: every request's tokens are those of decoding it alone, whatever
 * the batching, the layout and the preemptions a small KV pool forces; no request is lost or duplicated; the metrics
 * come from the recorded timestamps; a request that can never run is rejected with its reason while the others run;
 * an interrupt stops the run with what it measured.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, generate, type Device } from '../../../engine/index.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import { ServingEngine, type EngineOptions } from '../../../engine/serve/engine.ts';
import { serveMetrics, tpot, ttft, type RequestRecord } from '../../../engine/serve/metrics.ts';
import { randomWeights, TINY_LLAMA } from '../model/tiny_config.ts';

let dev: Device;
let model: LlamaModel;
beforeAll(async () => {
  dev = await createDevice('cpu');
  const w = randomWeights(TINY_LLAMA, 31);
  model = await LlamaModel.fromWeights(dev, TINY_LLAMA, (n) => w.get(n)!);
});
afterAll(async () => {
  model.dispose();
  await dev.dispose();
});

/** Ten requests arriving 2 ms apart, prompts of 3..21 tokens, outputs of 4..13. */
const TRACE = Array.from({ length: 10 }, (_, i) => ({
  id: `r${i}`,
  arrivalMs: 2 * i,
  prompt: Array.from({ length: 3 + ((i * 7) % 19) }, (_, j) => (i * 13 + j * 5) % 64),
  maxTokens: 4 + ((i * 5) % 10),
}));

const alone = new Map<string, number[]>();
async function aloneTokens(id: string): Promise<number[]> {
  if (!alone.has(id)) {
    const r = TRACE.find((x) => x.id === id)!;
    alone.set(id, (await generate(model, r.prompt, { maxTokens: r.maxTokens, temperature: 0 })).tokens);
  }
  return alone.get(id)!;
}

const SETTINGS: [string, EngineOptions][] = [
  ['continuous, paged, roomy', { numSlots: 512 }],
  ['continuous, paged, 6 blocks of 8: preemption by recomputation', { numSlots: 48, blockSize: 8 }],
  ['continuous, paged, 6 blocks of 8: preemption by swapping', { numSlots: 48, blockSize: 8, preemption: 'swap' }],
  ['continuous, token slots, chunked prefill of 4', { layout: 'token', numSlots: 64, chunkedPrefill: 4 }],
  ['continuous, contiguous regions of 40', { layout: 'contiguous', numSlots: 120, maxSeqLen: 40 }],
  ['static batches of 4', { batching: 'static', numSlots: 512, maxNumSeqs: 4 }],
];

describe.each(SETTINGS)('%s', (_name, opts) => {
  it('every request gets the tokens of decoding it alone, once, and the metrics follow from the timestamps', async () => {
    const engine = await ServingEngine.create(model, opts);
    // The small pools must preempt: with every request waiting from the start the schedule is the same on any machine;
    // with the staggered arrivals, which requests overlap depends on how fast the steps run (a loaded machine once ran
    // the swap setting without a preemption).
    const trace = opts.numSlots === 48 ? TRACE.map((r) => ({ ...r, arrivalMs: 0 })) : TRACE;
    try {
      const { records, steps, metrics } = await engine.replay(trace);
      expect(records.map((r) => r.id).sort()).toEqual(TRACE.map((r) => r.id).sort());
      for (const r of records) {
        expect(r.finishReason).toBe('length');
        expect(r.output, r.id).toEqual(await aloneTokens(r.id));
        expect(r.tokenMs).toHaveLength(r.output.length);
        expect(r.firstTokenMs).toBe(r.tokenMs[0]);
        expect(r.finishMs).toBe(r.tokenMs.at(-1));
        expect(r.firstTokenMs).toBeGreaterThanOrEqual(r.arrivalMs);
      }
      expect(metrics.completed).toBe(TRACE.length);
      const tokens = TRACE.reduce((s, r) => s + r.maxTokens, 0);
      expect(metrics.throughputTokS).toBeCloseTo(tokens / metrics.durationS, 6);
      expect(metrics.preemptions).toBe(steps.reduce((s, x) => s + x.preempted, 0));
      expect(metrics.preemptions).toBe(records.reduce((s, r) => s + r.preemptions, 0));
      if (opts.numSlots === 48) expect(metrics.preemptions).toBeGreaterThan(0);
      if (opts.preemption === 'swap') expect(metrics.swap.outBytes).toBe(metrics.swap.inBytes);
      expect(metrics.kv.peakUsedBytes).toBeLessThanOrEqual(metrics.kv.peakReservedBytes);
      expect(metrics.kv.peakReservedBytes).toBeLessThanOrEqual(engine.cache.pool.bytes);
      expect(engine.cache.memory().reservedBytes).toBe(0);
    } finally {
      engine.dispose();
    }
  }, 60_000);
});

describe('ServingEngine', () => {
  it('rejects a request that can never run with its reason; the others finish', async () => {
    const engine = await ServingEngine.create(model, { numSlots: 48, blockSize: 8 });
    try {
      const trace = [TRACE[0], { id: 'huge', arrivalMs: 1, prompt: Array(40).fill(3), maxTokens: 20 }, { id: 'bad', arrivalMs: 1, prompt: [70], maxTokens: 2 }, TRACE[1]];
      const { records, metrics } = await engine.replay(trace);
      const by = Object.fromEntries(records.map((r) => [r.id, r]));
      expect(by.huge.finishReason).toBe('rejected');
      expect(by.huge.error).toMatch(/exceed the longest sequence the cache takes \(64\)|do not fit the whole KV pool/);
      expect(by.bad.error).toMatch(/token 70 is not in the vocabulary \[0, 64\)/);
      expect([by.r0.output, by.r1.output]).toEqual([await aloneTokens('r0'), await aloneTokens('r1')]);
      expect([metrics.completed, metrics.rejected]).toEqual([2, 2]);
    } finally {
      engine.dispose();
    }
  });

  it('an abort stops the run at the next iteration: unfinished requests end aborted, the memory is free, metrics cover what ran', async () => {
    const engine = await ServingEngine.create(model, { numSlots: 512 });
    try {
      const ctrl = new AbortController();
      let n = 0;
      const { records, interrupted, metrics } = await engine.replay(TRACE, { signal: ctrl.signal, onStep: () => ++n === 5 && ctrl.abort() });
      expect(interrupted).toBe(true);
      expect(records.some((r) => r.finishReason === 'aborted')).toBe(true);
      expect(metrics.completed).toBe(records.filter((r) => r.finishReason === 'length').length);
      expect(engine.cache.memory().reservedBytes).toBe(0);
      // The engine still serves after it.
      const again = await engine.replay([TRACE[2]]);
      expect(again.records[0].output).toEqual(await aloneTokens('r2'));
    } finally {
      engine.dispose();
    }
  });
});

describe('serveMetrics', () => {
  it('computes TTFT, TPOT, end-to-end latency, throughput and cost from hand-made records', () => {
    const rec = (id: string, arrivalMs: number, tokenMs: number[]): RequestRecord => ({
      id, promptTokens: 3, output: tokenMs.map(() => 1), arrivalMs, firstTokenMs: tokenMs[0], finishMs: tokenMs.at(-1)!, tokenMs, preemptions: 0, finishReason: 'length',
    });
    const records = [rec('a', 0, [100, 150, 200]), rec('b', 50, [300, 400]), rec('c', 60, [500])];
    expect(records.map(ttft)).toEqual([100, 250, 440]);
    expect(records.map(tpot)).toEqual([50, 100, NaN]);
    const m = serveMetrics(records, [], { pricePerHour: 3.6, durationMs: 1000 });
    expect(m.ttftMs.p50).toBe(250);
    expect(m.ttftMs.p99).toBeCloseTo(250 + 0.98 * 190, 9);
    expect(m.tpotMs.p50).toBe(75); // c has one token: no TPOT
    expect(m.e2eMs.mean).toBeCloseTo((200 + 350 + 440) / 3, 9);
    expect([m.throughputTokS, m.requestsPerS]).toEqual([6, 3]);
    // $3.60 an hour at 6 tokens/s: 21,600 tokens for $3.60.
    expect(m.costPer1MTokens).toBeCloseTo((3.6 / 21600) * 1e6, 9);
  });
});

describe('ServingEngine and prefix caching', () => {
  it('two prompts with the same 16-token prefix admitted in one step do not share it before it is written: each gets the tokens of decoding it alone', async () => {
    const engine = await ServingEngine.create(model, { numSlots: 256 });
    try {
      const prefix = Array.from({ length: 16 }, (_, i) => (i * 5 + 3) % 64);
      const trace = [0, 1, 2].map((i) => ({ id: `p${i}`, arrivalMs: i === 2 ? 50 : 0, prompt: [...prefix, 10 + i, 20 + i], maxTokens: 4 }));
      const { records } = await engine.replay(trace);
      for (const r of records) {
        const t = trace.find((x) => x.id === r.id)!;
        expect(r.output, r.id).toEqual((await generate(model, t.prompt, { maxTokens: 4, temperature: 0 })).tokens);
      }
    } finally {
      engine.dispose();
    }
  });
});

describe('ServingEngine.serve (online)', () => {
  it('serves requests submitted while it runs, streams their tokens, and stops on abort', async () => {
    const engine = await ServingEngine.create(model, { numSlots: 512 });
    const ctrl = new AbortController();
    const loop = engine.serve(ctrl.signal);
    try {
      const streamed: number[] = [];
      const [a, b] = await Promise.all([
        engine.submit(TRACE[3], (t) => streamed.push(t)),
        new Promise<RequestRecord>((resolve) => setTimeout(() => resolve(engine.submit(TRACE[4])), 5)),
      ]);
      expect(a.output).toEqual(await aloneTokens('r3'));
      expect(streamed).toEqual(a.output);
      expect(b.output).toEqual(await aloneTokens('r4'));
      const late = engine.submit(TRACE[5]);
      ctrl.abort();
      await loop;
      expect(['aborted', 'length']).toContain((await late).finishReason);
    } finally {
      ctrl.abort();
      await loop;
      engine.dispose();
    }
  });
});

describe('ServingEngine.cancel', () => {
  it('drops a running request at the next iteration with the tokens it had; its memory is freed and the others are unaffected', async () => {
    const engine = await ServingEngine.create(model, { numSlots: 512 });
    const ctrl = new AbortController();
    const loop = engine.serve(ctrl.signal);
    try {
      const long = { id: 'long', prompt: TRACE[6].prompt, maxTokens: 40 };
      let seen = 0;
      const cancelled = engine.submit(long, () => ++seen === 3 && engine.cancel('long'));
      const other = engine.submit(TRACE[7]);
      const r = await cancelled;
      expect(r.finishReason).toBe('aborted');
      expect(r.output.length).toBeGreaterThanOrEqual(3);
      expect(r.output.length).toBeLessThan(40);
      expect((await other).output).toEqual(await aloneTokens('r7'));
      expect(engine.cache.has('long')).toBe(false);
      engine.cancel('nobody');
      expect((await engine.submit(TRACE[8])).output).toEqual(await aloneTokens('r8'));
    } finally {
      ctrl.abort();
      await loop;
      engine.dispose();
    }
  });
});
