import { beforeEach, describe, expect, it } from 'vitest';
import { closeLiveCharts, live, type LiveChart } from '../../../kernel/display/live.ts';
import { PLOTLY_MIME, plotlyJs, type FigureJson, type Trace } from '../../../kernel/display/plotly.ts';
import { setSink } from '../../../kernel/display/sink.ts';
import { MemoryTracker } from '../../../engine/memory/tracker.ts';
import { RecordingSink } from './recording_sink.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fig = (e: { bundle: Record<string, unknown> }) => e.bundle[PLOTLY_MIME] as FigureJson;
const trace = (f: FigureJson, name: string) => f.data.find((t) => t.name === name) as Trace & { x: number[]; y: number[] };

let sink: RecordingSink;
beforeEach(() => {
  sink = new RecordingSink();
  plotlyJs.reset();
});

/** 1000 samples over about 300 ms, yielding to the event loop every 10, as an async experiment does. */
async function pushFor300ms(chart: LiveChart): Promise<void> {
  const t0 = performance.now();
  for (let i = 0; i < 1000; i++) {
    chart.push({ tokensPerSecond: i });
    if (i % 10 === 9) await sleep(Math.max(0, t0 + (i + 1) * 0.3 - performance.now()));
  }
}

describe('live chart', () => {
  it('publishes display_data with a display_id first, after the plotly.js loader of the kernel\'s first plot', () => {
    const chart = live({ sink, title: 'decode', series: { tokensPerSecond: { unit: 'tokens/s' } } });
    expect(sink.events).toHaveLength(2);
    const [loader, first] = sink.events;
    expect(loader.kind === 'display' && loader.displayId === undefined && String(loader.bundle['text/html'])).toContain('window.Plotly = Plotly');
    expect(first).toMatchObject({ kind: 'display', displayId: chart.displayId, update: false });
    expect(first.kind === 'display' && Object.keys(first.bundle).sort()).toEqual([PLOTLY_MIME, 'text/html', 'text/plain'].sort());
    // Its own HTML never carries plotly.js: it is replaced on every update.
    expect(first.kind === 'display' && String(first.bundle['text/html']).length).toBeLessThan(5000);
    chart.close();
    const again = live({ sink });
    expect(sink.forId(again.displayId)).toHaveLength(1);
    expect(sink.events.filter((e) => e.kind === 'display' && e.displayId === undefined)).toHaveLength(1);
    again.close();
  });

  it('1000 pushes over ~300 ms: at most one update per 100 ms, coalesced, and the last carries the final values', async () => {
    const chart = live({ sink, series: { tokensPerSecond: { unit: 'tokens/s' } } });
    const t0 = performance.now();
    await pushFor300ms(chart);
    const elapsed = performance.now() - t0;
    const beforeClose = sink.forId(chart.displayId).slice(1);
    chart.close();
    const all = sink.forId(chart.displayId);
    const updates = all.slice(1);
    expect(updates.every((e) => e.update)).toBe(true);
    expect(beforeClose.length).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 1);
    expect(beforeClose.length).toBeGreaterThanOrEqual(2);
    expect(updates.length).toBe(beforeClose.length + 1); // close adds exactly one: the final state
    // 10 Hz: every rate-limited publish (all but close's) is at least 100 ms after the one before it.
    const times = all.slice(0, -1).map((e) => e.at);
    for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(99);

    const last = updates[updates.length - 1];
    const tr = trace(fig(last), 'tokensPerSecond (tokens/s)');
    expect(tr.y).toHaveLength(1000);
    expect(tr.y[999]).toBe(999);
    expect(last.bundle['text/plain']).toContain('tokensPerSecond: last 999 tokens/s, mean 499.5 tokens/s (1,000 samples)');
    expect(chart.series().series[0]).toMatchObject({ name: 'tokensPerSecond', count: 1000, last: 999, mean: 499.5, source: 'push' });
  });

  it('close publishes the final state even inside the rate limit, once, and later pushes are ignored', async () => {
    const chart = live({ sink, intervalMs: 60_000 });
    chart.push({ gflops: 100 });
    chart.push({ gflops: 200 }); // within the interval of the first display: held back
    expect(sink.forId(chart.displayId)).toHaveLength(1);
    chart.close();
    chart.close();
    const all = sink.forId(chart.displayId);
    expect(all).toHaveLength(2);
    expect(trace(fig(all[1]), 'gflops').y).toEqual([100, 200]);
    expect(all[1].bundle['text/plain']).toMatch(/^live chart 'live' \(closed/);
    chart.push({ gflops: 300 });
    await sleep(150);
    expect(sink.forId(chart.displayId)).toHaveLength(2);
  });

  it("aborting the cell's signal publishes the final state and stops updates", async () => {
    const chart = live({ sink, intervalMs: 60_000 });
    chart.push({ gflops: 1 });
    chart.push({ gflops: 2 }); // held back by the interval: only the abort publishes it
    sink.controller.abort();
    expect(chart.closed).toBe(true);
    const all = sink.forId(chart.displayId);
    expect(all.map((e) => e.update)).toEqual([false, true]);
    expect(trace(fig(all[1]), 'gflops').y).toEqual([1, 2]);
    for (let i = 0; i < 50; i++) chart.push({ gflops: 3 });
    await sleep(250);
    expect(sink.forId(chart.displayId)).toHaveLength(2);
  });

  it('a signal already aborted gives one display and a closed chart', () => {
    sink.controller.abort();
    const chart = live({ sink });
    expect(chart.closed).toBe(true);
    expect(sink.forId(chart.displayId).map((e) => e.update)).toEqual([false, true]);
  });

  it('memory from a tracker: bytes by tag, stacked, with peak and budget; the final state read at close', async () => {
    const memory = new MemoryTracker('cpu', { budget: 4096 });
    const chart = live({ sink, memory: { memory }, title: 'kv growth' });
    // The tracker's stream may hold a change 100 ms and the chart another 100 ms: 250 ms sees it published.
    const w = memory.allocate(1000, 'weights', 'w');
    await sleep(250);
    const kv = memory.allocate(500, 'kv', 'cache');
    await sleep(250);
    memory.free(kv);
    memory.allocate(24, 'activations'); // within 100 ms of the stream's last snapshot: only close sees it
    chart.close();
    void w;

    const all = sink.forId(chart.displayId);
    const final = fig(all[all.length - 1]);
    const names = final.data.map((t) => t.name);
    expect(names).toEqual(['weights', 'kv', 'activations', 'peak']); // tags never used stay out of the legend
    expect(trace(final, 'weights').stackgroup).toBe('memory');
    expect(trace(final, 'weights').y.at(-1)).toBe(1000);
    expect(trace(final, 'kv').y.at(-1)).toBe(0);
    expect(Math.max(...trace(final, 'kv').y)).toBe(500);
    expect(trace(final, 'activations').y.at(-1)).toBe(24);
    expect(trace(final, 'peak').y.at(-1)).toBe(1500);
    expect(final.layout.shapes).toEqual([expect.objectContaining({ y0: 4096, y1: 4096 })]);
    // Some update in between showed the kv cache while it was live.
    expect(all.some((e) => trace(fig(e), 'kv')?.y.at(-1) === 500)).toBe(true);
    expect(all[all.length - 1].bundle['text/plain']).toContain('memory on cpu: live 1.0 KiB (weights 1000 B, kv 0 B, activations 24 B), peak 1.5 KiB, budget 4.0 KiB');

    const json = chart.series();
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
    const byName = Object.fromEntries(json.series.map((s) => [s.name, s]));
    expect(Object.keys(byName)).toEqual(['memory.weights', 'memory.kv', 'memory.activations', 'memory.live', 'memory.peak']);
    expect(byName['memory.live'].last).toBe(1024);
    expect(byName['memory.weights']).toMatchObject({ unit: 'B', source: 'memory', last: 1000 });
    expect(json).toMatchObject({ title: 'kv growth', device: 'cpu', budget: 4096, closed: true });
  });

  it('memory and throughput together: two stacked axes', () => {
    const memory = new MemoryTracker('cpu');
    const chart = live({ sink, memory, series: { gflops: { label: 'matmul', unit: 'GFLOP/s' } } });
    memory.allocate(64, 'activations');
    chart.push({ gflops: 12.5 });
    chart.close();
    const f = fig(sink.forId(chart.displayId).at(-1)!);
    expect(trace(f, 'matmul (GFLOP/s)').yaxis).toBe('y2');
    expect(f.layout.yaxis2).toMatchObject({ title: { text: 'GFLOP/s' }, anchor: 'x' });
    expect(f.layout.yaxis).toMatchObject({ tickvals: [0, 16, 32, 48, 64], ticktext: ['0 B', '16 B', '32 B', '48 B', '64 B'] });
  });

  it('the memory axis counts in binary units: 64 MiB of weights shows as 64 MiB, not 67MB', () => {
    const MiB = 2 ** 20;
    const memory = new MemoryTracker('cpu');
    const chart = live({ sink, memory });
    memory.allocate(64 * MiB, 'weights', 'W fp32');
    memory.allocate(8.5 * MiB, 'weights', 'W 4-bit');
    chart.close();
    const f = fig(sink.forId(chart.displayId).at(-1)!);
    const axis = f.layout.yaxis as { tickvals: number[]; ticktext: string[]; tickformat?: string; ticksuffix?: string };
    expect(axis.ticktext).toEqual(['0 B', '16 MiB', '32 MiB', '48 MiB', '64 MiB', '80 MiB']);
    expect(axis.tickvals).toEqual([0, 16, 32, 48, 64, 80].map((m) => m * MiB));
    expect(axis.tickformat).toBeUndefined();
    expect(axis.ticksuffix).toBeUndefined();
    expect(trace(f, 'weights').hovertemplate).toBe('%{y:,.0f} B');
    expect(trace(f, 'weights').y.at(-1)).toBe(72.5 * MiB); // the data stay exact bytes
    expect(sink.forId(chart.displayId).at(-1)!.bundle['text/plain']).toContain('live 72.5 MiB (weights 72.5 MiB)');
  });

  it('a budget above the data sets the top tick, so its line is on the scale', () => {
    const memory = new MemoryTracker('cpu', { budget: 3 * 2 ** 30 });
    const chart = live({ sink, memory });
    memory.allocate(2 ** 20, 'kv');
    chart.close();
    const ticktext = (fig(sink.forId(chart.displayId).at(-1)!).layout.yaxis as { ticktext: string[] }).ticktext;
    expect(ticktext).toEqual(['0 B', '512 MiB', '1 GiB', '1.5 GiB', '2 GiB', '2.5 GiB', '3 GiB']);
  });

  it('against a swept variable: x from the sample, markers on, the variable named on the axis and in the text', () => {
    const chart = live({
      sink,
      title: 'rows per second',
      x: { key: 'batch', label: 'rows per step (batch)', type: 'log' },
      series: { measured: { unit: 'rows/s' }, roofline: { unit: 'rows/s', style: { line: { dash: 'dash' } } } },
    });
    for (const batch of [1, 2, 4, 8]) chart.push({ batch, measured: 100 * batch, roofline: 120 * batch });
    chart.push({ batch: Infinity, measured: 1 }); // no place on the axis: skipped as a whole
    chart.close();
    const last = sink.forId(chart.displayId).at(-1)!;
    const f = fig(last);
    // On a log scale the ticks are the swept values, not Plotly's 1, 2, 5, 10 with every digit between.
    expect(f.layout.xaxis).toEqual({ title: { text: 'rows per step (batch)' }, type: 'log', tickvals: [1, 2, 4, 8], ticktext: ['1', '2', '4', '8'] });
    const measured = trace(f, 'measured (rows/s)');
    expect(measured).toMatchObject({ mode: 'lines+markers', x: [1, 2, 4, 8], y: [100, 200, 400, 800] });
    expect(trace(f, 'roofline (rows/s)')).toMatchObject({ x: [1, 2, 4, 8], line: { dash: 'dash' } });
    expect(f.data.map((t) => t.name)).toEqual(['measured (rows/s)', 'roofline (rows/s)']); // batch is no series
    expect(last.bundle['text/plain']).toContain('measured: last 800 rows/s at batch 8, mean 375 rows/s (4 samples)');
    expect(chart.series().x).toEqual({ key: 'batch', label: 'rows per step (batch)' });
    expect(chart.series().series[0].t).toEqual([1, 2, 4, 8]);
  });

  it('a sweep that goes down reverses its axis; a push without the x key or with memory is an error', () => {
    const chart = live({ sink, x: { key: 'threshold', reversed: true } });
    chart.push({ threshold: 6, error: 0.01 });
    expect(() => chart.push({ error: 0.02 })).toThrow(/plots against 'threshold': push\(\{ threshold: <number>/);
    chart.close();
    expect(fig(sink.forId(chart.displayId).at(-1)!).layout.xaxis).toEqual({ title: { text: 'threshold' }, type: 'linear', autorange: 'reversed' });
    expect(() => live({ sink, x: 'batch', memory: new MemoryTracker('cpu') })).toThrow(/memory is sampled in time/);
  });

  it('long runs stay bounded: points are merged, counts and means stay exact', () => {
    const chart = live({ sink, maxPoints: 100 });
    for (let i = 0; i < 100_000; i++) chart.push({ x: i % 10 });
    chart.close();
    const s = chart.series().series[0];
    expect(s.t.length).toBeLessThanOrEqual(101);
    expect(s.t.length).toBeGreaterThanOrEqual(50);
    expect(s).toMatchObject({ count: 100_000, mean: 4.5, last: 9 });
    expect(JSON.stringify(sink.events.at(-1)).length).toBeLessThan(20_000);
  });

  it('takes the running cell\'s sink by default; closeLiveCharts closes what a cell left open', () => {
    setSink(sink);
    try {
      const a = live();
      const b = live({ sink: new RecordingSink() });
      expect(closeLiveCharts(sink)).toBe(1);
      expect(a.closed).toBe(true);
      expect(b.closed).toBe(false);
      expect(closeLiveCharts()).toBe(1);
      expect(b.closed).toBe(true);
    } finally {
      setSink(null);
    }
  });

  it('a sink that fails from a timer closes the chart instead of throwing into the event loop', async () => {
    const chart = live({ sink });
    sink.display = () => {
      throw new Error('kernel gone');
    };
    chart.push({ x: 1 });
    await sleep(150);
    expect(chart.closed).toBe(true);
    expect(String(chart.error)).toContain('kernel gone');
  });
});
