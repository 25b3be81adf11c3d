/**
 * Request traces against independent references: the exact distribution of a rounded, floored and cut log-normal
 * (computed from the normal CDF, not sampled), Poisson counting statistics, the text the prompts come from, and
 * hand-written JSONL. Statistical checks use 5,000 requests and a tolerance of 4 standard errors unless stated.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ServelabError } from '../../../engine/errors.ts';
import { logNormalLength } from '../../../engine/kv/sharegpt.ts';
import { mobyDick } from '../../../engine/train/corpus.ts';
import { Rng } from '../../../engine/train/rng.ts';
import {
  poissonTrace, scaledMeans, sharedPrefixTrace, TraceError,
  type Dataset, type TraceErrorReason, type TraceRequest,
} from '../../../engine/serve/trace.ts';
import { loadTrace, saveTrace } from '../../../engine/serve/trace_file.ts';
import { traceStats } from '../../../engine/serve/trace_stats.ts';

const N = 5000;
const heldOut = Buffer.from(mobyDick().heldOut);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

function throwsTrace(f: () => unknown, reason: TraceErrorReason): void {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TraceError);
  expect(caught).toBeInstanceOf(ServelabError);
  expect((caught as TraceError).reason).toBe(reason);
}

// erfc by Numerical Recipes' Chebyshev fit (fractional error below 1.2e-7, far under any tolerance here).
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const c = [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277];
  const r = t * Math.exp(-z * z + c.reduceRight((acc, ck, i) => (i === 0 ? ck + acc : t * (ck + acc)), 0));
  return x >= 0 ? r : 2 - r;
}
const Phi = (x: number) => 0.5 * erfc(-x / Math.SQRT2);

/** P(L = k), k = 0..cap, for L = min(max(1, round(exp(N(ln(mean) - s^2/2, s)))), cap). */
function cutLogNormalPmf(meanLen: number, sigma: number, cap: number): number[] {
  const mu = Math.log(meanLen) - (sigma * sigma) / 2;
  const F = (x: number) => (x <= 0 ? 0 : Phi((Math.log(x) - mu) / sigma));
  return Array.from({ length: cap + 1 }, (_, k) => (k === 0 ? 0 : (k === cap ? 1 : F(k + 0.5)) - (k === 1 ? 0 : F(k - 0.5))));
}

/** Exact marginal pmfs of a request's input and output: input capped at C - 1, output at C - input. */
function exactLengths(dataset: Dataset, C: number, sigma = 1): { input: number[]; output: number[] } {
  const { meanInput, meanOutput } = scaledMeans(dataset, C);
  const input = cutLogNormalPmf(meanInput, sigma, C - 1);
  const output = new Array<number>(C).fill(0);
  for (let i = 1; i < C; i++) cutLogNormalPmf(meanOutput, sigma, C - i).forEach((q, k) => (output[k] += input[i] * q));
  return { input, output };
}

const moments = (p: number[]) => {
  const m = p.reduce((a, q, k) => a + q * k, 0);
  return { mean: m, sd: Math.sqrt(p.reduce((a, q, k) => a + q * k * k, 0) - m * m) };
};
const cdf = (p: number[], k: number) => p.slice(0, k + 1).reduce((a, b) => a + b, 0);
const quantile = (p: number[], q: number) => p.findIndex((_, k) => cdf(p, k) >= q);

