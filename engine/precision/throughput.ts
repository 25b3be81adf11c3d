/** MatMul throughput per dtype on the active backend, with what the device says about how it computes each (the lecture's "faster computing speed", checked). */
import type { Device } from '../device/device.ts';
import { getDevice } from '../device/select.ts';
import type { FloatDType } from '../dtype/dtype.ts';
import type { BackendName } from '../backends/backend.ts';
import { Graph } from '../graph/graph.ts';
import { timeMs, type Timing } from '../timing.ts';
import { DEFAULT_SEED, sampleValues } from './random.ts';
import { checkAbort, positiveInt } from './util.ts';

export interface ThroughputRow {
  dtype: FloatDType;
  m: number;
  k: number;
  n: number;
  /** Median milliseconds per run of the whole graph (input copy included). */
  ms: number;
  minMs: number;
  runs: number;
  /** The runs themselves: median, quartiles and spread (timeMs), to say how much the time moved. */
  timing: Timing;
  /** 2 m k n / median time. */
  gflops: number;
  /** Computed in a wider type and rounded, rather than by a kernel of this dtype. */
  emulated: boolean;
  /** The device's own note for this dtype, or its general note. */
  note: string;
}

export interface ThroughputResult {
  device: string;
  kind: BackendName;
  notes: string[];
  rows: ThroughputRow[];
}

export interface ThroughputOptions {
  device?: Device;
  m?: number;
  k?: number;
  n?: number;
  dtypes?: readonly FloatDType[];
  warmup?: number;
  /** At least this many timed runs, more until minTimeMs has gone into timed runs (up to maxRuns). */
  runs?: number;
  maxRuns?: number;
  minTimeMs?: number;
  seed?: number;
  signal?: AbortSignal;
}

/**
 * Reads the device's notes: a note that starts with the dtype and says it is computed in fp32 marks emulation;
 * the reference backend computes everything in float64 loops, so fp16 and bf16 are emulated there too.
 */
export function dtypeNote(notes: readonly string[], kind: BackendName, dtype: FloatDType): { emulated: boolean; note: string } {
  const own = notes.find((s) => s.startsWith(`${dtype}:`));
  if (own) return { emulated: /computed in fp32/.test(own), note: own };
  const general = notes.find((s) => s.startsWith(`${kind}:`));
  if (general) return { emulated: dtype !== 'fp32' && kind === 'reference', note: general };
  return { emulated: false, note: `${dtype}: no note from the device, so no emulation reported` };
}

/**
 * For each dtype: a graph x [m, k] times a constant weight [k, n] (baked into the session, as a model's
 * weights are), run on the device and timed with timeMs (warm-up discarded, median with quartiles). On the CPU
 * fp16 and bf16 bring no speedup over fp32: they are fp32 GEMMs with casts around them.
 */
export async function matmulThroughput(opts: ThroughputOptions = {}): Promise<ThroughputResult> {
  const {
    m = 512, k = 512, n = 512, dtypes = ['fp32', 'fp16', 'bf16'], warmup = 2, runs = 5, maxRuns = 50, minTimeMs = 200,
    seed = DEFAULT_SEED, signal,
  } = opts;
  for (const [name, v] of Object.entries({ m, k, n, runs, maxRuns })) positiveInt(`matmulThroughput ${name}`, v);
  const dev = opts.device ?? (await getDevice());
  const notes = dev.notes();
  const xs = sampleValues(m * k, 'signed', seed);
  const ws = sampleValues(k * n, 'signed', seed + 1);
  const rows: ThroughputRow[] = [];
  for (const dtype of dtypes) {
    checkAbort(signal);
    const w = dev.tensor(ws, [k, n], dtype, { tag: 'weights', label: `throughput w ${dtype}` });
    const x = dev.tensor(xs, [m, k], dtype, { label: `throughput x ${dtype}` });
    try {
      const g = new Graph(`matmul_${dtype}_${m}x${k}x${n}`);
      g.output(g.op('MatMul', [g.input('x', dtype, [m, k]), g.constant('w', w)])[0]);
      const timing = await timeMs(
        async () => {
          checkAbort(signal);
          const [y] = await dev.run(g, [x]);
          y.dispose();
        },
        { warmup, minRuns: runs, maxRuns: Math.max(runs, maxRuns), budgetMs: minTimeMs },
      );
      const ms = timing.medianMs;
      rows.push({ dtype, m, k, n, ms, minMs: timing.minMs, runs: timing.runs, timing, gflops: (2 * m * k * n) / (ms * 1e6), ...dtypeNote(notes, dev.kind, dtype) });
    } finally {
      x.dispose();
      w.dispose();
    }
  }
  return { device: dev.name, kind: dev.kind, notes: dev.notes(), rows };
}
