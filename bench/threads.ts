/**
 * onnxruntime's CPU threading, measured to choose its defaults: every session owns an intra-op thread pool whose
 * workers spin for a while after a run (session.intra_op.allow_spinning), so a second session run right after the
 * first competes with those spinning workers for the cores. Each setting runs one graph alone and two different
 * graphs alternated back to back, on decode-like (GEMV) and prefill-like (GEMM) work.
 */
import type * as ort from 'onnxruntime-node';
import { cpuInfo, Device, Graph, type Tensor } from '../engine/index.ts';
import { OrtBackend } from '../engine/backends/ort.ts';
import { rng, uniform } from './random.ts';
import { median, timeIt } from './stats.ts';

export interface ThreadSetting {
  name: string;
  /** null: onnxruntime's default (one thread per physical core). */
  intraOpThreads: number | null;
  /** null: the engine's default (spinning off, chosen from these numbers). */
  spinning: boolean | null;
}

export interface ThreadRow {
  setting: string;
  work: 'gemv' | 'gemm';
  /** m x k x n of the MatMul (weight a graph constant). */
  shape: string;
  /** Median us per run of one graph run again and again. */
  aloneUs: number;
  /** Median us per run when two graphs (same shape, different weights) alternate. */
  alternatedUs: number;
  /** alternatedUs / aloneUs: 1 when switching sessions costs nothing, about 2 when each waits out the other's spin. */
  ratio: number;
}

export interface ThreadsBench {
  cores: number;
  rows: ThreadRow[];
  /** The setting with the lowest geometric mean of its times relative to the default's, over every work and mode. */
  recommended: { setting: string; intraOpThreads: number | null; spinning: boolean | null; relativeToDefault: number; why: string };
  seconds: number;
}

export const SETTINGS: ThreadSetting[] = [
  // onnxruntime's own default, which the others are measured against: a thread per physical core, spinning.
  { name: 'onnxruntime default', intraOpThreads: null, spinning: true },
  { name: '1 thread, spinning', intraOpThreads: 1, spinning: true },
  { name: '1 thread, no spinning', intraOpThreads: 1, spinning: false },
  { name: '2 threads, spinning', intraOpThreads: 2, spinning: true },
  { name: '2 threads, no spinning', intraOpThreads: 2, spinning: false },
];

export function sessionOptions(s: ThreadSetting): ort.InferenceSession.SessionOptions {
  return {
    ...(s.intraOpThreads !== null ? { intraOpNumThreads: s.intraOpThreads, interOpNumThreads: 1 } : {}),
    ...(s.spinning !== null ? { extra: { session: { intra_op: { allow_spinning: s.spinning ? '1' : '0' } } } } : {}),
  };
}

const log = (s: string) => process.stderr.write(`${s}\n`);

function matmulGraph(dev: Device, [m, k, n]: number[], seed: number): { g: Graph; w: Tensor } {
  const w = dev.tensor(uniform(rng(seed), k * n, -0.05, 0.05), [k, n], 'fp32', { tag: 'weights' });
  const g = new Graph(`threads ${m}x${k}x${n} #${seed}`);
  g.output(g.op('MatMul', [g.input('x', 'fp32', [m, k]), g.constant('w', w)])[0]);
  return { g, w };
}

async function measure(s: ThreadSetting, work: 'gemv' | 'gemm', shape: number[], runs: number, rounds: number): Promise<ThreadRow> {
  const dev = new Device(`cpu (${s.name})`, new OrtBackend('cpu', sessionOptions(s)));
  try {
    const a = matmulGraph(dev, shape, 1);
    const b = matmulGraph(dev, shape, 2);
    const x = dev.tensor(uniform(rng(3), shape[0] * shape[1]), [shape[0], shape[1]]);
    const step = (g: Graph) => async () => (await dev.run(g, [x]))[0].dispose();
    const [runA, runB] = [step(a.g), step(b.g)];
    const alternate = async () => {
      await runA();
      await runB();
    };
    await alternate();
    const opts = { warmup: 2, minRuns: runs, maxRuns: runs, minTimeMs: 0 };
    const alone: number[] = [];
    const alternated: number[] = [];
    // Interleaved rounds: drift on a shared machine reaches both modes alike.
    for (let r = 0; r < rounds; r++) {
      alone.push((await timeIt(runA, opts)).ms * 1000);
      alternated.push(((await timeIt(alternate, opts)).ms * 1000) / 2);
    }
    for (const t of [a.w, b.w, x]) t.dispose();
    const aloneUs = median(alone);
    const alternatedUs = median(alternated);
    return { setting: s.name, work, shape: shape.join('x'), aloneUs, alternatedUs, ratio: alternatedUs / aloneUs };
  } finally {
    await dev.dispose();
  }
}