describe('poissonTrace', () => {
  const opts = { rate: 10, count: N, dataset: 'sharegpt', context: 256, seed: 0 } as const;

  it('replays: the same options give the same trace, another seed another; arrivals do not depend on the dataset', () => {
    const a = poissonTrace(opts);
    expect(poissonTrace(opts)).toEqual(a);
    const b = poissonTrace({ ...opts, seed: 1 });
    expect(b.map((r) => r.arrivalMs)).not.toEqual(a.map((r) => r.arrivalMs));
    expect(b.map((r) => r.prompt)).not.toEqual(a.map((r) => r.prompt));
    const alpaca = poissonTrace({ ...opts, dataset: 'alpaca' });
    expect(alpaca.map((r) => r.arrivalMs)).toEqual(a.map((r) => r.arrivalMs));
    expect(a.slice(0, 3).map((r) => r.id)).toEqual(['req-0', 'req-1', 'req-2']);
    // Lengths come from the seed's stream 2^30 draws on (never the arrivals' draws): replayed here from a saved state.
    const rng = Rng.fromState({ seed: 0, counter: 2 ** 30, spare: null });
    const lengths = a.slice(0, 50).map(() => [logNormalLength(rng, 161.31 / 8, 1), logNormalLength(rng, 337.99 / 8, 1)]);
    expect(a.slice(0, 50).map((r) => [r.prompt.length, r.maxTokens])).toEqual(lengths.map(([i, o]) => [Math.min(i, 255), Math.min(o, 256 - Math.min(i, 255))]));
  });

  it('arrives as a Poisson process: rate within 5% (3.5 standard errors of 1/sqrt(4999)), counts per second with variance = mean', () => {
    const t = poissonTrace(opts);
    const s = traceStats(t);
    expect(Math.abs(s.offeredRate! / 10 - 1)).toBeLessThan(0.05);
    expect(t.every((r, i) => i === 0 || r.arrivalMs >= t[i - 1].arrivalMs)).toBe(true);
    // Index of dispersion over W whole one-second windows: 1 for Poisson (0 for evenly spaced arrivals), sd sqrt(2 / (W - 1)).
    const W = Math.floor(t[t.length - 1].arrivalMs / 1000);
    const counts = new Array<number>(W).fill(0);
    for (const r of t) if (r.arrivalMs < W * 1000) counts[Math.floor(r.arrivalMs / 1000)]++;
    const m = mean(counts);
    const dispersion = counts.reduce((a, c) => a + (c - m) ** 2, 0) / (W - 1) / m;
    expect(Math.abs(dispersion - 1)).toBeLessThan(4 * Math.sqrt(2 / (W - 1)));
    // durationS keeps exactly the arrivals before its end; the counted window is Poisson(rate * T).
    const d = poissonTrace({ ...opts, count: undefined, durationS: 100 });
    expect(d.map((r) => r.arrivalMs)).toEqual(t.filter((r) => r.arrivalMs < 100_000).map((r) => r.arrivalMs));
    expect(Math.abs(d.length - 1000)).toBeLessThan(4 * Math.sqrt(1000));
    expect(poissonTrace({ ...opts, rate: Infinity, count: 5 }).map((r) => r.arrivalMs)).toEqual([0, 0, 0, 0, 0]);
  });

  for (const dataset of ['sharegpt', 'alpaca'] as const) {
    it(`${dataset}: mean lengths within 4 standard errors of the exact cut distribution's, the p50 and p99 bins likewise`, () => {
      const t = poissonTrace({ ...opts, dataset });
      const exact = exactLengths(dataset, 256);
      const paper = scaledMeans(dataset, 256);
      for (const [what, got, p, paperMean] of [
        ['input', t.map((r) => r.prompt.length), exact.input, paper.meanInput],
        ['output', t.map((r) => r.maxTokens), exact.output, paper.meanOutput],
      ] as const) {
        expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
        const { mean: mu, sd } = moments(p);
        expect(Math.abs(mean(got) - mu), `${what}: ${mean(got)} vs exact ${mu} (sd ${sd})`).toBeLessThan((4 * sd) / Math.sqrt(N));
        // Rounding, the floor of 1 and the context cut move the exact mean from the paper's scaled one by under 6%.
        expect(Math.abs(mu / paperMean - 1)).toBeLessThan(0.06);
        for (const q of [0.5, 0.99]) {
          const k = quantile(p, q);
          const share = got.filter((x) => x <= k).length / N;
          const P = cdf(p, k);
          expect(Math.abs(share - P), `${what} share <= ${k}`).toBeLessThan(4 * Math.sqrt((P * (1 - P)) / N) + 1e-9);
        }
      }
    });
  }

  it('logs the default ShareGPT-like trace for the built-in model (context 256)', () => {
    const s = traceStats(poissonTrace(opts));
    console.log(`sharegpt, context 256, ${s.count} requests at ${s.offeredRate!.toFixed(2)}/s: input mean ${s.input.mean.toFixed(2)} ` +
      `p50 ${s.input.p50} p99 ${s.input.p99}; output mean ${s.output.mean.toFixed(2)} p50 ${s.output.p50} p99 ${s.output.p99}`);
    expect(s.input.max).toBeLessThanOrEqual(255);
  });

  it('every request fits the context, prefills and generates at least one token', () => {
    for (const dataset of ['sharegpt', 'alpaca'] as const) {
      for (const context of [2, 3, 16, 256, 2048]) {
        const t = poissonTrace({ rate: 5, count: 1000, dataset, context, seed: context });
        expect(t.every((r) => r.prompt.length >= 1 && r.maxTokens >= 1 && r.prompt.length + r.maxTokens <= context)).toBe(true);
        if (context === 2) expect(t.every((r) => r.prompt.length === 1 && r.maxTokens === 1)).toBe(true);
      }
    }
    // The cut does bind at 256: some ShareGPT-like requests use the whole context.
    expect(poissonTrace(opts).some((r) => r.prompt.length + r.maxTokens === 256)).toBe(true);
  });

  it('prompts are slices of the held-out text (or the given text) from many offsets', () => {
    const t = poissonTrace({ ...opts, count: 500 });
    expect(t.every((r) => heldOut.indexOf(Buffer.from(r.prompt)) >= 0)).toBe(true);
    expect(new Set(t.map((r) => Buffer.from(r.prompt).toString('latin1'))).size).toBeGreaterThan(450);
    const text = new TextEncoder().encode('abcdefghijklmnopqrstuvwxyz'.repeat(4));
    const own = poissonTrace({ ...opts, count: 200, context: 20, text, n: 3 });
    expect(own.every((r) => Buffer.from(text).indexOf(Buffer.from(r.prompt)) >= 0 && r.n === 3)).toBe(true);
  });

  it('refuses bad options with a typed error', () => {
    throwsTrace(() => poissonTrace({ ...opts, rate: 0 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, rate: -1 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, rate: NaN }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, count: -1 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, count: 1.5 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, context: 1 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, context: 0 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, durationS: 10 }), 'invalid-option'); // both count and durationS
    throwsTrace(() => poissonTrace({ ...opts, count: undefined }), 'invalid-option'); // neither
    throwsTrace(() => poissonTrace({ ...opts, count: undefined, durationS: 1, rate: Infinity }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, count: undefined, durationS: -1 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, seed: 0.5 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, n: 0 }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, dataset: 'lmsys' as Dataset }), 'invalid-option');
    throwsTrace(() => poissonTrace({ ...opts, text: new Uint8Array(100) }), 'text-too-short');
    expect(poissonTrace({ ...opts, count: 0 })).toEqual([]);
  });
});

