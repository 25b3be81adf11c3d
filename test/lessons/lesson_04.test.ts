/** Lesson 04 end to end through the real kernel: every code cell in order, no errors, its measurements, and both exercises' feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, markdownOf, solutionsOf } from './lesson_run.ts';

/** The reference solutions, as the solutions file holds them. */
const SOLUTIONS = solutionsOf('lessons/04-paged-attention.solutions.md');

describe('lesson 04 (paged attention) through the kernel', () => {
  const { client, value, liveChart, outputsOf, runAll, exercise } = lessonRun('lessons/04-paged-attention.md');

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', () => runAll(), 300_000);

  it('serves the same requests from the same memory: paging runs more sequences at once and fills what it reserves', async () => {
    const s = (await value('Object.fromEntries(Object.entries(served).map(([k, v]) => [k, { mean: v.meanRunning, peak: v.peakRunning, share: v.usedShare.reduce((a, b) => a + b, 0) / v.steps, tokens: v.tokens }]))')) as Record<string, { mean: number; peak: number; share: number; tokens: number }>;
    const [naive, paged, token] = [s.contiguous, s['paged, blocks of 16'], s.token];
    // A region of the whole context each: 4 MiB holds 4 of them.
    expect(naive.peak).toBe(4);
    expect(naive.share).toBeLessThan(0.5);
    expect(paged.mean).toBeGreaterThan(1.5 * naive.mean);
    expect(paged.share).toBeGreaterThan(0.85);
    expect(token.share).toBe(1);
    // Every request produced its whole output in every layout.
    const want = (await value('requests.reduce((s, r) => s + r.output, 0)')) as number;
    expect([naive.tokens, paged.tokens, token.tokens]).toEqual([want, want, want]);
    expect(liveChart(/^Sequences running at each step: token/).traces.map((t) => t.name)).toEqual(['contiguous', 'paged, blocks of 16', 'token']);
    expect(liveChart(/^Sequences running at each step: contiguous/).updates).toBeGreaterThanOrEqual(1);
  });

  it('splits the waste as the vLLM paper does, and paged attention gives the contiguous cache\'s logits', async () => {
    const w = (await value('[contiguousWaste, pagedWaste].map((x) => [x.reservedBytes, x.usedBytes + x.reservation + x.internalFragmentation + x.externalFragmentation, x.reservation])')) as number[][];
    for (const [reserved, sum] of w) expect(sum).toBe(reserved);
    expect(w[1][2]).toBe(0);
    expect((await value('worst')) as number).toBeLessThan(1e-4);
    expect(markdownOf(outputsOf('const prompt = requests[4].prompt'))).toMatch(/largest difference .* is \*\*\d\.\d\de-\d\*\*/);
    const ratio = (await value('tp.medianMs / tc.medianMs')) as number;
    expect(ratio).toBeGreaterThan(0);
  });

  it('shares memory: forked samples, hashed prefix blocks and a radix tree', async () => {
    const fork = (await value('{ after: shared.reservedBytes, alone }')) as { after: number; alone: number };
    expect(fork.after).toBeLessThan(fork.alone);
    const rows = (await value('[noCache.row, hashed.row, radix.row].map((r) => r["tokens computed"])')) as number[];
    // 8 prompts of 108 tokens; hashing shares the 6 full blocks of the preamble; the radix tree shares it to the token.
    expect(rows).toEqual([864, 96 + 12 + 7 * 12, 96 + 12 + 7 * 12 - 2]);
    expect((await value('again.cached[0]')) as number).toBeGreaterThanOrEqual(96);
  });

  it('verifies a token tree in one pass: greedy\'s tokens, fewer passes, the tree\'s KV stored once', async () => {
    const r = (await value('{ identical: race.identical, steps: race.speculative.steps, tokens: race.speculative.tokens.length, tree: race.speculative.kv.treeBytes, branches: race.speculative.kv.branchBytes, measured: treeBytesMeasured, nodes: kv.nodes, bpt: bytesPerToken }')) as Record<string, number | boolean>;
    expect(r.identical).toBe(true);
    expect(r.steps).toBeLessThan(r.tokens as number);
    expect(r.tree).toBeLessThan(r.branches as number);
    expect(r.measured).toBe((r.nodes as number) * (r.bpt as number));
  });

  for (const id of ['blocksize', 'fits']) {
    it(`the ${id} exercise fails with its starter code and passes with the reference solution`, async () => {
      const { starter, solved } = await exercise(id, SOLUTIONS[id]);
      expect(starter.length).toBeGreaterThan(0);
      expect(starter[0].ok).toBe(false);
      expect(solved.length).toBeGreaterThan(0);
      expect(solved.every((f) => f.ok)).toBe(true);
    });
  }
});
