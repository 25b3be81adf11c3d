/**
 * Training a Llama-style language model with the engine's own gradients and AdamW: seeded batches of a byte corpus,
 * linear warmup then cosine decay of the learning rate (as GPT-3 and Llama were trained), a loss per step, and
 * checkpoints that resume to exactly the run that was not interrupted (parameters, optimizer moments, step count and
 * the sampler's random stream are all saved).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import { throwIfAborted } from '../abort.ts';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { AdamW } from './adamw.ts';
import { trainStep } from './step.ts';
import { BatchSampler, evalBatches, type Corpus } from './corpus.ts';
import { Rng, type RngState } from './rng.ts';
import { initParams, lossGraph, paramSpecs, trainingGraph, type LossGraphOptions } from './lm_params.ts';

export interface TrainRecipe {
  model: LlamaConfig;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence (at most model.maxPositions). */
  context: number;
  steps: number;
  /** Peak learning rate, reached at step warmup - 1, then cosine decay reaching minLr at step `steps` (one past the last). */
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  seed: number;
}

/** One step of the log. */
export interface StepLog {
  step: number;
  loss: number;
  lr: number;
  /** Tokens per second of this step (forward, backward and update). */
  tokensPerSec: number;
}

export interface TrainState {
  recipe: TrainRecipe;
  corpusSha256: string;
  /** Steps done. */
  step: number;
  losses: number[];
  sampler: RngState;
  /** Wall time spent training so far, seconds. */
  wallSeconds: number;
}

export interface TrainOptions {
  /** Where checkpoints go (`dir/checkpoint.safetensors` + `dir/checkpoint.json`); none when absent. */
  checkpointDir?: string;
  /** Steps between checkpoints; default 100. */
  checkpointEvery?: number;
  /** Continue from dir's checkpoint when there is one. */
  resume?: boolean;
  /** Stop after this many steps in all (the recipe's schedule is kept): for tests and quick runs. */
  stopAfter?: number;
  onStep?: (log: StepLog, state: TrainState) => void;
}

export interface TrainResult {
  state: TrainState;
  /** The trained parameters (fp32, graph order of paramSpecs); the caller disposes them. */
  params: Tensor[];
  /** True when the run stopped before recipe.steps (stopAfter or an abort). */
  partial: boolean;
}

/** Learning rate at step t (0-based): linear warmup, then cosine from lr to minLr. */
export function learningRate(r: TrainRecipe, t: number): number {
  if (t < r.warmup) return (r.lr * (t + 1)) / r.warmup;
  const p = Math.min(1, (t - r.warmup) / Math.max(1, r.steps - r.warmup));
  return r.minLr + 0.5 * (r.lr - r.minLr) * (1 + Math.cos(Math.PI * p));
}