describe('sharedPrefixTrace', () => {
  const opts = { rate: 4, count: 400, prefixTokens: 80, suffixTokens: 12, outputTokens: 30, numPrefixes: 3, n: 2, seed: 5 };

  it('every prompt is one of a few disjoint prefixes of the text, named by its id, plus its own slice', () => {
    const t = sharedPrefixTrace(opts);
    expect(sharedPrefixTrace(opts)).toEqual(t);
    const prefixes = new Map<number, string>();
    for (const r of t) {
      const k = Number(/^p(\d+)-\d+$/.exec(r.id)![1]);
      const head = Buffer.from(r.prompt.slice(0, 80));
      expect(prefixes.get(k) ?? head.toString('latin1')).toBe(head.toString('latin1'));
      prefixes.set(k, head.toString('latin1'));
      expect(r.prompt.length).toBe(92);
      expect(heldOut.indexOf(Buffer.from(r.prompt.slice(80)))).toBeGreaterThanOrEqual(0);
      expect(r).toMatchObject({ maxTokens: 30, n: 2 });
    }
    expect([...prefixes.keys()].sort()).toEqual([0, 1, 2]);
    // Prefix k lies in the k-th third of the text.
    const third = Math.floor(heldOut.length / 3);
    for (const [k, p] of prefixes) {
      const at = heldOut.indexOf(Buffer.from(p, 'latin1'));
      expect(at >= k * third && at + 80 <= (k + 1) * third).toBe(true);
    }
    // Same arrivals as a Poisson trace of the same rate and seed.
    const poisson = poissonTrace({ rate: 4, count: 400, dataset: 'sharegpt', context: 256, seed: 5 });
    expect(t.map((r) => r.arrivalMs)).toEqual(poisson.map((r) => r.arrivalMs));
  });

  it('refuses bad options with a typed error', () => {
    throwsTrace(() => sharedPrefixTrace({ ...opts, rate: 0 }), 'invalid-option');
    throwsTrace(() => sharedPrefixTrace({ ...opts, count: -3 }), 'invalid-option');
    throwsTrace(() => sharedPrefixTrace({ ...opts, prefixTokens: 0 }), 'invalid-option');
    throwsTrace(() => sharedPrefixTrace({ ...opts, outputTokens: 0 }), 'invalid-option');
    throwsTrace(() => sharedPrefixTrace({ ...opts, context: 100 }), 'invalid-option'); // 80 + 12 + 30 > 100
    throwsTrace(() => sharedPrefixTrace({ ...opts, context: 1 }), 'invalid-option');
    throwsTrace(() => sharedPrefixTrace({ ...opts, text: new Uint8Array(200) }), 'text-too-short');
    expect(sharedPrefixTrace({ ...opts, context: 122 })).toHaveLength(400);
  });
});

