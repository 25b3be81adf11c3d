/**
 * Parallel training of the built-in model on worker threads: data parallelism and ZeRO stages 1-3 at N = 2 and 4,
 * one row each with the model states a worker holds (bytes by tag) beside the paper's formula, its peak, the bytes it
 * sends per step beside 2 Psi / 3 Psi x (N - 1) / N, and the step time; whether every stage reaches data
 * parallelism's weights bit for bit. This machine has 2 cores, so step times show what the schemes cost in work and
 * traffic, not a speed-up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadJobParams } from '../engine/parallel/job.ts';
import { ZeroTrainer } from '../engine/parallel/zero.ts';
import { PipelineTrainer, type PipelineScheduleName } from '../engine/parallel/pipeline.ts';
import { TensorParallelTrainer, tensorParallelWeightBytes } from '../engine/parallel/tensor_parallel_train.ts';
import { OffloadTrainer } from '../engine/parallel/offload.ts';
import type { OffloadMode } from '../engine/parallel/offload_plan.ts';
import { ZERO_STAGE_NAMES, type ZeroStage } from '../engine/parallel/zero_memory.ts';
import { BatchSampler, mobyDick, type Batch } from '../engine/train/corpus.ts';
import type { Target } from './run.ts';
import { isMain, runAlone } from './alone.ts';

export interface ZeroRow {
  scheme: string;
  stage: ZeroStage;
  workers: number;
  /** The largest worker's peak over the measured step (all tags). */
  peakBytesPerWorker: number;
  /** weights + grads + optimizer held by the largest worker after the backward, before the update. */
  stateBytesPerWorker: number;
  /** The paper's figure for the same (2 + 2 + K Psi split by stage), plus the rotary tables the segments hold. */
  predictedStateBytes: number;
  /** Bytes a worker sent in the step (mean over workers). */
  commBytesPerStep: number;
  /** The paper's 2 Psi or 3 Psi in bf16 bytes x (N - 1) / N. */
  predictedCommBytes: number;
  stepMs: number;
  /** The last step's loss (the same for every scheme: they train the same weights). */
  loss: number;
}

export interface PipelineRow {
  schedule: PipelineScheduleName;
  stages: number;
  microBatches: number;
  /** Idle share of stage-time over the step, measured from every op's start and end (median of the measured steps). */
  bubble: number;
  /** (p - 1) / (m + p - 1). */
  theory: number;
  /** Per stage: most micro-batches in flight, and most bytes of activations kept for the backward. */
  peakInFlight: number[];
  peakActivationBytes: number[];
  stepMs: number;
}

export interface TensorParallelRow {
  workers: number;
  /** Bytes a rank sent per layer per step (forward + backward all-reduces of b x s x h), measured and Megatron's. */
  bytesPerLayer: number;
  predictedBytesPerLayer: number;
  /** Weight bytes a rank holds after the step, and the count's prediction (replicated + sharded / N + rotary tables). */
  weightBytesPerWorker: number;
  predictedWeightBytes: number;
  stepMs: number;
  loss: number;
}

export interface OffloadRow {
  mode: OffloadMode | 'optimizer+params, spilled';
  /** The accelerator's and the host's peak bytes during a step, compiled sessions aside. */
  devicePeakBytes: number;
  hostPeakBytes: number;
  /** Bytes copied each way per step. */
  h2dBytes: number;
  d2hBytes: number;
  /** Bytes written to and read from the spill file per step (0 without). */
  spillBytes: number;
  stepMs: number;
  /** The weights after the steps equal those of training on the device alone, bit for bit. */
  sameWeights: boolean;
}

export interface ParallelBench {
  params: number;
  batch: number;
  context: number;
  zero: ZeroRow[];
  /** Stages 1-3 reach stage 0's weights bit for bit after the same steps, per N. */
  sameWeights: Record<string, boolean>;
  /** GPipe and 1F1B on 2 stages as the micro-batches grow. */
  pipeline: PipelineRow[];
  /** Megatron tensor parallelism at N = 1 and 2. */
  tensor: TensorParallelRow[];
  /** CPU offloading on one device: what the accelerator holds against what a step costs. */
  offload: OffloadRow[];
  /** Parameter tensors of the model: ZeRO shards each, so a worker's share may differ from Psi / N by one element each. */
  parameterTensors: number;
  /** The rotary tables every worker's segments hold as constants (tag 'weights'): cos and sin, [maxPositions, headDim / 2] fp32. */
  rotaryBytes: number;
  seconds: number;
}

