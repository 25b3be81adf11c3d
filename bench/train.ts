/**
 * Training quantization on the built-in model (Hu et al. 2021, LoRA; Dettmers et al. 2023, QLoRA): full fine-tuning,
 * LoRA at ranks 4, 8 and 64 and QLoRA, each a few real steps of the same fine-tuning task (Moby-Dick -> the State of
 * the Union addresses), one row each with its step time, the tracker's peak bytes by tag beside the literature's
 * formula, and its trainable parameters; then what merging an adapter costs at inference (a decode step of the base,
 * the merged and the unmerged model, in turns) and what paging the optimizer's states costs a step.
 */
import { createDevice, type Device } from '../engine/index.ts';
import type { BytesByTag } from '../engine/memory/tracker.ts';
import { LlamaModel } from '../engine/model/llama.ts';
import { finetune, loadBase, type BaseModel, type FinetuneMethod, type FinetuneResult } from '../engine/train/finetune.ts';
import { sotu } from '../engine/train/sotu.ts';
import { loraMemory, qloraMemory, fullFineTuningFp32, type TrainingMemory } from '../engine/train/memory_formula.ts';
import { hfShapes } from '../engine/model/config.ts';
import { nf4WeightBytes } from '../engine/quant/nf4_nodes.ts';
import { quantizedNames } from '../engine/train/qlora.ts';
import { median } from './stats.ts';
import type { Target } from './run.ts';
import { isMain, runAlone } from './alone.ts';

export interface TrainRow {
  method: FinetuneMethod;
  /** LoRA rank; null for full fine-tuning. */
  rank: number | null;
  /** Median step (forward, backward, AdamW) past the first, ms. */
  stepMs: number;
  /** The tracker's peak over the run, all tags at once. */
  peakBytes: number;
  trainableParams: number;
  /** Peak bytes of each tag over the run. */
  bytesByTag: Partial<BytesByTag>;
  /** The literature's bytes for the same model and trainable parameters (activations excluded). */
  formula: Pick<TrainingMemory, 'weights' | 'grads' | 'optimizer' | 'total'>;
  loss: { first: number; last: number };
}

export interface TrainBench {
  model: string;
  params: number;
  steps: number;
  batch: number;
  context: number;
  rows: TrainRow[];
  /** A decode step (batch 1) of the base, the LoRA-merged and the unmerged model, medians of turns, ms. */
  merge: { baseMs: number; mergedMs: number; unmergedMs: number; maxAbsLogitDiff: number; turns: number };
  /** The same LoRA steps with every optimizer state paged to host memory against all on the device. */
  paged: { stepMs: number; unpagedStepMs: number; pagedInBytes: number; pagedOutBytes: number; pagingMs: number; sameWeights: boolean };
  seconds: number;
}

const tagsOf = (t: BytesByTag): Partial<BytesByTag> => Object.fromEntries(Object.entries(t).filter(([, v]) => v > 0));

async function row(dev: Device, base: BaseModel, method: FinetuneMethod, rank: number | null, o: { steps: number; batch: number; context: number }): Promise<{ row: TrainRow; run: FinetuneResult }> {
  const run = await finetune(dev, base, sotu(), {
    method, steps: o.steps, batch: o.batch, context: o.context, lr: method === 'full' ? 3e-4 : 2e-3, seed: 7,
    lora: rank === null ? undefined : { r: rank, alpha: 2 * rank },
  });
  const P = run.baseParams;
  const T = run.trainableParams;
  const formula = method === 'full' ? fullFineTuningFp32(P) : method === 'lora' ? loraMemory(P, T, { base: 'fp32' }) : qloraWeights(base, T);
  const peak = run.peakByTag;
  return {
    run,
    row: {
      method, rank, stepMs: run.medianStepMs, trainableParams: T,
      peakBytes: Object.values(peak).reduce((a, b) => a + b, 0),
      bytesByTag: tagsOf(peak),
      formula: { weights: formula.weights, grads: formula.grads, optimizer: formula.optimizer, total: formula.total },
      loss: { first: run.losses[0], last: run.losses[run.losses.length - 1] },
    },
  };
}

