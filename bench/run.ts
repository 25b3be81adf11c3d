/**
 * `servelab bench`: GEMM throughput per format, quantized Linear layers (int8, LLM.int8) against fp32 with bytes per
 * weight, engine overhead and the machine's peak, the engine core (sessions per graph structure, shape-polymorphic step
 * time, tracker against the resident set, host<->GPU bytes) and onnxruntime's thread settings, printed and saved as
 * JSON with targets checked.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { cpuInfo, createDevice, type Device } from '../engine/index.ts';
import { benchGemm, SHAPES, type GemmResult } from './gemm.ts';
import { gemmOverhead, tinyOpOverhead, type Overhead } from './overhead.ts';
import { arithmeticPeaks } from './peak.ts';
import { benchQuant, printQuant, type QuantBench } from './quant.ts';
import { benchEngine, printEngine, type EngineBench } from './engine.ts';
import { benchThreads, printThreads, type ThreadsBench } from './threads.ts';
import { benchModel, printModel, type ModelBench } from './model.ts';
import { benchKv, kvTargets, printKv, type KvBench } from './kv.ts';
import { benchServe, printServe, serveTargets, type ServeBench } from './serve.ts';
import { targetLine } from './alone.ts';
import { benchTrain, printTrain, trainTargets, type TrainBench } from './train.ts';
import { benchKernelWithSoak, kernelTargets, printKernel, type KernelBench } from './kernel.ts';
import { benchParallel, parallelTargets, printParallel, type ParallelBench } from './parallel.ts';

const NO_VNNI = 'this CPU has no VNNI (avx512_vnni or avx_vnni)';

export interface Target {
  name: string;
  met: boolean;
  measured: string;
  goal: string;
  /** Why a missed target is missed, from what the run measured. */
  gap?: string;
}

export interface BenchReport {
  /** int8PeakGops: uint8 x int8 multiply-adds (2 ops each) at the CPU's peak, by int8Path; null if not measured. */
  machine: { cpu: string; cores: number; simd: string[]; peakGflops: number; peakSource: string; int8PeakGops?: number | null; int8Path?: string | null };
  device: { name: string; backend: string; placement: Record<string, string>; notes: string[] };
  results: GemmResult[];
  /** Quantized Linear layers against fp32 as the batch and the layer grow, and bytes per weight per format. */
  quant: QuantBench;
  overhead: { engineUs: number; rawUs: number; gemm1024: Overhead; tiny: Overhead };
  /** Sessions per graph structure, shape-polymorphic step time, tracker against RSS, host<->GPU bytes, 4-bit GEMV. */
  engine: EngineBench;
  /** onnxruntime CPU intra-op threads and spinning: one graph alone and two alternated (cpu only). */
  threads: ThreadsBench | null;
  /** The built-in model: prefill and decode throughput, a decode step against its matmuls, sessions, memory. */
  model: ModelBench;
  /** KV cache: decode with and without it, paged against contiguous attention, memory held per layout. */
  kv: KvBench;
  /** Serving: continuous against static batching, paged against contiguous memory, prefix caching, preemption, load. */
  serve: ServeBench;
  /** Training quantization: full fine-tuning, LoRA by rank and QLoRA on the built-in model; merging; paged AdamW. */
  train: TrainBench;
  /** Parallel training on worker threads: data parallelism and ZeRO 1-3 per worker, pipeline, tensor parallel, offloading. */
  parallel: ParallelBench;
  /** The Jupyter kernel: start, cell latency by kind, resident set after start and over many cells. */
  kernel: KernelBench;
  targets: Target[];
  date: string;
  versions: Record<string, string>;
}

const log = (s: string) => process.stderr.write(`${s}\n`);

