/** Lesson 00 end to end through the real kernel: every code cell in order, no errors, its charts and its check's feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, PLOTLY, displays, updates, dataOf, plotTitle, feedbackOf } from './lesson_run.ts';

describe('lesson 00 (why serving is costly) through the kernel', () => {
  const { cells, ran, client, run, value, runAll } = lessonRun('lessons/00-why-serving-is-costly.md');

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', () => runAll(), 300_000);

  it('shows the price table and a plotly chart of the lecture prices', () => {
    const out = ran[0].outputs;
    const html = displays(out).map((m) => String(dataOf(m)['text/html'] ?? '')).join('');
    for (const model of ['o1-preview', 'GPT-4o', 'Claude 3 Opus', 'Claude 3.5 Sonnet', 'Gemini 1.5 pro']) expect(html).toContain(model);
    const fig = displays(out).map(dataOf).find((d) => d[PLOTLY])!;
    const traces = (fig[PLOTLY] as { data: { name: string; y: number[] }[] }).data;
    expect(traces.map((t) => [t.name, t.y])).toEqual([
      ['input', [15, 2.5, 15, 3, 1.25]],
      ['output', [60, 10, 75, 15, 5]],
    ]);
  });

  it('draws three live charts (memory, latency, throughput), each updated in place', () => {
    const all = ran.flatMap((r) => r.outputs);
    const live = displays(all).filter((m) => (m.content.transient as { display_id?: string } | undefined)?.display_id && dataOf(m)[PLOTLY]);
    const titles = live.map((m) => plotTitle(dataOf(m)));
    expect(titles).toEqual([expect.stringMatching(/^Weights on /), 'Time per step', 'Rows per second as the batch grows']);
    for (const m of live) {
      const id = (m.content.transient as { display_id: string }).display_id;
      const ups = updates(all).filter((u) => (u.content.transient as { display_id: string }).display_id === id);
      expect(ups.length, plotTitle(dataOf(m))).toBeGreaterThan(1);
    }
    const memoryFinal = updates(all).filter((u) => plotTitle(dataOf(u)).startsWith('Weights on ')).at(-1)!;
    expect(String(dataOf(memoryFinal)['text/plain'])).toMatch(/memory on \S+: live/);
  });

  it('measures the bytes the formula predicts: fp32 and fp16 exactly, 4-bit with its scales', async () => {
    const measured = (await value('measured')) as Record<string, number>;
    const params = 4096 * 4096;
    expect(measured).toEqual({ fp32: params * 4, fp16: params * 2, '4-bit': params / 2 + (params / 32) * 4 });
  });

  it('measures a bandwidth, step times, a peak and a throughput for every batch', async () => {
    const v = (await value('{ bandwidth, peakFlops, latency, sweep }')) as { bandwidth: number; peakFlops: number; latency: Record<string, number>; sweep: { rows: number; rowsPerSecond: number }[] };
    expect(v.bandwidth).toBeGreaterThan(1e8);
    expect(v.peakFlops).toBeGreaterThan(1e8);
    for (const ms of Object.values(v.latency)) expect(ms).toBeGreaterThan(0);
    expect(v.sweep.map((s) => s.rows)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    for (const s of v.sweep) expect(s.rowsPerSecond).toBeGreaterThan(0);
  });

  it("the cost exercise's check says what is wrong: the starter, a forgotten / 3600, then a correct answer", async () => {
    const checkCell = cells.find((c) => c.kind === 'check')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check')!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'cost per 1M tokens at batch 1', ok: false, text: expect.stringContaining('NaN') })]);
    const finalCell = ran[ran.length - 1].outputs;
    expect(displays(finalCell).map((m) => String(dataOf(m)['text/markdown']))).toEqual([expect.stringContaining('Finish the exercise above')]);

    await run('function costPerMillionTokens(tokensPerSecond: number, dollarsPerHour: number): number {\n  return (dollarsPerHour / tokensPerSecond) * 1e6;\n}');
    const forgot = feedbackOf(await run(checkCell.source));
    expect(forgot).toHaveLength(1);
    expect(forgot[0]).toMatchObject({ ok: false });
    expect(forgot[0].text).toMatch(/3600x too large/);
    expect(forgot[0].text).toMatch(/an hour has 3600/);

    await run('function costPerMillionTokens(tokensPerSecond: number, dollarsPerHour: number): number {\n  return (dollarsPerHour / (tokensPerSecond * 3600)) * 1e6;\n}');
    const right = feedbackOf(await run(checkCell.source));
    expect(right.map((f) => f.ok)).toEqual([true, true]);
    expect(right[1].text).toContain('= 1 $');

    const costs = await run(cells[cells.length - 1].source);
    const fig = displays(costs).map(dataOf).find((d) => d[PLOTLY])!;
    expect(plotTitle(fig)).toBe('$ per 1M output tokens');
    expect(displays(costs).some((m) => /cheaper/.test(String(dataOf(m)['text/markdown'] ?? '')))).toBe(true);
  }, 120_000);
});
