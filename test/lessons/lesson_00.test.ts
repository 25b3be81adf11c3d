/** Lesson 00 end to end through the real kernel: every code cell in order, no errors, its charts and its check's feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, PLOTLY, displays, updates, dataOf, plotTitle, feedbackOf, markdownOf } from './lesson_run.ts';

describe('lesson 00 (why serving is costly) through the kernel', () => {
  const { cells, ran, client, run, value, runAll, outputsOf } = lessonRun('lessons/00-why-serving-is-costly.md');

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

  it('the memory chart counts in binary units, as the tables do: 64 MiB on its axis, never 67MB', () => {
    const all = ran.flatMap((r) => r.outputs);
    const final = updates(all).filter((u) => plotTitle(dataOf(u)).startsWith('Weights on ')).at(-1)!;
    const axis = (dataOf(final)[PLOTLY] as { layout: { yaxis: { tickvals: number[]; ticktext: string[]; tickformat?: string } } }).layout.yaxis;
    expect(axis.ticktext).toContain('64 MiB');
    expect(axis.tickvals[axis.ticktext.indexOf('64 MiB')]).toBe(64 * 2 ** 20);
    expect(axis.ticktext.join(' ')).not.toMatch(/\d\s?[kMG]B/);
    expect(axis.tickformat).toBeUndefined();
    const memoryTable = String(dataOf(displays(outputsOf("'bits per weight'"))[0])['text/html']);
    expect(memoryTable).toContain('a 7B model, GiB');
  });

  it('plots throughput against the batch, the variable the sweep changes, with every run, the median and the roofline', () => {
    const all = ran.flatMap((r) => r.outputs);
    const final = updates(all).filter((u) => plotTitle(dataOf(u)) === 'Rows per second as the batch grows').at(-1)!;
    const fig = dataOf(final)[PLOTLY] as { data: { name: string; mode: string; x: number[]; y: number[] }[]; layout: { xaxis: { title: { text: string }; type: string } } };
    expect(fig.layout.xaxis).toMatchObject({ title: { text: 'rows per step (batch)' }, type: 'log' });
    const byName = Object.fromEntries(fig.data.map((t) => [t.name, t]));
    expect(Object.keys(byName)).toEqual(['each run (rows/s)', 'median (rows/s)', 'roofline (rows/s)']);
    expect(byName['median (rows/s)'].x).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(byName['roofline (rows/s)'].x).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(byName['each run (rows/s)'].mode).toBe('markers');
    expect(new Set(byName['each run (rows/s)'].x)).toEqual(new Set([1, 2, 4, 8, 16, 32, 64]));
    expect(byName['each run (rows/s)'].x.length).toBeGreaterThanOrEqual(7 * 7); // at least minRuns of each batch
  });

  it('measures the bytes the formula predicts: fp32 and fp16 exactly, 4-bit with its scales', async () => {
    const measured = (await value('measured')) as Record<string, number>;
    const params = 4096 * 4096;
    expect(measured).toEqual({ fp32: params * 4, fp16: params * 2, '4-bit': params / 2 + (params / 32) * 4 });
  });

  it('measures a bandwidth, step times, a peak and a throughput for every batch, each with its spread', async () => {
    type T = { medianMs: number; minMs: number; q1Ms: number; q3Ms: number; runs: number };
    const v = (await value('{ bandwidth, peakFlops, latency, sweep, readTiming, probeBytes, llc }')) as {
      bandwidth: number; peakFlops: number; latency: Record<string, T>; sweep: { rows: number; rowsPerSecond: number; timing: T }[];
      readTiming: T; probeBytes: number; llc: number | null;
    };
    expect(v.peakFlops).toBeGreaterThan(1e8);
    // Bandwidth from a read-only pass over a buffer several times the last-level cache, at its fastest run.
    expect(v.probeBytes).toBeGreaterThanOrEqual(Math.max(256 * 2 ** 20, 4 * (v.llc ?? 0)));
    expect(v.bandwidth).toBeCloseTo(v.probeBytes / (v.readTiming.minMs / 1e3), 0);
    expect(v.bandwidth).toBeGreaterThan(1e8);
    expect(Object.keys(v.latency)).toEqual(['decode', 'batched', 'decode4level0', 'decode4level4']);
    for (const t of [...Object.values(v.latency), ...v.sweep.map((s) => s.timing), v.readTiming]) {
      expect(t.runs).toBeGreaterThanOrEqual(7);
      expect(t.minMs).toBeGreaterThan(0);
      expect(t.q1Ms).toBeLessThanOrEqual(t.medianMs);
      expect(t.medianMs).toBeLessThanOrEqual(t.q3Ms);
    }
    expect(v.sweep.map((s) => s.rows)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    for (const s of v.sweep) expect(s.rowsPerSecond).toBeCloseTo(s.rows / (s.timing.medianMs / 1e3), 6);
  });

  it('quotes every timing with its spread, and compares the 4-bit step at both accuracy levels with fp32', () => {
    const text = markdownOf(ran.flatMap((r) => r.outputs));
    expect(text).toMatch(/One decode step took \*\*[\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\)\*\*/);
    expect(text).toMatch(/At level 0 the step took [\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\)/);
    expect(text).toMatch(/at level 4, [\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\)/);
    expect(text).toMatch(/summing\s+\d+ MiB took [\d.]+ ms \(IQR/);
    expect(text).toMatch(/product\s+took [\d.]+ ms \(IQR/);
    const latencyTable = String(dataOf(displays(outputsOf('ratioToPrediction'))[0])['text/html']);
    for (const step of ['decode, 4-bit, level 0 (fp32 activations)', 'decode, 4-bit, level 4 (int8 activations)', 'IQR ms', 'runs']) expect(latencyTable).toContain(step);
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
    // Reading the global price instead of the parameter passes the first point (they are equal there), not the second.
    await run('function costPerMillionTokens(tokensPerSecond: number, price: number): number {\n  return (dollarsPerHour / (tokensPerSecond * 3600)) * 1e6;\n}');
    const global = feedbackOf(await run(checkCell.source));
    expect(global.map((f) => f.ok)).toEqual([true, false]);
    expect(global[1].check).toBe('cost per 1M tokens at 2500 tokens/s and $7.29 per hour');

    await run('function costPerMillionTokens(tokensPerSecond: number, dollarsPerHour: number): number {\n  return (dollarsPerHour / (tokensPerSecond * 3600)) * 1e6;\n}');
    const right = feedbackOf(await run(checkCell.source));
    expect(right.map((f) => f.ok)).toEqual([true, true]);
    expect(right[1].text).toContain('= 0.81 $');

    const costs = await run(cells[cells.length - 1].source);
    const fig = displays(costs).map(dataOf).find((d) => d[PLOTLY])!;
    expect(plotTitle(fig)).toBe('$ per 1M output tokens');
    expect(displays(costs).some((m) => /cheaper/.test(String(dataOf(m)['text/markdown'] ?? '')))).toBe(true);
  }, 120_000);
});
