/**
 * What a live chart costs an experiment: the same loop of small matmuls on the cpu device, with and without a chart
 * (memory by tag from the device's tracker, GFLOP/s pushed every step) publishing to a sink that serializes every
 * bundle to JSON as the kernel does. Runs are interleaved in pairs and repeated; the overhead is the median of the
 * pairs' ratios, since on a shared 2-core machine the same run varies by 2x and two adjacent runs see much the same
 * load. The best run of each is compared too. The chart's own work (one update, one push) is also timed alone, which
 * predicts the overhead free of that noise. Target: <= 5%.
 *
 *   npx tsx kernel/display/live_overhead.bench.ts
 */
import { pathToFileURL } from 'node:url';
import { createDevice, matmul, type Device } from '../../engine/index.ts';
import type { DisplaySink, DisplayOptions, MimeBundle } from './sink.ts';
import { live, type LiveChart } from './live.ts';
import { toMimeBundle } from './mime.ts';

/** Counts what the kernel would put on the wire for each display_data / update_display_data. */
class SerializingSink implements DisplaySink {
  readonly signal = new AbortController().signal;
  messages = 0;
  bytes = 0;
  display(bundle: MimeBundle, opts: DisplayOptions = {}): void {
    const content = { data: bundle, metadata: opts.metadata ?? {}, transient: opts.displayId ? { display_id: opts.displayId } : {} };
    this.bytes += JSON.stringify(content).length;
    this.messages++;
  }
  clear(): void {}
}

// x [M, K] (activations, new every step) times w [K, N] (weights): 2*M*K*N flops a step.
const M = 64;
const K = 512;
const N = 512;
const STEPS = 1000;

async function experiment(dev: Device, xValues: Float32Array, wValues: Float32Array, chart: LiveChart | null): Promise<number> {
  const t0 = performance.now();
  const w = dev.tensor(wValues, [K, N], 'fp32', { tag: 'weights', label: 'w' });
  for (let i = 0; i < STEPS; i++) {
    const s = performance.now();
    const x = dev.tensor(xValues, [M, K], 'fp32', { label: 'x' });
    const y = await matmul(x, w);
    x.dispose();
    y.dispose();
    chart?.push({ gflops: (2 * M * K * N) / ((performance.now() - s) * 1e6) });
  }
  w.dispose();
  return performance.now() - t0;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export interface LiveOverhead {
  /** Median run with the chart attached. */
  withLiveMs: number;
  /** Median run without it. */
  withoutMs: number;
  /** Median over the interleaved pairs of (with / without - 1), in percent. */
  overheadPct: number;
  /** Best run with over best run without, less 1, in percent. */
  bestOfPct: number;
  /** Interleaved pairs measured. */
  runs: number;
  /** update_display_data messages per run with the chart. */
  updatesPerRun: number;
  /** Serialized bytes per message of the chart. */
  bytesPerUpdate: number;
  /** One update on its own: building the figure and serializing it, with a full run's series. */
  updateMs: number;
  /** One push of a sample, timed on its own. */
  pushNs: number;
  /** (updates x updateMs + steps x pushNs) over the median run without the chart: what the chart's own work adds. */
  predictedPct: number;
}

export async function liveOverhead(opts: { runs?: number } = {}): Promise<LiveOverhead> {
  const runs = opts.runs ?? 30;
  const dev = await createDevice('cpu');
  const xValues = Float32Array.from({ length: M * K }, (_, i) => Math.sin(i));
  const wValues = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i) / K);
  const sink = new SerializingSink();
  let lastChart: LiveChart | null = null;

  const withChart = async () => {
    const chart = live({ sink, memory: dev, title: 'matmul', series: { gflops: { unit: 'GFLOP/s' } } });
    const ms = await experiment(dev, xValues, wValues, chart);
    chart.close();
    lastChart = chart;
    return ms;
  };
  const without = () => experiment(dev, xValues, wValues, null);

  // Warm-up: sessions compiled, code optimized, and plotly.js embedded once (a one-off per kernel, not per chart).
  await without();
  await withChart();

  const withMs: number[] = [];
  const withoutMs: number[] = [];
  const ratios: number[] = [];
  const before = { messages: sink.messages, bytes: sink.bytes };
  for (let r = 0; r < runs; r++) {
    // Alternate the order so that a trend in the machine's load hits both alike.
    let a: number;
    let b: number;
    if (r % 2 === 0) {
      a = await withChart();
      b = await without();
    } else {
      b = await without();
      a = await withChart();
    }
    withMs.push(a);
    withoutMs.push(b);
    ratios.push(a / b);
  }
  const messages = sink.messages - before.messages;
  const bytes = sink.bytes - before.bytes;
  await dev.dispose();

  // One update alone: the closed chart still holds a full run's series; re-render and serialize it as publish does.
  const chart = lastChart as unknown as LiveChart;
  const reps = 200;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) sink.display(toMimeBundle(chart), { displayId: chart.displayId, update: true });
  const updateMs = (performance.now() - t0) / reps;

  // Pushes alone: a chart whose interval never ends publishes nothing while they run.
  const quiet = live({ sink, intervalMs: 3_600_000 });
  const pushes = 200_000;
  const t1 = performance.now();
  for (let i = 0; i < pushes; i++) quiet.push({ gflops: i });
  const pushNs = ((performance.now() - t1) * 1e6) / pushes;
  quiet.close();

  const updatesPerRun = messages / runs - 1; // less the first display_data of each chart
  const round = (x: number, d = 2) => Number(x.toFixed(d));
  const best = (xs: number[]) => Math.min(...xs);
  return {
    withLiveMs: round(median(withMs)),
    withoutMs: round(median(withoutMs)),
    overheadPct: round((median(ratios) - 1) * 100),
    bestOfPct: round((best(withMs) / best(withoutMs) - 1) * 100),
    runs,
    updatesPerRun: round(updatesPerRun, 1),
    bytesPerUpdate: Math.round(bytes / messages),
    updateMs: round(updateMs, 3),
    pushNs: Math.round(pushNs),
    predictedPct: round(((updatesPerRun * updateMs + (STEPS * pushNs) / 1e6) / median(withoutMs)) * 100, 3),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await liveOverhead(), null, 2));
}