export async function benchParallel(_kind = 'cpu', opts: { quick?: boolean; log?: (s: string) => void } = {}): Promise<ParallelBench> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const batch = 8;
  const context = 64;
  const steps = opts.quick ? 2 : 3;
  const corpus = mobyDick();
  const batches: Batch[] = [];
  const sampler = new BatchSampler(corpus.train, { batch, context, seed: 11 });
  for (let i = 0; i < steps; i++) batches.push(sampler.next());
  const { cfg, values } = loadJobParams();
  const rotaryBytes = 2 * cfg.maxPositions * (cfg.headDim / 2) * 4;
  const zero: ZeroRow[] = [];
  const sameWeights: Record<string, boolean> = {};
  let params = 0;
  for (const workers of [2, 4]) {
    let reference: Float32Array[] | null = null;
    let same = true;
    for (const stage of [0, 1, 2, 3] as const) {
      const t = await ZeroTrainer.start({ workers, stage });
      try {
        params = t.params;
        const results = [];
        for (const b of batches) results.push(await t.step(b));
        // The first step compiles every segment's graphs; the fastest later one is the step's cost.
        const r = results.slice(1).reduce((a, b) => (b.stepMs < a.stepMs ? b : a));
        const states = r.workers.map((w) => w.states.weights + w.states.grads + w.states.optimizer);
        const pred = t.predicted();
        zero.push({
          scheme: stage === 0 ? 'DP' : `ZeRO-${stage}`, stage, workers,
          peakBytesPerWorker: Math.max(...r.workers.map((w) => w.peak)),
          stateBytesPerWorker: Math.max(...states),
          predictedStateBytes: pred.total + rotaryBytes,
          commBytesPerStep: 2 * r.commElements,
          predictedCommBytes: 2 * r.predictedComm.ring,
          stepMs: r.stepMs,
          loss: results[results.length - 1].loss,
        });
        const w = await t.weights();
        if (!reference) reference = w;
        else same &&= w.every((x, i) => x.every((v, j) => Object.is(v, reference![i][j])));
        const row = zero[zero.length - 1];
        log(`  ${ZERO_STAGE_NAMES[stage]}, N = ${workers}: ${(row.stateBytesPerWorker / 2 ** 20).toFixed(2)} MiB of model states a worker (formula ${(row.predictedStateBytes / 2 ** 20).toFixed(2)}), ${(row.commBytesPerStep / 2 ** 20).toFixed(2)} MiB sent a step, ${row.stepMs.toFixed(0)} ms`);
      } finally {
        await t.close();
      }
    }
    sameWeights[`N=${workers}`] = same;
  }
  const pipeline = await benchPipeline(batches, log);
  const tensor = await benchTensor(batches, rotaryBytes, log);
  const offload = await benchOffload(batches, log);
  return { params, batch, context, zero, sameWeights, pipeline, tensor, offload, parameterTensors: values.length, rotaryBytes, seconds: (performance.now() - t0) / 1000 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const withoutCompiled = (peak: number, byTag: { compiled: number }) => peak - byTag.compiled;

async function benchOffload(batches: Batch[], log: (s: string) => void): Promise<OffloadRow[]> {
  const rows: OffloadRow[] = [];
  let reference: Float32Array[] | null = null;
  const dir = mkdtempSync(join(tmpdir(), 'servelab-spill-'));
  try {
    for (const mode of ['none', 'optimizer', 'optimizer+params', 'optimizer+params, spilled'] as const) {
      const spilled = mode === 'optimizer+params, spilled';
      const t = await OffloadTrainer.create({ offload: spilled ? 'optimizer+params' : mode, spill: spilled ? dir : undefined });
      try {
        const steps = [];
        for (const b of batches) steps.push(await t.step(b));
        const measured = steps.slice(1);
        const last = measured[measured.length - 1];
        const w = await t.weights();
        reference ??= w;
        rows.push({
          mode,
          devicePeakBytes: Math.max(...measured.map((s) => withoutCompiled(s.device.peak, s.device.peakByTag))),
          hostPeakBytes: Math.max(...measured.map((s) => withoutCompiled(s.host.peak, s.host.peakByTag))),
          h2dBytes: last.h2dBytes,
          d2hBytes: last.d2hBytes,
          spillBytes: last.spill ? last.spill.writtenBytes + last.spill.readBytes : 0,
          stepMs: median(measured.map((s) => s.stepMs)),
          sameWeights: w.every((x, i) => x.every((v, j) => Object.is(v, reference![i][j]))),
        });
        const r = rows[rows.length - 1];
        log(`  offload ${mode}: device peak ${(r.devicePeakBytes / 2 ** 20).toFixed(1)} MiB, host ${(r.hostPeakBytes / 2 ** 20).toFixed(1)} MiB, ${r.stepMs.toFixed(0)} ms a step`);
      } finally {
        await t.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

async function benchTensor(batches: Batch[], rotaryBytes: number, log: (s: string) => void): Promise<TensorParallelRow[]> {
  const rows: TensorParallelRow[] = [];
  for (const workers of [1, 2]) {
    const t = await TensorParallelTrainer.start({ workers });
    try {
      const steps = [];
      for (const b of batches) steps.push(await t.step(b));
      const r = steps.slice(1).reduce((a, b) => (b.stepMs < a.stepMs ? b : a));
      const c = r.comm[0];
      const w = tensorParallelWeightBytes(t.cfg, workers, t.precision);
      rows.push({
        workers,
        bytesPerLayer: c.forward[0] + c.backward[0],
        predictedBytesPerLayer: r.predicted.ringBytesPerRank,
        weightBytesPerWorker: Math.max(...r.memory.map((m) => m.byTag.weights)),
        predictedWeightBytes: w.perRank + rotaryBytes,
        stepMs: r.stepMs,
        loss: steps[steps.length - 1].loss,
      });
      const row = rows[rows.length - 1];
      log(`  tensor parallel N = ${workers}: ${(row.bytesPerLayer / 2 ** 20).toFixed(2)} MiB sent per layer (Megatron ${(row.predictedBytesPerLayer / 2 ** 20).toFixed(2)}), ${(row.weightBytesPerWorker / 2 ** 20).toFixed(2)} MiB of weights a worker, ${row.stepMs.toFixed(0)} ms`);
    } finally {
      await t.close();
    }
  }
  return rows;
}

async function benchPipeline(batches: Batch[], log: (s: string) => void): Promise<PipelineRow[]> {
  const rows: PipelineRow[] = [];
  for (const schedule of ['gpipe', '1f1b'] as const) {
    for (const m of [2, 4, 8]) {
      const t = await PipelineTrainer.start({ stages: 2, schedule, microBatches: m });
      try {
        const steps = [];
        for (const b of batches) steps.push(await t.step(b));
        const measured = steps.slice(1);
        const last = measured[measured.length - 1];
        rows.push({
          schedule, stages: 2, microBatches: m,
          bubble: median(measured.map((r) => r.analysis.bubble)),
          theory: last.analysis.theory,
          peakInFlight: last.perStage.map((p) => p.peakInFlight),
          peakActivationBytes: last.perStage.map((p) => p.peakActivationBytes),
          stepMs: median(measured.map((r) => r.stepMs)),
        });
        const r = rows[rows.length - 1];
        log(`  ${schedule} p = 2, m = ${m}: bubble ${r.bubble.toFixed(3)} (theory ${r.theory.toFixed(3)}), in flight ${r.peakInFlight.join('/')}, ${r.stepMs.toFixed(0)} ms`);
      } finally {
        await t.close();
      }
    }
  }
  return rows;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(2).padStart(8);

export function printParallel(p: ParallelBench): string[] {
  const out = [`\nParallel training (built-in model, ${p.params} parameters, bf16 with fp32 AdamW states; global batch ${p.batch} x ${p.context}; worker threads on this machine's cores):`];
  out.push('    scheme   N   states/worker  formula   peak/worker   sent/step  formula (MiB)   ms/step    loss');
  for (const r of p.zero) {
    out.push(`    ${r.scheme.padEnd(7)} ${String(r.workers).padStart(2)} ${mib(r.stateBytesPerWorker)}     ${mib(r.predictedStateBytes)}  ${mib(r.peakBytesPerWorker)}    ${mib(r.commBytesPerStep)}  ${mib(r.predictedCommBytes)}    ${r.stepMs.toFixed(0).padStart(7)}  ${r.loss.toFixed(3)}`);
  }
  out.push(`  same weights as DP, bit for bit: ${Object.entries(p.sameWeights).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push('  pipeline (2 stages):  schedule  m   bubble  theory   in flight   kept activations (KiB)   ms/step');
  for (const r of p.pipeline) {
    out.push(`                        ${r.schedule.padEnd(8)} ${String(r.microBatches).padStart(2)}   ${r.bubble.toFixed(3)}   ${r.theory.toFixed(3)}   ${r.peakInFlight.join(' / ').padEnd(9)}   ${r.peakActivationBytes.map((b) => (b / 1024).toFixed(0)).join(' / ').padEnd(22)}  ${r.stepMs.toFixed(0).padStart(7)}`);
  }
  out.push('  tensor parallel:  N   sent per layer  Megatron (MiB)   weights/worker  predicted (MiB)   ms/step    loss');
  for (const r of p.tensor) {
    out.push(`                   ${String(r.workers).padStart(2)}   ${mib(r.bytesPerLayer)}      ${mib(r.predictedBytesPerLayer)}         ${mib(r.weightBytesPerWorker)}     ${mib(r.predictedWeightBytes)}       ${r.stepMs.toFixed(0).padStart(6)}  ${r.loss.toFixed(3)}`);
  }
  out.push('  offloading:  mode                         device peak  host peak (MiB)   h2d / d2h per step (MiB)   spill (MiB)   ms/step   same weights');
  for (const r of p.offload) {
    out.push(`               ${r.mode.padEnd(27)} ${mib(r.devicePeakBytes)}  ${mib(r.hostPeakBytes)}         ${mib(r.h2dBytes)} / ${mib(r.d2hBytes).trim()}          ${mib(r.spillBytes)}   ${r.stepMs.toFixed(0).padStart(7)}   ${r.sameWeights}`);
  }
  return out;
}

export function parallelTargets(p: ParallelBench): Target[] {
  const t: Target[] = [];
  // Each parameter tensor is sharded on its own: a worker's share is Psi / N give or take one element (16 bytes of
  // model states) per tensor.
  const off = p.zero.filter((r) => Math.abs(r.stateBytesPerWorker - r.predictedStateBytes) > 16 * p.parameterTensors);
  t.push({
    name: 'ZeRO 0-3 model states per worker equal the paper\'s formulas (N = 2, 4)',
    met: off.length === 0,
    measured: off.length ? off.map((r) => `${r.scheme} N=${r.workers}: ${r.stateBytesPerWorker} B vs ${r.predictedStateBytes} B`).join('; ') : `${p.zero.length} rows equal (within one element per parameter)`,
    goal: '(2 + 2 + K) Psi split by stage, K = 12',
  });
  const comm = p.zero.map((r) => r.commBytesPerStep / r.predictedCommBytes);
  t.push({
    // At stage 3 the head runs once (in the backward), so its final norm is gathered once, and the tied embedding a
    // third time, for the head: 0.7% over the paper's 3 Psi for this small model.
    name: 'communication per step: 2 Psi (DP, ZeRO-1, -2) and 3 Psi (ZeRO-3) x (N - 1) / N per worker',
    met: comm.every((x, i) => (p.zero[i].stage < 3 ? x === 1 : Math.abs(x - 1) < 0.02)),
    measured: p.zero.map((r, i) => `${r.scheme} N=${r.workers} ${comm[i].toFixed(3)}x`).join(', '),
    goal: '1.000x (ZeRO-3 within 2%: the tied embedding)',
  });
  t.push({ name: 'ZeRO 1-3 give DP\'s weights bit for bit', met: Object.values(p.sameWeights).every(Boolean), measured: JSON.stringify(p.sameWeights), goal: 'true' });
  const z3 = p.zero.find((r) => r.stage === 3 && r.workers === 4);
  const dp = p.zero.find((r) => r.stage === 0 && r.workers === 4);
  if (z3 && dp) {
    t.push({ name: 'ZeRO-3 at N = 4 holds a quarter of DP\'s model states per worker', met: z3.stateBytesPerWorker <= dp.stateBytesPerWorker / 4 + p.rotaryBytes, measured: `${(dp.stateBytesPerWorker / z3.stateBytesPerWorker).toFixed(2)}x less`, goal: '>= 4x less (rotary tables aside)' });
  }
  if (p.tensor.length) {
    t.push({
      name: 'tensor parallel: all-reduce bytes per layer equal Megatron\'s two forward and two backward all-reduces of b x s x h',
      met: p.tensor.every((r) => r.bytesPerLayer === r.predictedBytesPerLayer),
      measured: p.tensor.map((r) => `N=${r.workers} ${r.bytesPerLayer} B`).join(', '),
      goal: p.tensor.map((r) => `${r.predictedBytesPerLayer} B`).join(', '),
    });
    t.push({
      name: 'tensor parallel: each worker holds the replicated weights and 1/N of the layers\'',
      met: p.tensor.every((r) => r.weightBytesPerWorker === r.predictedWeightBytes),
      measured: p.tensor.map((r) => `N=${r.workers} ${r.weightBytesPerWorker} B`).join(', '),
      goal: p.tensor.map((r) => `${r.predictedWeightBytes} B`).join(', '),
    });
  }
  if (p.offload.length) {
    const none = p.offload.find((r) => r.mode === 'none')!;
    const full = p.offload.find((r) => r.mode === 'optimizer+params')!;
    t.push({ name: 'offloading gives the weights of training on the device, bit for bit (every mode, spilled too)', met: p.offload.every((r) => r.sameWeights), measured: p.offload.map((r) => `${r.mode} ${r.sameWeights}`).join(', '), goal: 'true' });
    t.push({
      name: 'offloading the optimizer and the parameters cuts the device\'s peak at least 10x',
      met: none.devicePeakBytes >= 10 * full.devicePeakBytes,
      measured: `${(none.devicePeakBytes / full.devicePeakBytes).toFixed(1)}x less (${(none.devicePeakBytes / 2 ** 20).toFixed(1)} -> ${(full.devicePeakBytes / 2 ** 20).toFixed(1)} MiB), step ${(full.stepMs / none.stepMs).toFixed(2)}x the time`,
      goal: '>= 10x',
    });
  }
  const pipe = p.pipeline;
  if (pipe.length) {
    const within = pipe.filter((r) => Math.abs(r.bubble - r.theory) <= 0.1);
    t.push({
      name: 'pipeline bubble measured within 0.1 of (p - 1)/(m + p - 1) (GPipe and 1F1B, p = 2, m = 2, 4, 8)',
      met: within.length === pipe.length,
      measured: pipe.map((r) => `${r.schedule} m=${r.microBatches} ${r.bubble.toFixed(2)} (${r.theory.toFixed(2)})`).join(', '),
      goal: '|measured - theory| <= 0.1',
      gap: within.length === pipe.length ? undefined : 'the stages are not equal work (the first embeds, the last runs the head) and this shared machine\'s two cores run both workers',
    });
    const g8 = pipe.find((r) => r.schedule === 'gpipe' && r.microBatches === 8);
    const f8 = pipe.find((r) => r.schedule === '1f1b' && r.microBatches === 8);
    if (g8 && f8) {
      t.push({
        name: 'activations in flight on stage 0: GPipe holds m, 1F1B at most p (m = 8, p = 2)',
        met: g8.peakInFlight[0] === 8 && f8.peakInFlight[0] <= 2,
        measured: `GPipe ${g8.peakInFlight[0]}, 1F1B ${f8.peakInFlight[0]}; kept bytes ${(g8.peakActivationBytes[0] / f8.peakActivationBytes[0]).toFixed(1)}x less with 1F1B`,
        goal: 'm and <= p',
      });
    }
  }
  return t;
}

if (isMain(import.meta.url)) await runAlone('parallel', benchParallel, printParallel, parallelTargets);
