/** Lesson 03 end to end through the real kernel: every code cell in order, no errors, its measurements, and both exercises' feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, markdownOf, feedbackOf, displays, dataOf, tracesOf } from './lesson_run.ts';
import { BUILTIN_CONFIG } from '../../engine/model/builtin.ts';
import { decodeFlops } from '../../engine/model/flops.ts';

/** The kvbytes exercise solved (the reference solution); the test breaks it one slip at a time. */
const KV_SOLUTION = `function kvBytesPerTokenByHand(cfg: LlamaConfig, bytesPerElement: number): number {
  const keyWidth = cfg.numKvHeads * cfg.headDim;
  return 2 * cfg.numLayers * keyWidth * bytesPerElement;
}`;

/** The crossover exercise solved; its slips change how each step is counted. */
const CROSSOVER_SOLUTION = `function crossoverLength(k: number): number {
  const ratio = (L: number) => forwardFlops(model.cfg, { newTokens: L }).total / forwardFlops(model.cfg, { newTokens: 1, pastTokens: L - 1 }).total;
  let L = 1;
  while (ratio(L) < k) L++;
  return L;
}`;

/** The prompt and the steps the lesson decodes: 16 bytes, then steps until the last predicts from 200 tokens. */
const P = 16;
const STEPS = 185;