function checkRecipe(r: TrainRecipe): void {
  const pos = (k: keyof TrainRecipe) => {
    const v = r[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ServelabError(`train: recipe.${k} must be a positive integer, got ${JSON.stringify(v)}`);
  };
  (['batch', 'context', 'steps'] as const).forEach(pos);
  if (r.context > r.model.maxPositions) throw new ServelabError(`train: recipe.context ${r.context} is past the model's ${r.model.maxPositions} positions`);
  if (!(r.lr > 0 && r.minLr >= 0 && r.minLr <= r.lr)) throw new ServelabError(`train: need lr > 0 and 0 <= minLr <= lr, got ${r.lr}, ${r.minLr}`);
}

const CKPT = 'checkpoint.safetensors';
const CKPT_STATE = 'checkpoint.json';

/** Trains `recipe` on `corpus.train`; returns the parameters and the log. An aborted run keeps what it trained. */
export async function train(dev: Device, recipe: TrainRecipe, corpus: Corpus, opts: TrainOptions = {}): Promise<TrainResult> {
  checkRecipe(recipe);
  const cfg = recipe.model;
  const specs = paramSpecs(cfg);
  const params = initParams(dev, cfg, new Rng(recipe.seed));
  const opt = new AdamW(dev, params, { lr: recipe.lr, weightDecay: recipe.weightDecay });
  const sampler = new BatchSampler(corpus.train, { batch: recipe.batch, context: recipe.context, seed: recipe.seed + 1 });
  let state: TrainState = { recipe, corpusSha256: corpus.sha256, step: 0, losses: [], sampler: sampler.state(), wallSeconds: 0 };
  const dir = opts.checkpointDir;
  if (dir && opts.resume && existsSync(join(dir, CKPT_STATE))) state = loadCheckpoint(dir, state, params, opt, sampler);
  const { graph, tables } = trainingGraph(cfg, dev);
  const B = recipe.batch;
  const S = recipe.context;
  const positions = dev.tensor(Int32Array.from({ length: B * S }, (_, i) => i % S), [B, S], 'int32', { label: 'positions' });
  const stopAt = Math.min(recipe.steps, opts.stopAfter ?? recipe.steps);
  let partial = state.step < recipe.steps;
  try {
    while (state.step < stopAt) {
      throwIfAborted();
      const t0 = performance.now();
      const batch = sampler.next();
      const lr = learningRate(recipe, state.step);
      const tokens = dev.tensor(batch.tokens, [B, S], 'int32', { label: 'tokens' });
      const labels = dev.tensor(batch.labels, [B, S], 'int32', { label: 'labels' });
      let loss: number;
      try {
        loss = await trainStep(dev, graph, [tokens, positions, labels, ...params], opt, lr, `train, step ${state.step}`);
      } finally {
        tokens.dispose();
        labels.dispose();
      }
      const seconds = (performance.now() - t0) / 1000;
      state = { ...state, step: state.step + 1, losses: [...state.losses, loss], sampler: sampler.state(), wallSeconds: state.wallSeconds + seconds };
      opts.onStep?.({ step: state.step, loss, lr, tokensPerSec: (B * S) / seconds }, state);
      if (dir && (state.step % (opts.checkpointEvery ?? 100) === 0 || state.step === stopAt)) saveCheckpoint(dir, state, specs.map((s) => s.name), params, opt);
    }
    partial = state.step < recipe.steps;
    return { state, params, partial };
  } catch (e) {
    if ((e as Error).name === 'AbortError') return { state, params, partial: true };
    for (const p of params) p.dispose();
    throw e;
  } finally {
    positions.dispose();
    for (const t of tables) t.dispose();
    opt.dispose();
  }
}

/**
 * Mean next-token cross entropy (nats per byte) of `params` over `data` in consecutive windows of `context`. `params`
 * feed the loss graph's inputs after tokens, positions and labels: with `graphOpts` (a supplier, adapters), those
 * inputs are the supplier's, then each adapter's A and B.
 */
export async function heldOutLoss(
  dev: Device,
  cfg: LlamaConfig,
  params: readonly Tensor[],
  data: Uint8Array,
  context: number,
  batch = 16,
  graphOpts: Omit<LossGraphOptions, 'reduction'> = {},
): Promise<number> {
  const { graph, tables } = lossGraph(cfg, dev, { ...graphOpts, reduction: 'sum' });
  let total = 0;
  let count = 0;
  try {
    for (const b of evalBatches(data, context, batch)) {
      const rows = b.tokens.length / context;
      const feeds = [
        dev.tensor(b.tokens, [rows, context], 'int32'),
        dev.tensor(Int32Array.from({ length: rows * context }, (_, i) => i % context), [rows, context], 'int32'),
        dev.tensor(b.labels, [rows, context], 'int32'),
      ];
      try {
        const [l] = await dev.run(graph, [...feeds, ...params]);
        total += l.toFloat32()[0];
        count += rows * context;
        l.dispose();
      } finally {
        for (const f of feeds) f.dispose();
      }
    }
  } finally {
    for (const t of tables) t.dispose();
  }
  return total / count;
}

function saveCheckpoint(dir: string, state: TrainState, names: string[], params: readonly Tensor[], opt: AdamW): void {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  params.forEach((p, i) => {
    const { m, v } = opt.state(i);
    tensors[`param.${names[i]}`] = { dtype: 'fp32', shape: p.shape, data: p.toFloat32() };
    tensors[`adam_m.${names[i]}`] = { dtype: 'fp32', shape: m.shape, data: m.toFloat32() };
    tensors[`adam_v.${names[i]}`] = { dtype: 'fp32', shape: v.shape, data: v.toFloat32() };
  });
  writeSafetensors(join(dir, CKPT), tensors, { step: String(state.step), optimizerStep: String(opt.t) });
  writeFileSync(join(dir, CKPT_STATE), JSON.stringify(state) + '\n');
}

function loadCheckpoint(dir: string, fresh: TrainState, params: readonly Tensor[], opt: AdamW, sampler: BatchSampler): TrainState {
  const file = join(dir, CKPT_STATE);
  const state = JSON.parse(readFileSync(file, 'utf8')) as TrainState;
  if (JSON.stringify(state.recipe) !== JSON.stringify(fresh.recipe)) throw new ServelabError(`train: ${file} was written by another recipe; remove it or train with that recipe`);
  if (state.corpusSha256 !== fresh.corpusSha256) throw new ServelabError(`train: ${file} was trained on another corpus (sha256 ${state.corpusSha256})`);
  const ck = openSafetensors(join(dir, CKPT));
  try {
    const names = paramSpecs(fresh.recipe.model).map((s) => s.name);
    params.forEach((p, i) => {
      const { m, v } = opt.state(i);
      p.write(ck.read(`param.${names[i]}`).data as Float32Array);
      m.write(ck.read(`adam_m.${names[i]}`).data as Float32Array);
      v.write(ck.read(`adam_v.${names[i]}`).data as Float32Array);
    });
    opt.t = Number(ck.metadata.optimizerStep);
  } finally {
    ck.close();
  }
  sampler.restore(state.sampler);
  return state;
}