/**
 * QLoRA's formula for this model: the projections in NF4 with double quantization (each matrix's codes, 8-bit absmax,
 * second-level scales, mean, map and levels: nf4WeightBytes), the embedding and norms in fp32, the adapters in fp32
 * with their gradients and Adam moments; plus the training graph's rotary tables, which are tagged as weights.
 */
function qloraWeights(base: BaseModel, T: number): TrainingMemory {
  const q = quantizedNames(base.cfg);
  let weights = 4 * T + 2 * 4 * base.cfg.maxPositions * (base.cfg.headDim / 2);
  for (const [name, [out, inF]] of hfShapes(base.cfg)) weights += q.has(name) ? nf4WeightBytes(inF, out, { doubleQuant: true }) : 4 * base.weights.get(name)!.length;
  const f = qloraMemory(1, T);
  return { ...f, weights, total: weights + f.grads + f.optimizer };
}

/** A decode step's time of each model in turns (one step of each, then again), after a warm-up, medians. */
async function decodeInTurns(models: LlamaModel[], turns: number): Promise<number[]> {
  const caches = await Promise.all(models.map((m) => m.createCache(1)));
  const times: number[][] = models.map(() => []);
  try {
    for (let i = 0; i < models.length; i++) (await models[i].prefill([[72, 101, 108, 108, 111]], caches[i])).logits.dispose();
    for (let t = 0; t < turns; t++) {
      for (let i = 0; i < models.length; i++) {
        if (!caches[i].canAppend(1)) continue;
        const t0 = performance.now();
        (await models[i].decode([32], caches[i])).logits.dispose();
        if (t >= 3) times[i].push(performance.now() - t0);
      }
    }
  } finally {
    for (const c of caches) c.dispose();
  }
  return times.map(median);
}