export async function runBench(opts: { device?: string; quick?: boolean } = {}): Promise<BenchReport> {
  const kind = opts.device ?? process.env.SERVELAB_DEVICE ?? 'cpu';
  const dev: Device = await createDevice(kind);
  const cpu = cpuInfo();
  log(`servelab bench on ${dev.name} (${cpu.model}, ${cpu.cores} cores)`);
  const peak = arithmeticPeaks();
  log(`  fp32 peak ${peak.gflops.toFixed(0)} GFLOP/s (${peak.source})${peak.int8 ? `; int8 peak ${peak.int8.gops.toFixed(0)} GOP/s (${peak.int8.path})` : ''}`);
  const shapes = opts.quick ? SHAPES.filter(([m, k]) => m <= 256 || k === 4096) : SHAPES;
  const results: GemmResult[] = [];
  const formats = ['fp32', 'int8', 'int4'] as const;
  let step = 0;
  for (const shape of shapes) {
    for (const f of formats) {
      const r = await benchGemm(dev, f, shape);
      results.push(r);
      log(`  [${++step}/${shapes.length * formats.length}] ${f.padEnd(4)} ${shape.join('x').padEnd(14)} ${r.ms.toFixed(3).padStart(9)} ms ${r.gflops.toFixed(1).padStart(7)} GFLOP/s`);
    }
  }
  const quant = await benchQuant(kind, { quick: opts.quick });
  log('  overhead: engine against raw onnxruntime session.run ...');
  const tiny = await tinyOpOverhead(dev);
  const gemm1024 = await gemmOverhead(dev);
  const engine = await benchEngine(kind, { quick: opts.quick });
  const threads = dev.kind === 'cpu' ? await benchThreads({ quick: opts.quick }) : null;
  log('  model: the built-in model served ...');
  const model = await benchModel(kind, { quick: opts.quick });
  log('  kv: the KV cache ...');
  const kv = await benchKv(kind, { quick: opts.quick });
  log('  serve: the serving engine ...');
  const serve = await benchServe(kind, { quick: opts.quick });
  log('  train: full fine-tuning, LoRA and QLoRA ...');
  const train = await benchTrain(kind, { quick: opts.quick, log });
  log('  parallel: data parallelism, ZeRO, pipeline, tensor parallelism, offloading on worker threads ...');
  const parallel = await benchParallel(kind, { quick: opts.quick, log });
  log('  kernel: the Jupyter kernel, then a soak of 1,000 cells (200 with --quick) ...');
  const kernel = await benchKernelWithSoak({ cells: opts.quick ? 10 : 20, growthCells: opts.quick ? 400 : 1000, soakCells: opts.quick ? 200 : 1000 });
  const report: BenchReport = {
    machine: { cpu: cpu.model, cores: cpu.cores, simd: cpu.simd, peakGflops: peak.gflops, peakSource: peak.source, int8PeakGops: peak.int8?.gops ?? null, int8Path: peak.int8?.path ?? null },
    device: { name: dev.name, backend: dev.kind, placement: dev.placement(), notes: dev.notes() },
    results,
    quant,
    overhead: { engineUs: tiny.engineUs, rawUs: tiny.rawUs, tiny, gemm1024 },
    engine,
    threads,
    model,
    kv,
    serve,
    train,
    parallel,
    kernel,
    targets: [],
    date: new Date().toISOString(),
    versions: { node: process.versions.node, onnxruntime: (await import('onnxruntime-node')).env.versions.node ?? '' },
  };
  report.targets = checkTargets(report);
  await dev.dispose();
  return report;
}

const find = (r: GemmResult[], dtype: string, m: number, k: number) => r.find((x) => x.dtype === dtype && x.m === m && x.k === k);