describe('JSONL traces', () => {
  it('round-trip: saveTrace then loadTrace gives the same requests, from text and from a file', () => {
    const t: TraceRequest[] = [
      ...poissonTrace({ rate: 3, count: 200, dataset: 'sharegpt', context: 256, seed: 9 }),
      { id: 'bos', arrivalMs: 1e9, prompt: [256, 67, 97, 108, 108], maxTokens: 4, n: 4 },
      { id: 'cut-char', arrivalMs: 1e9 + 0.1, prompt: [0xe2, 0x80], maxTokens: 1 },
      { id: 'bom', arrivalMs: 1e9 + 0.2, prompt: [0xef, 0xbb, 0xbf, 65], maxTokens: 1 },
    ];
    const jsonl = saveTrace(t);
    expect(jsonl.split('\n')).toHaveLength(t.length + 1);
    expect(loadTrace(jsonl)).toEqual({ requests: t, errors: [] });
    const path = join(mkdtempSync(join(tmpdir(), 'trace-')), 'trace.jsonl');
    writeFileSync(path, jsonl);
    expect(loadTrace(path)).toEqual({ requests: t, errors: [] });
    expect(JSON.parse(jsonl.split('\n')[t.length - 3])).toMatchObject({ prompt: [256, 67, 97, 108, 108], n: 4 });
    expect(loadTrace('')).toEqual({ requests: [], errors: [] });
  });

  it('reports malformed lines by number and reason, loads the rest, sorted by arrival', () => {
    const lines = [
      '{"arrival_ms": 5, "prompt": "Call me", "max_tokens": 3, "id": "a"}',
      '{"prompt": "é", "max_tokens": 2}',
      '{"arrival_ms": 1, "prompt": [1, 2, 3], "max_tokens": 3',
      '',
      '[1, 2]',
      '{"arrival_ms": 2, "max_tokens": 3}',
      '{"prompt": "x", "max_tokens": 0}',
      '{"prompt": "x", "max_tokens": 1, "arrival_ms": -1}',
      '{"prompt": [1, 4294967296], "max_tokens": 1}',
      '{"prompt": "", "max_tokens": 1}',
      '{"prompt": "x", "max_tokens": 1, "n": 1.5}',
      '{"prompt": "again", "max_tokens": 1, "id": "a"}',
      '{"arrival_ms": 3, "prompt": [7], "max_tokens": 1, "n": 2, "extra": true}\r',
      '{"prompt": "x", "max_tokens": 1, "arrival_ms": null}',
    ];
    const { requests, errors } = loadTrace(lines.join('\n'));
    expect(requests).toEqual([
      { id: 'line-2', arrivalMs: 0, prompt: [0xc3, 0xa9], maxTokens: 2 },
      { id: 'line-13', arrivalMs: 3, prompt: [7], maxTokens: 1, n: 2 },
      { id: 'a', arrivalMs: 5, prompt: [67, 97, 108, 108, 32, 109, 101], maxTokens: 3 },
    ]);
    expect(errors.map((e) => e.line)).toEqual([3, 5, 6, 7, 8, 9, 10, 11, 12, 14]);
    const reason = (line: number) => errors.find((e) => e.line === line)!.reason;
    expect(reason(3)).toMatch(/^not JSON/);
    expect(reason(5)).toBe('not a JSON object');
    expect(reason(6)).toBe('prompt is missing');
    expect(reason(7)).toMatch(/max_tokens/);
    expect(reason(8)).toMatch(/arrival_ms/);
    expect(reason(9)).toMatch(/prompt\[1\]/);
    expect(reason(10)).toBe('prompt is empty');
    expect(reason(11)).toMatch(/^n /);
    expect(reason(12)).toBe('id "a" repeats line 1');
    expect(reason(14)).toMatch(/arrival_ms/);
  });

  it('refuses an unreadable file and a request it could not load back, with typed errors', () => {
    throwsTrace(() => loadTrace(join(tmpdir(), 'no-such-trace.jsonl')), 'unreadable');
    throwsTrace(() => saveTrace([{ id: 'x', arrivalMs: 0, prompt: [], maxTokens: 1 }]), 'invalid-request');
    throwsTrace(() => saveTrace([{ id: 'x', arrivalMs: NaN, prompt: [1], maxTokens: 1 }]), 'invalid-request');
    const r = { id: 'x', arrivalMs: 0, prompt: [1], maxTokens: 1 };
    throwsTrace(() => saveTrace([r, r]), 'invalid-request');
  });
});

describe('traceStats', () => {
  it('counts, spans and nearest-rank percentiles of a hand-made trace', () => {
    const reqs: TraceRequest[] = [10, 20, 30, 40].map((len, i) => ({
      id: `r${i}`, arrivalMs: 500 + 1000 * i, prompt: new Array<number>(len).fill(65), maxTokens: i + 1, n: i === 3 ? 5 : undefined,
    }));
    expect(traceStats(reqs)).toEqual({
      count: 4, samples: 8, durationS: 3, offeredRate: 1,
      input: { mean: 25, p50: 20, p99: 40, max: 40 },
      output: { mean: 2.5, p50: 2, p99: 4, max: 4 },
    });
    expect(traceStats(reqs.map((r) => ({ ...r, arrivalMs: 0 }))).offeredRate).toBe(Infinity);
    expect(traceStats(reqs.slice(0, 1)).offeredRate).toBeNull();
    expect(traceStats([])).toMatchObject({ count: 0, samples: 0, durationS: 0, offeredRate: null, input: { mean: 0 } });
  });
});