export async function benchTrain(kind = 'cpu', opts: { quick?: boolean; log?: (s: string) => void } = {}): Promise<TrainBench> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const dev = await createDevice(kind);
  const base = loadBase();
  const o = { steps: opts.quick ? 4 : 8, batch: 8, context: 128 };
  const params = [...base.weights.values()].reduce((n, w) => n + w.length, 0);
  try {
    const rows: TrainRow[] = [];
    const runs: FinetuneResult[] = [];
    for (const [method, rank] of [['full', null], ['lora', 4], ['lora', 8], ['lora', 64], ['qlora', 8]] as const) {
      const r = await row(dev, base, method, rank, o);
      rows.push(r.row);
      log(`  ${method}${rank ? ` r=${rank}` : ''}: ${r.row.stepMs.toFixed(0)} ms/step, peak ${(r.row.peakBytes / 2 ** 20).toFixed(1)} MiB, ${r.row.trainableParams} trainable`);
      if (method === 'lora' && rank === 8) runs.push(r.run);
      else r.run.dispose();
    }

    // Merging: the r = 8 adapters trained above, merged into the weights and applied unmerged, against the base.
    const lora = runs[0];
    const baseW = await lora.baseWeights();
    const mergedW = await lora.weights();
    const src = (m: ReadonlyMap<string, Float32Array>) => (name: string) => m.get(name)!;
    const models = [
      await LlamaModel.fromWeights(dev, base.cfg, src(baseW)),
      await LlamaModel.fromWeights(dev, base.cfg, src(mergedW)),
      await LlamaModel.fromWeights(dev, base.cfg, src(baseW), { adapters: lora.adapters!.forModel() }),
    ];
    let merge: TrainBench['merge'];
    try {
      const prompt = [[84, 104, 101, 32, 67, 111, 110, 103, 114, 101, 115, 115]];
      const logits = async (m: LlamaModel) => {
        const cache = await m.createCache(1);
        try {
          const { logits } = await m.prefill(prompt, cache, { all: true });
          const v = logits.toFloat32();
          logits.dispose();
          return v;
        } finally {
          cache.dispose();
        }
      };
      const x = await logits(models[1]);
      const y = await logits(models[2]);
      let maxAbs = 0;
      for (let i = 0; i < x.length; i++) maxAbs = Math.max(maxAbs, Math.abs(x[i] - y[i]));
      const turns = opts.quick ? 40 : 150;
      const [baseMs, mergedMs, unmergedMs] = await decodeInTurns(models, turns);
      merge = { baseMs, mergedMs, unmergedMs, maxAbsLogitDiff: maxAbs, turns };
      log(`  decode step: base ${baseMs.toFixed(3)} ms, merged ${mergedMs.toFixed(3)} ms, unmerged ${unmergedMs.toFixed(3)} ms`);
    } finally {
      for (const m of models) m.dispose();
      lora.dispose();
    }

    // Paging: LoRA r = 8 on every projection, every optimizer state on the device (no budget), then under a budget
    // whose whole room above what is live is reserved for the step, so that every state lives on the host.
    const pagedRuns: FinetuneResult[] = [];
    const GiB = 2 ** 30;
    for (const paged of [false, true]) {
      if (paged) dev.memory.setBudget(dev.memory.live + GiB);
      try {
        pagedRuns.push(
          await finetune(dev, base, sotu(), {
            method: 'lora', steps: o.steps, batch: o.batch, context: o.context, lr: 2e-3, seed: 7, lora: { r: 8, alpha: 16, targets: 'all' },
            adamw: paged ? { paged: true, reserveBytes: GiB } : {},
          }),
        );
      } finally {
        dev.memory.setBudget(null);
      }
    }
    let paged: TrainBench['paged'];
    try {
      const [u, p] = pagedRuns;
      const [wu, wp] = [u.adapters!.values(), p.adapters!.values()];
      const sameWeights = wu.every((v, i) => v.A.every((x, j) => Object.is(x, wp[i].A[j])) && v.B.every((x, j) => Object.is(x, wp[i].B[j])));
      const stats = p.paging ?? null;
      paged = {
        stepMs: p.medianStepMs, unpagedStepMs: u.medianStepMs, sameWeights,
        pagedInBytes: stats?.total.pagedInBytes ?? NaN, pagedOutBytes: stats?.total.pagedOutBytes ?? NaN, pagingMs: stats?.total.pagingMs ?? NaN,
      };
      log(`  paged optimizer: ${paged.stepMs.toFixed(0)} ms/step vs ${paged.unpagedStepMs.toFixed(0)} ms; same weights: ${sameWeights}`);
    } finally {
      for (const r of pagedRuns) r.dispose();
    }
    return {
      model: `${base.cfg.numLayers} layers, width ${base.cfg.hiddenSize}`, params, steps: o.steps, batch: o.batch, context: o.context,
      rows, merge, paged, seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    dev.dispose();
  }
}