export function checkTargets(rep: BenchReport): Target[] {
  const t: Target[] = [];
  const f2048 = find(rep.results, 'fp32', 2048, 2048);
  const i2048 = find(rep.results, 'int8', 2048, 2048);
  const f4096 = find(rep.results, 'fp32', 1, 4096);
  const q4096 = find(rep.results, 'int4', 1, 4096);
  if (f2048) {
    const share = f2048.gflops / rep.machine.peakGflops;
    t.push({
      name: 'fp32 GEMM 2048 reaches 60% of peak',
      met: share >= 0.6,
      measured: `${f2048.gflops.toFixed(0)} GFLOP/s = ${(share * 100).toFixed(0)}% of ${rep.machine.peakGflops.toFixed(0)}`,
      goal: '>= 60%',
      gap: share >= 0.6 ? undefined : `${((0.6 - share) * rep.machine.peakGflops).toFixed(0)} GFLOP/s short`,
    });
  }
  // The int8 targets were set on CPUs with VNNI (one instruction for four uint8 x int8 products, summed in int32).
  const vnni = (rep.machine.simd ?? []).some((f) => f === 'avx512_vnni' || f === 'avx_vnni');
  if (f2048 && i2048) {
    const x = i2048.gflops / f2048.gflops;
    const m = rep.machine;
    // The bound from the hardware: int8 peak over fp32 peak, both measured by the same loop (bench/peak.c).
    const peaks = m.int8PeakGops ? `; this CPU's int8 multiply-add peak is ${(m.int8PeakGops / m.peakGflops).toFixed(2)}x its fp32 peak (${m.int8PeakGops.toFixed(0)} GOP/s by ${m.int8Path}), the int8 GEMM at ${((i2048.gflops / m.int8PeakGops) * 100).toFixed(0)}% of it, fp32 GEMM at ${((f2048.gflops / m.peakGflops) * 100).toFixed(0)}% of its own` : '';
    const why = vnni ? '' : `; ${NO_VNNI}: the exact uint8 x uint8 kernel runs instead of uint8 x int8, which saturates on this CPU`;
    t.push({ name: 'int8 GEMM 2048 at least 2x fp32', met: x >= 2, measured: `${x.toFixed(2)}x`, goal: '>= 2x', gap: x >= 2 ? undefined : `${(2 - x).toFixed(2)}x short${why}${peaks}` });
  }
  if (f4096 && q4096) {
    const x = f4096.ms / q4096.ms;
    const why = vnni ? '' : `; ${NO_VNNI}: accuracy level 4 multiplies int8 activations without it`;
    t.push({ name: '4-bit decode GEMV 1x4096x4096 at least 5x faster than fp32', met: x >= 5, measured: `${x.toFixed(2)}x (${q4096.ms.toFixed(3)} ms vs ${f4096.ms.toFixed(3)} ms)`, goal: '>= 5x', gap: x >= 5 ? undefined : `${(5 - x).toFixed(2)}x short${why}` });
  }
  const bytes = rep.quant?.bytesPerWeight ?? [];
  if (bytes.length) {
    const off = bytes.filter((b) => b.measuredBytes !== b.formulaBytes);
    t.push({
      name: 'tracker bytes of each weight format match its formula',
      met: off.length === 0,
      measured: off.length ? off.map((b) => `${b.format}: ${b.measuredBytes} B, formula ${b.formulaBytes} B`).join('; ') : `${bytes.length} formats exact`,
      goal: 'equal',
    });
  }
  const g = rep.overhead.gemm1024;
  const rel = g.engineUs / g.rawUs - 1;
  t.push({ name: 'engine overhead at GEMM 1024 within 10% of raw onnxruntime', met: rel <= 0.1, measured: `${(rel * 100).toFixed(1)}% (${(g.engineUs / 1000).toFixed(2)} ms vs ${(g.rawUs / 1000).toFixed(2)} ms)`, goal: '<= 10%' });
  const tiny = rep.overhead.tiny;
  const abs = tiny.engineUs - tiny.rawUs;
  t.push({ name: 'engine overhead on a tiny op within 10 us', met: abs <= 10, measured: `+${abs.toFixed(1)} us (${tiny.engineUs.toFixed(1)} us vs ${tiny.rawUs.toFixed(1)} us)`, goal: '<= 10 us' });
  if (rep.engine) t.push(...engineTargets(rep.engine));
  if (rep.model) t.push(...modelTargets(rep.model));
  if (rep.kv) t.push(...kvTargets(rep.kv));
  if (rep.serve) t.push(...serveTargets(rep.serve));
  if (rep.train) t.push(...trainTargets(rep.train));
  if (rep.parallel) t.push(...parallelTargets(rep.parallel));
  if (rep.kernel) t.push(...kernelTargets(rep.kernel));
  return t;
}

export function modelTargets(m: ModelBench): Target[] {
  const t: Target[] = [];
  const s = m.stepVsMatmuls;
  t.push({
    name: 'a batch-1 decode step of the built-in model costs at most 1.5x its matmuls timed alone',
    met: s.ratio <= 1.5,
    measured: `${s.ratio.toFixed(2)}x (${s.stepMs.toFixed(3)} ms vs ${s.matmulsMs.toFixed(3)} ms for ${s.matmuls} matmuls)`,
    goal: '<= 1.5x',
    gap: s.ratio <= 1.5 ? undefined : `${(s.stepMs - 1.5 * s.matmulsMs).toFixed(3)} ms over`,
  });
  t.push({ name: `at most 3 sessions for a prefill and ${m.sessions.steps} decode steps`, met: m.sessions.created <= 3, measured: `${m.sessions.created}`, goal: '<= 3' });
  if (m.memory) {
    const off = Math.abs(m.memory.ratio - 1);
    t.push({
      name: 'tracker within 10% of the process growth while the model loads and serves (cpu)',
      met: off <= 0.1,
      measured: `${(m.memory.trackerBytes / 2 ** 20).toFixed(1)} MiB tracked, ${(m.memory.rssBytes / 2 ** 20).toFixed(1)} MiB resident growth (${(m.memory.ratio * 100).toFixed(1)}%)`,
      goal: '90% .. 110%',
      gap: off <= 0.1 ? undefined : `${(Math.abs(m.memory.rssBytes - m.memory.trackerBytes) / 2 ** 20).toFixed(1)} MiB ${m.memory.trackerBytes < m.memory.rssBytes ? 'untracked' : 'tracked but not resident'}`,
    });
  }
  return t;
}