describe('lesson 03 (the KV cache) through the kernel', () => {
  const { cells, ran, client, run, value, figure, outputsOf, liveChart, runAll } = lessonRun('lessons/03-kv-cache.md');

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', () => runAll(), 300_000);

  it('generates greedily, and Algorithm 1 read literally (recompute) picks the same tokens as generate', async () => {
    expect(await value('{ P: promptIds.length, story: story.tokens.length, literal: literal.steps.map((s) => s.newTokens), same: sameAsGenerate }')).toEqual({
      P, story: 120, literal: [16, 17, 18, 19, 20, 21, 22, 23], same: true,
    });
    const text = markdownOf(outputsOf('const literal ='));
    expect(text).toContain('16, 17, 18, 19, 20, 21, 22, 23 tokens');
    expect(text).toContain('**the same** as the first 8');
    const shown = displays(outputsOf('const literal =')).map((m) => String(dataOf(m)['text/plain'])).join('\n');
    expect(shown).toContain('"Call me Ishmael."');
  });

  it('counts the FLOPs from the shapes: 2 x 3,145,728 weights per token, 4,096 per attended position, a quadratic total', async () => {
    // By hand for the built-in model: q, o 256x256, k, v 256x128, gate, up, down 256x768, in 4 layers.
    const weights = 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768);
    expect(weights).toBe(3_145_728);
    const c = (await value('{ perToken, perPosition, head: one.head, rec: count.recompute.total, cached: count.cached.total }')) as Record<string, number>;
    expect(c.perToken).toBe(2 * weights);
    expect(c.perPosition).toBe(2 * 2 * 4 * 4 * 64);
    expect(c.head).toBe(2 * 256 * BUILTIN_CONFIG.vocabSize);
    expect(c.rec).toBe(decodeFlops(BUILTIN_CONFIG, { promptTokens: P, steps: STEPS, cache: false }).total);
    expect(c.cached).toBe(decodeFlops(BUILTIN_CONFIG, { promptTokens: P, steps: STEPS, cache: true }).total);
    const text = markdownOf(outputsOf('const count ='));
    expect(text).toContain('**6.29 MFLOP** (2 x 3,145,728 weights in 4 layers)');
    expect(text).toContain(`**${(c.rec / c.cached).toFixed(0)}x** less`);
  });

  it('decodes both ways live, the count beside the clock: same tokens, logits within fp32 rounding, the cache faster', async () => {
    const flops = liveChart(/^Predicted: GFLOP per step/);
    expect(flops.traces.map((t) => t.name)).toEqual(['without a cache (GFLOP)', 'with a KV cache (GFLOP)']);
    const rec = decodeFlops(BUILTIN_CONFIG, { promptTokens: P, steps: STEPS, cache: false }).steps;
    expect(flops.traces[0].x).toEqual(rec.map((s) => s.seqLen));
    expect(flops.traces[0].y).toEqual(rec.map((s) => s.total / 1e9));
    const ms = liveChart(/^Measured: ms per step on /);
    expect(ms.updates).toBeGreaterThanOrEqual(1);
    for (const t of ms.traces) expect(t.y).toHaveLength(3 * STEPS);

    const r = (await value(`{
      steps: MODES.map((m) => runs[m].map((run) => run.steps.length)),
      sameTokens, worstLogitDiff, tokensPerSec, totals: { recompute: totalMs('recompute'), cached: totalMs('cached') },
      flopsMatch: MODES.every((m) => runs[m].every((run) => run.steps.every((s, i) => s.flops === count[m].steps[i].total))),
    }`)) as { steps: number[][]; sameTokens: boolean; worstLogitDiff: number; tokensPerSec: Record<string, number>; totals: Record<string, number>; flopsMatch: boolean };
    expect(r.steps).toEqual([[STEPS, STEPS, STEPS], [STEPS, STEPS, STEPS]]);
    expect(r.sameTokens).toBe(true);
    expect(r.flopsMatch).toBe(true);
    expect(r.worstLogitDiff).toBeLessThan(1e-5);
    // 96x fewer FLOPs: the direction is the lesson's claim; its size is reported, not asserted.
    expect(r.totals.cached).toBeLessThan(r.totals.recompute);
    expect(r.tokensPerSec.cached).toBeGreaterThan(r.tokensPerSec.recompute);
    const text = markdownOf(outputsOf('const median ='));
    expect(text).toContain('**the same tokens** in every run');
    expect(text).toContain(`**${r.tokensPerSec.recompute.toFixed(0)} tokens/s** without a cache and **${r.tokensPerSec.cached.toFixed(0)} tokens/s** with one`);
    const table = displays(outputsOf('const median =')).map((m) => String(dataOf(m)['text/plain'])).join('\n');
    expect(table).toMatch(/\n\s*17\s+16\.6/);

    const fit = (await value('{ slope, fixedMs, gflopsRate, cachedMs }')) as Record<string, number>;
    expect(fit.slope).toBeGreaterThan(0);
    expect(fit.gflopsRate).toBeCloseTo(1 / fit.slope / 1e6, 9);
    const traces = tracesOf(figure('Measured time per step against predicted FLOPs (medians)'));
    expect(traces.map((t) => t.name)).toEqual(['without a cache', 'with a KV cache', `fit: ${fit.fixedMs.toFixed(2)} ms + FLOPs at ${fit.gflopsRate.toFixed(0)} GFLOP/s`]);
    expect(markdownOf(outputsOf('const points ='))).toContain(`a rate of **${fit.gflopsRate.toFixed(0)} GFLOP/s**`);
  });

  it('the crossover exercise says below or past the smallest length, then passes; the clock is compared with it', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'crossover')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'crossoverLength(20)', ok: false, text: expect.stringContaining('NaN') })]);
    expect(markdownOf(outputsOf('const K_TIMES ='))).toContain('Finish the exercise above');

    const attempt = async (code: string) => {
      await run(code);
      return feedbackOf(await run(checkCell.source));
    };
    // Projections alone: the ratio is exactly L, so the answer comes out one short.
    const projectionsOnly = await attempt(CROSSOVER_SOLUTION.replace(/\.total/g, '.projections'));
    expect(projectionsOnly).toHaveLength(1);
    expect(projectionsOnly[0]).toMatchObject({ ok: false });
    expect(projectionsOnly[0].text).toMatch(/is 20, .*\(expected 21\)/);
    expect(projectionsOnly[0].text).toContain('still below 20');
    const onePast = await attempt(CROSSOVER_SOLUTION.replace('return L;', 'return L + 1;'));
    expect(onePast[0].text).toContain('but it already reached 20 at L = 21');

    const right = await attempt(CROSSOVER_SOLUTION);
    expect(right.map((f) => [f.check, f.ok])).toEqual([['crossoverLength(20)', true], ['crossoverLength(100)', true]]);
    expect(right[1].text).toContain('= 106: correct');

    const compared = markdownOf(await run(cells.find((c) => c.source.startsWith('const K_TIMES ='))!.source));
    expect(compared).toContain('from **L = 21**');
    expect(compared).toMatch(/There, the clock measured \*\*[\d.]+x\*\*/);
  }, 120_000);

  it('reads the cache from the tracker: exactly 4,096 bytes per reserved position, flat while one sequence fills it, 7.8% used at 20 tokens', async () => {
    const m = (await value('{ reserved, fill, flat, kvLeft: dev.memory.snapshot().byTag.kv }')) as {
      reserved: { batch: number; maxSeq: number; predicted: number; tracker: number; cacheBytes: number }[];
      fill: { tokens: number; reserved: number; used: number }[]; flat: boolean; kvLeft: number;
    };
    const perSeq = 256 * 4096;
    expect(m.reserved).toEqual([1, 8, 32].map((batch) => ({ batch, maxSeq: 256, predicted: batch * perSeq, tracker: batch * perSeq, cacheBytes: batch * perSeq })));
    // The prompt, then one decode step per token until all 256 positions hold one.
    expect(m.fill.map((f) => f.tokens)).toEqual(Array.from({ length: 256 - P + 1 }, (_, i) => P + i));
    expect(m.fill.every((f) => f.reserved === perSeq && f.used === f.tokens * 4096)).toBe(true);
    expect(m.flat).toBe(true);
    expect(m.kvLeft).toBe(0);

    const memory = liveChart(/^Memory on .* by tag, as KV caches are reserved and freed$/);
    const kv = memory.traces.find((t) => t.name === 'kv')!.y as number[];
    expect(Math.max(...kv)).toBe(41 * perSeq);
    expect(markdownOf(outputsOf('const kvPerToken ='))).toContain('**exactly** the predicted bytes for every cache');

    const filled = liveChart(/^A cache of 256 positions: reserved and used$/);
    expect(filled.traces.map((t) => t.name)).toEqual(['reserved (tracker, kv tag) (KiB)', 'holding tokens (KiB)']);
    expect(filled.traces[0].y).toEqual(Array(256 - P + 1).fill(1024));
    expect(filled.traces[1].y!.at(-1)).toBe(1024);
    const text = markdownOf(outputsOf('const fillChart ='));
    expect(text).toContain('With **20 tokens**, 81,920 bytes of keys and values sat in **1,048,576 bytes reserved**: 7.8% of it used.');
    expect(text).toContain('The reservation stayed flat');
  });

  it('the kvbytes exercise names each slip (the 2, KV heads, layers, bits, a fixed 2 bytes), then passes', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'kvbytes')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'KV bytes per token, Llama-2-13B, fp16', ok: false, text: expect.stringContaining('NaN') })]);

    const attempt = async (from: string, to: string) => {
      expect(KV_SOLUTION).toContain(from);
      await run(KV_SOLUTION.replace(from, to));
      return feedbackOf(await run(checkCell.source));
    };
    const slip = async (from: string, to: string, failsAt: number, says: string) => {
      const f = await attempt(from, to);
      expect(f).toHaveLength(failsAt + 1);
      expect(f.slice(0, failsAt).every((x) => x.ok)).toBe(true);
      expect(f[failsAt]).toMatchObject({ ok: false });
      expect(f[failsAt].text).toContain(says);
    };
    await slip('return 2 *', 'return', 0, 'the 2: every token stores a key **and** a value');
    await slip('cfg.numKvHeads * cfg.headDim', 'cfg.hiddenSize', 1, 'the width of a key: numKvHeads x headDim (8 x 128)');
    await slip('cfg.numKvHeads * cfg.headDim', 'cfg.numHeads * cfg.headDim', 1, 'under grouped-query attention only the KV heads are cached');
    await slip('* cfg.numLayers ', ' ', 0, 'the layers');
    await slip('* bytesPerElement', '* bytesPerElement * 8', 0, 'not bits');
    await slip('* bytesPerElement', '* 2', 2, 'not a fixed 2');
    const right = await attempt('', '');
    expect(right.map((f) => [f.check, f.ok])).toEqual([
      ['KV bytes per token, Llama-2-13B, fp16', true], ['KV bytes per token, Llama-3-8B, fp16', true], ['KV bytes per token, the built-in model, fp32', true],
    ]);
    expect(right[0].text).toContain('819200 B: correct');
  }, 120_000);

  it("sizes real models: the paper's 800 KB per token for OPT-13B and LLaMA-13B, 1.6 GB a request, a few requests on 40 GB", async () => {
    const rows = (await value('real.map((r) => [r.model, r["KV KiB per token"], r["fp16 weights GB"]])')) as [string, number, number][];
    expect(rows.map(([m, kib]) => [m, kib])).toEqual([['Llama-2-7B', 512], ['Llama-2-13B', 800], ['Llama-3-8B', 128], ['TinyLlama-1.1B', 22], ['OPT-13B', 800]]);
    const bars = tracesOf(figure('KV cache per token in fp16'));
    expect(bars[0].y).toEqual([512, 800, 128, 22, 800]);
    const text = markdownOf(outputsOf('const A100 ='));
    expect(text).toContain('2 x 5120 x 40 x 2 = **819,200 bytes** per token, 800 KiB');
    expect(text).toContain('A 2048-token request holds 1.68 GB of it');
    expect(text).toContain('25.7 GB in fp16, 64% of the 40 GB');
    // 0.3 x 40e9 / 819,200 = 14,648 tokens: 7 requests of 2048.
    expect(text).toContain('holds **14,648 tokens**: 7 requests');
    expect(text).toContain('Llama-3-8B caches 128 KiB per token with 8 KV heads where Llama-2-7B, the same width\nwith 32, caches 512 KiB');
  });
});