/** Bytes of a row's quantized weights per quantized parameter (QLoRA), against the formula's 4.127 bits. */
export function trainTargets(t: TrainBench): Target[] {
  const out: Target[] = [];
  const full = t.rows.find((r) => r.method === 'full')!;
  const lora8 = t.rows.find((r) => r.method === 'lora' && r.rank === 8)!;
  const q = t.rows.find((r) => r.method === 'qlora')!;
  for (const r of t.rows) {
    const g = r.bytesByTag.grads ?? 0;
    const o = r.bytesByTag.optimizer ?? 0;
    out.push({
      name: `${r.method}${r.rank ? ` r=${r.rank}` : ''}: gradient and optimizer bytes equal the formula (tracker peak by tag)`,
      measured: `${g} + ${o} B`, goal: `${r.formula.grads} + ${r.formula.optimizer} B`, met: g === r.formula.grads && o === r.formula.optimizer,
    });
  }
  out.push({
    name: 'LoRA r=8 trains under 2% of the parameters and holds under 2% of full fine-tuning\'s gradient and optimizer bytes',
    measured: `${((100 * lora8.trainableParams) / t.params).toFixed(2)}% of parameters; ${((100 * ((lora8.bytesByTag.grads ?? 0) + (lora8.bytesByTag.optimizer ?? 0))) / ((full.bytesByTag.grads ?? 0) + (full.bytesByTag.optimizer ?? 1))).toFixed(2)}% of the bytes`,
    goal: '< 2%',
    met: lora8.trainableParams < 0.02 * t.params && (lora8.bytesByTag.grads ?? 0) + (lora8.bytesByTag.optimizer ?? 0) < 0.02 * ((full.bytesByTag.grads ?? 0) + (full.bytesByTag.optimizer ?? 0)),
  });
  out.push({
    name: 'QLoRA weights equal their byte count (NF4 double-quantized projections, fp32 embedding, norms and adapters)',
    measured: `${q.bytesByTag.weights} B (${((8 * (q.bytesByTag.weights ?? 0)) / t.params).toFixed(3)} bits per base parameter)`, goal: `${q.formula.weights} B`, met: q.bytesByTag.weights === q.formula.weights,
  });
  out.push({
    name: 'a merged LoRA model decodes as fast as the base (within 10%)',
    measured: `${(t.merge.mergedMs / t.merge.baseMs).toFixed(2)}x (unmerged ${(t.merge.unmergedMs / t.merge.baseMs).toFixed(2)}x)`, goal: '<= 1.10x',
    met: t.merge.mergedMs <= 1.1 * t.merge.baseMs,
  });
  out.push({ name: 'merged and unmerged logits agree (fp32)', measured: t.merge.maxAbsLogitDiff.toExponential(2), goal: '<= 1e-4', met: t.merge.maxAbsLogitDiff <= 1e-4 });
  out.push({ name: 'the paged optimizer gives the same weights', measured: String(t.paged.sameWeights), goal: 'true (bitwise)', met: t.paged.sameWeights });
  return out;
}

const mib = (b: number | undefined) => ((b ?? 0) / 2 ** 20).toFixed(2).padStart(7);

export function printTrain(t: TrainBench): string[] {
  const out = [`\nTraining quantization (built-in model, ${t.model}, ${t.params} parameters; ${t.steps} steps of ${t.batch} x ${t.context} tokens each, Moby-Dick -> State of the Union):`];
  out.push('    method     rank  ms/step  trainable   weights   grads   optimizer  (MiB, tracker peak)  formula w/g/o (MiB)      loss first -> last');
  for (const r of t.rows) {
    const b = r.bytesByTag;
    out.push(
      `    ${r.method.padEnd(9)} ${String(r.rank ?? '-').padStart(5)} ${r.stepMs.toFixed(0).padStart(8)} ${String(r.trainableParams).padStart(10)} ${mib(b.weights)} ${mib(b.grads)} ${mib(b.optimizer)}                      ${mib(r.formula.weights)}/${mib(r.formula.grads).trim()}/${mib(r.formula.optimizer).trim()}   ${r.loss.first.toFixed(3)} -> ${r.loss.last.toFixed(3)}`,
    );
  }
  const m = t.merge;
  out.push(`  decode step (batch 1, medians of ${m.turns} turns): base ${m.baseMs.toFixed(3)} ms, LoRA merged ${m.mergedMs.toFixed(3)} ms (${(m.mergedMs / m.baseMs).toFixed(2)}x), unmerged ${m.unmergedMs.toFixed(3)} ms (${(m.unmergedMs / m.baseMs).toFixed(2)}x); merged vs unmerged logits max |diff| ${m.maxAbsLogitDiff.toExponential(2)}`);
  const p = t.paged;
  out.push(`  paged AdamW (LoRA r=8 on every projection, every state on the host): ${p.stepMs.toFixed(0)} ms/step vs ${p.unpagedStepMs.toFixed(0)} ms; ${mib(p.pagedInBytes).trim()} MiB in, ${mib(p.pagedOutBytes).trim()} MiB out, ${p.pagingMs.toFixed(0)} ms paging in all; same weights: ${p.sameWeights}`);
  out.push(`  (${t.seconds.toFixed(0)} s)`);
  return out;
}

// `npx tsx bench/train.ts [--quick] [--out file.json]`: this section alone.
if (isMain(import.meta.url)) await runAlone('train', benchTrain, printTrain, trainTargets);