export function recommend(rows: readonly ThreadRow[]): ThreadsBench['recommended'] {
  const base = rows.filter((r) => r.setting === 'onnxruntime default');
  const score = (setting: string) => {
    const own = rows.filter((r) => r.setting === setting);
    let logSum = 0;
    for (const r of own) {
      const d = base.find((x) => x.work === r.work)!;
      logSum += Math.log(r.aloneUs / d.aloneUs) + Math.log(r.alternatedUs / d.alternatedUs);
    }
    return Math.exp(logSum / (2 * own.length));
  };
  const names = [...new Set(rows.map((r) => r.setting))];
  const best = names.map((n) => ({ n, s: score(n) })).sort((p, q) => p.s - q.s)[0];
  const s = SETTINGS.find((x) => x.name === best.n)!;
  const own = rows.filter((r) => r.setting === best.n);
  const why = own.map((r) => {
    const d = base.find((x) => x.work === r.work)!;
    return `${r.work} ${r.shape}: alone ${r.aloneUs.toFixed(0)} us (default ${d.aloneUs.toFixed(0)}), alternated ${r.alternatedUs.toFixed(0)} us (default ${d.alternatedUs.toFixed(0)})`;
  }).join('; ');
  return { setting: best.n, intraOpThreads: s.intraOpThreads, spinning: s.spinning, relativeToDefault: best.s, why };
}

export async function benchThreads(opts: { quick?: boolean } = {}): Promise<ThreadsBench> {
  const quick = opts.quick ?? false;
  const t0 = performance.now();
  // --quick checks the code path at half the sizes; the settings are chosen from a full run.
  const works: ['gemv' | 'gemm', number[], number][] = quick
    ? [['gemv', [1, 1024, 1024], 10], ['gemm', [256, 256, 256], 5]]
    : [['gemv', [1, 2048, 2048], 100], ['gemm', [512, 512, 512], 20]];
  log(`  threads: onnxruntime intra-op threads and spinning, one graph alone and two alternated ...`);
  const rows: ThreadRow[] = [];
  for (const s of SETTINGS) {
    for (const [work, shape, runs] of works) {
      const r = await measure(s, work, shape, runs, quick ? 2 : 5);
      rows.push(r);
      log(`    ${s.name.padEnd(24)} ${work} ${r.shape.padEnd(14)} alone ${r.aloneUs.toFixed(0).padStart(7)} us  alternated ${r.alternatedUs.toFixed(0).padStart(7)} us  ${r.ratio.toFixed(2)}x`);
    }
  }
  return { cores: cpuInfo().cores, rows, recommended: recommend(rows), seconds: (performance.now() - t0) / 1000 };
}

export function printThreads(t: ThreadsBench): string[] {
  const out = [`\nthreads (onnxruntime CPU, ${t.cores} cores): us per run, one graph alone and two graphs alternated`];
  out.push(`${'setting'.padEnd(26)}${'work'.padEnd(20)}${'alone'.padStart(10)}${'alternated'.padStart(12)}${'ratio'.padStart(8)}`);
  for (const r of t.rows) out.push(`${r.setting.padEnd(26)}${`${r.work} ${r.shape}`.padEnd(20)}${r.aloneUs.toFixed(0).padStart(10)}${r.alternatedUs.toFixed(0).padStart(12)}${r.ratio.toFixed(2).padStart(8)}`);
  const rec = t.recommended;
  out.push(`  recommended: ${rec.setting} (${(rec.relativeToDefault * 100).toFixed(0)}% of the default's time, geometric mean)`);
  return out;
}