export function engineTargets(e: EngineBench): Target[] {
  const t: Target[] = [];
  const s = e.sessions;
  const n = s.structures.length;
  const extra = s.structures.filter((x) => x.sessions > 1);
  t.push({
    name: 'one session per graph structure over the batch x sequence sweep',
    met: s.total <= n,
    measured: `${s.total} sessions for ${n} structures x ${s.shapes} shapes (per exact shape: ${s.perExactShape})`,
    goal: `<= ${n}`,
    gap: s.total <= n ? undefined : `${s.total - n} more: ${extra.map((x) => `${x.what} ${x.sessions}`).join(', ')}`,
  });
  const worst = e.stepTime.rows.reduce((p, r) => (r.ratio > p.ratio ? r : p), e.stepTime.rows[0]);
  if (worst) {
    const met = worst.ratio <= 1.1;
    t.push({
      name: 'shape-polymorphic step within 10% of an exact-shape session',
      met,
      measured: e.stepTime.rows.map((r) => `${r.batch}x${r.seq} ${r.ratio.toFixed(3)}`).join(', '),
      goal: 'every ratio <= 1.10',
      gap: met ? undefined : `${worst.batch}x${worst.seq}: ${((worst.ratio - 1.1) * 100).toFixed(1)} points over (${worst.polyMs.toFixed(3)} ms vs ${worst.exactMs.toFixed(3)} ms)`,
    });
  }
  const m = e.memory;
  if (m) {
    const off = Math.abs(m.ratio - 1);
    t.push({
      name: 'tracker total within 10% of the process memory growth (cpu)',
      met: off <= 0.1,
      measured: `${(m.trackerBytes / 2 ** 20).toFixed(1)} MiB tracked, ${(m.rssBytes / 2 ** 20).toFixed(1)} MiB resident growth (${(m.ratio * 100).toFixed(1)}%)`,
      goal: '90% .. 110%',
      gap: off <= 0.1 ? undefined : `${((off - 0.1) * 100).toFixed(1)} points beyond; ${(Math.abs(m.rssBytes - m.trackerBytes) / 2 ** 20).toFixed(1)} MiB ${m.trackerBytes < m.rssBytes ? 'untracked' : 'tracked but not resident'}`,
    });
  }
  const g = e.gemv4;
  t.push({
    name: `4-bit decode GEMV 1x${g.k}x${g.n} through a shape-polymorphic Linear at least 5x faster than fp32`,
    met: g.speedup >= 5,
    measured: `${g.speedup.toFixed(2)}x (${g.int4Ms.toFixed(3)} ms vs ${g.fp32Ms.toFixed(3)} ms), ${g.sessionsPerLayer} session per layer`,
    goal: '>= 5x',
    gap: g.speedup >= 5 ? undefined : `${(5 - g.speedup).toFixed(2)}x short`,
  });
  return t;
}

export function printReport(rep: BenchReport): void {
  const out: string[] = [];
  out.push(`\nmachine: ${rep.machine.cpu}, ${rep.machine.cores} cores, ${rep.machine.simd.join(' ')}`);
  out.push(`fp32 peak: ${rep.machine.peakGflops.toFixed(0)} GFLOP/s (${rep.machine.peakSource})`);
  if (rep.machine.int8PeakGops) out.push(`int8 peak: ${rep.machine.int8PeakGops.toFixed(0)} GOP/s (${rep.machine.int8Path}), ${(rep.machine.int8PeakGops / rep.machine.peakGflops).toFixed(2)}x fp32`);
  out.push(`device: ${rep.device.name} (${rep.device.backend})`);
  for (const n of rep.device.notes) out.push(`  note: ${n}`);
  out.push('\nop                                   dtype  m x k x n             ms     GFLOP/s');
  for (const r of rep.results) {
    out.push(`${r.op.padEnd(37)}${r.dtype.padEnd(7)}${`${r.m} x ${r.k} x ${r.n}`.padEnd(18)}${r.ms.toFixed(3).padStart(9)}${r.gflops.toFixed(1).padStart(12)}`);
  }
  if (rep.quant) out.push(...printQuant(rep.quant));
  out.push(`\noverhead: tiny op engine ${rep.overhead.tiny.engineUs.toFixed(1)} us, raw ${rep.overhead.tiny.rawUs.toFixed(1)} us; ` + `GEMM 1024 engine ${(rep.overhead.gemm1024.engineUs / 1000).toFixed(2)} ms, raw ${(rep.overhead.gemm1024.rawUs / 1000).toFixed(2)} ms`);
  if (rep.engine) out.push(...printEngine(rep.engine));
  if (rep.threads) out.push(...printThreads(rep.threads));
  if (rep.model) out.push(...printModel(rep.model));
  if (rep.kv) out.push(...printKv(rep.kv));
  if (rep.serve) out.push(...printServe(rep.serve));
  if (rep.train) out.push(...printTrain(rep.train));
  if (rep.parallel) out.push(...printParallel(rep.parallel));
  if (rep.kernel) out.push(...printKernel(rep.kernel));
  out.push('\ntargets:');
  for (const t of rep.targets) out.push(targetLine(t));
  console.log(out.join('\n'));
}

export function saveReport(rep: BenchReport, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(rep, null, 2) + '\n');
}
