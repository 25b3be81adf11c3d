/**
 * Fine-tuning a trained model on a new text, three ways over one training graph (engine/train/lm_params.ts): full
 * fine-tuning (every weight trained: weights, gradients and AdamW's two moments for all of them), LoRA (Hu et al.
 * 2021: the base frozen, low-rank adapters trained) and QLoRA (Dettmers et al. 2023: the frozen base stored in NF4 and
 * dequantized inside the graph). Each run reports its loss curve, step time, the memory it peaked at by tag, and the
 * held-out loss on any texts before and after, so that what the new text taught and what the old one lost
 * (catastrophic forgetting) are measured side by side.
 */
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import { throwIfAborted } from '../abort.ts';
import type { BytesByTag } from '../memory/tracker.ts';
import { openCheckpoint } from '../io/safetensors.ts';
import { bf16ArrayToFp32 } from '../dtype/bf16.ts';
import { fp16ArrayToFp32 } from '../dtype/fp16.ts';
import { hfShapes, type LlamaConfig } from '../model/config.ts';
import { loadLlamaConfig } from '../model/hf_config.ts';
import { BUILTIN_DIR } from '../model/builtin.ts';
import { AdamW, type AdamWOptions } from './adamw.ts';
import type { PagingStats } from './paged_adamw.ts';
import { trainStep } from './step.ts';
import { BatchSampler, type Corpus } from './corpus.ts';
import { castParam, fp32Param, fromHfWeights, paramSpecs, toHfWeights, trainingGraph, type LossGraphOptions, type ParamSupplier } from './lm_params.ts';
import { heldOutLoss, learningRate, type TrainRecipe } from './trainer.ts';
import { LoraAdapters, resolveLora, type LoraConfig } from './lora.ts';
import { nf4Base, type QloraOptions } from './qlora.ts';

export type FinetuneMethod = 'full' | 'lora' | 'qlora';
export type FinetunePrecision = 'fp32' | 'bf16' | 'fp16';
export const FINETUNE_METHODS: readonly FinetuneMethod[] = ['full', 'lora', 'qlora'];

/** A base model in Hugging Face layout: its config and fp32 weights by name (linears [out, in]). */
export interface BaseModel {
  cfg: LlamaConfig;
  weights: ReadonlyMap<string, Float32Array>;
}

/** Reads a checkpoint folder (default the built-in model) as fp32 weights on the host. */
export function loadBase(dir: string = BUILTIN_DIR): BaseModel {
  const cfg = loadLlamaConfig(dir);
  const ck = openCheckpoint(dir);
  try {
    const weights = new Map<string, Float32Array>();
    for (const name of hfShapes(cfg).keys()) {
      const t = ck.read(name);
      weights.set(name, t.dtype === 'fp32' ? (t.data as Float32Array) : t.dtype === 'fp16' ? fp16ArrayToFp32(t.data as Uint16Array) : bf16ArrayToFp32(t.data as Uint16Array));
    }
    return { cfg, weights };
  } finally {
    ck.close();
  }
}

/**
 * The base parameters as the training graph takes them: tensors for its inputs after tokens, positions and labels,
 * and the supplier that declares those inputs (fp32 inputs, or NF4 codes and scales dequantized in the graph).
 */
export interface FrozenBase {
  feeds: Tensor[];
  supply: ParamSupplier;
  /** The base's weights in Hugging Face layout as the graph computes with them (after any quantization). */
  weights(): Promise<Map<string, Float32Array>>;
  dispose(): void;
}

export interface FinetuneOptions {
  method: FinetuneMethod;
  steps: number;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence, at most the model's positions. */
  context: number;
  /** Peak learning rate: linear warmup over `warmup` steps (default 0), then cosine to minLr (default lr / 10). */
  lr: number;
  minLr?: number;
  warmup?: number;
  /** AdamW's decoupled weight decay; default 0. */
  weightDecay?: number;
  /** Seeds the batches (and the adapters' A unless lora.seed is given). */
  seed: number;
  /** The adapters of 'lora' and 'qlora'; default r 8, alpha 16 on q and v. */
  lora?: LoraConfig;
  /** How 'qlora' stores the base; default NF4, blocks of 64, double-quantized. */
  qlora?: QloraOptions;
  /**
   * The dtype of the base's weights for 'full' and 'lora' (default fp32). 'bf16' or 'fp16' with 'full' is
   * mixed-precision training: 16-bit weights and gradients, fp32 master weights and moments in AdamW (2 + 2 + 12
   * bytes per parameter); the arithmetic runs in fp32 after a cast.
   */
  precision?: FinetunePrecision;
  /** Passed to AdamW as they are (betas, eps, paged, ...); lr and weightDecay come from above. */
  adamw?: AdamWOptions;
  /** Texts whose held-out loss is measured before and after, by name (e.g. the old corpus's and the new one's). */
  heldOut?: Record<string, Uint8Array>;
  /** Windows of the held-out measure; default `context`, 16 rows a batch. */
  evalContext?: number;
  evalBatch?: number;
  onStep?: (s: FinetuneStep) => void;
}

/** One step of the progress stream. */
export interface FinetuneStep {
  step: number;
  loss: number;
  lr: number;
  /** Forward, backward and update. */
  stepMs: number;
  /** Live bytes by tag right after the step. */
  memory: BytesByTag;
}

export interface FinetuneResult {
  method: FinetuneMethod;
  cfg: LlamaConfig;
  losses: number[];
  stepMs: number[];
  /** Median of stepMs past the first step (which compiles the sessions). */
  medianStepMs: number;
  /** Each tag's peak bytes over the run above what was live when it started: what this run allocated, its base's weights included. */
  peakByTag: BytesByTag;
  trainableParams: number;
  /** Parameters of the base model. */
  baseParams: number;
  /** Held-out loss (nats per byte) of each opts.heldOut text before and after. */
  heldOut: Record<string, { before: number; after: number }>;
  /** 'lora' and 'qlora': the trained adapters; null for 'full'. */
  adapters: LoraAdapters | null;
  /** True when the run was aborted before `steps`. */
  partial: boolean;
  /** What paging AdamW's states cost (adamw.paged), the last step's and the sum; null when not paged. */
  paging: { lastStep: PagingStats; total: PagingStats } | null;
  /** Held-out loss of the fine-tuned model on `data`, in windows of `context` (nats per byte). */
  heldOutLoss(data: Uint8Array, context?: number, batch?: number): Promise<number>;
  /** The fine-tuned weights, Hugging Face layout (adapters merged into the base): saveModel or LlamaModel takes them. */
  weights(): Promise<Map<string, Float32Array>>;
  /** The base as the graph computed with it (trained for 'full', frozen otherwise; NF4-rounded for 'qlora'). */
  baseWeights(): Promise<Map<string, Float32Array>>;
  dispose(): void;
}

function checkOptions(cfg: LlamaConfig, o: FinetuneOptions): void {
  if (!FINETUNE_METHODS.includes(o.method)) throw new ServelabError(`finetune: method must be one of ${FINETUNE_METHODS.join(', ')}, got ${JSON.stringify(o.method)}`);
  for (const k of ['steps', 'batch', 'context'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new ServelabError(`finetune: ${k} must be a positive integer, got ${JSON.stringify(o[k])}`);
  }
  if (o.context > cfg.maxPositions) throw new ServelabError(`finetune: context ${o.context} is past the model's ${cfg.maxPositions} positions`);
  const minLr = o.minLr ?? o.lr / 10;
  if (!(o.lr > 0 && Number.isFinite(o.lr) && minLr >= 0 && minLr <= o.lr)) throw new ServelabError(`finetune: need lr > 0 and 0 <= minLr <= lr, got ${o.lr}, ${minLr}`);
  if (o.warmup !== undefined && !(Number.isInteger(o.warmup) && o.warmup >= 0)) throw new ServelabError(`finetune: warmup must be an integer >= 0, got ${o.warmup}`);
  if (o.precision !== undefined && !['fp32', 'bf16', 'fp16'].includes(o.precision)) throw new ServelabError(`finetune: precision must be fp32, bf16 or fp16, got ${JSON.stringify(o.precision)}`);
  if (o.precision !== undefined && o.precision !== 'fp32' && o.method === 'qlora') throw new ServelabError(`finetune: 'qlora' stores its base in 4 bits; precision applies to 'full' and 'lora'`);
  if (!Number.isSafeInteger(o.seed)) throw new ServelabError(`finetune: seed must be an integer, got ${JSON.stringify(o.seed)}`);
}

/** The base as device tensors, one per parameter in graph order, tagged 'weights': fp32, or 16-bit cast up in the graph. */
function floatBase(dev: Device, cfg: LlamaConfig, weights: ReadonlyMap<string, Float32Array>, dtype: FinetunePrecision): FrozenBase {
  const values = fromHfWeights(cfg, weights);
  const specs = paramSpecs(cfg);
  const feeds: Tensor[] = [];
  try {
    specs.forEach((s, i) => feeds.push(dev.tensor(values[i], s.shape, dtype, { tag: 'weights', label: s.name })));
  } catch (e) {
    for (const t of feeds) t.dispose();
    throw e;
  }
  const supply = dtype === 'fp32' ? fp32Param : castParam(dtype);
  return { feeds, supply, weights: async () => toHfWeights(cfg, feeds), dispose: () => feeds.forEach((t) => t.dispose()) };
}

/** Fine-tunes `base` on `corpus.train` by `opts.method`; the caller disposes the result. */
export async function finetune(dev: Device, base: BaseModel, corpus: Corpus, opts: FinetuneOptions): Promise<FinetuneResult> {
  const cfg = base.cfg;
  checkOptions(cfg, opts);
  const { method, batch: B, context: S } = opts;
  const recipe: TrainRecipe = {
    model: cfg, batch: B, context: S, steps: opts.steps, lr: opts.lr, minLr: opts.minLr ?? opts.lr / 10,
    warmup: opts.warmup ?? 0, weightDecay: opts.weightDecay ?? 0, seed: opts.seed,
  };
  const sampler = new BatchSampler(corpus.train, { batch: B, context: S, seed: opts.seed });
  const lora = method === 'full' ? null : { r: 8, alpha: 16, seed: opts.seed, ...opts.lora };
  if (lora) resolveLora(cfg, lora); // refuses a bad adapter config before the base is allocated
  const made: { dispose(): void }[] = [];
  try {
    // What this run allocates: the peak of each tag above what was already live when it started (a model or
    // another run's result may share the device).
    dev.memory.resetPeak();
    const liveAtStart = dev.memory.liveByTag();
    const frozen = method === 'qlora' ? nf4Base(dev, cfg, base.weights, opts.qlora) : floatBase(dev, cfg, base.weights, opts.precision ?? 'fp32');
    made.push(frozen);
    const adapters = lora ? LoraAdapters.create(dev, cfg, lora) : null;
    if (adapters) made.push(adapters);
    const graphOpts: Omit<LossGraphOptions, 'reduction'> = { supply: frozen.supply, adapters: adapters?.sites };
    const trainable = adapters ? adapters.params() : frozen.feeds;
    const evalFeeds = () => [...frozen.feeds, ...(adapters?.params() ?? [])];
    const measure = (data: Uint8Array, context = opts.evalContext ?? S, batch = opts.evalBatch ?? 16) => heldOutLoss(dev, cfg, evalFeeds(), data, context, batch, graphOpts);
    const opt = new AdamW(dev, trainable, { ...opts.adamw, lr: opts.lr, weightDecay: recipe.weightDecay });
    made.push(opt);
    const heldOut: FinetuneResult['heldOut'] = {};
    for (const [name, data] of Object.entries(opts.heldOut ?? {})) heldOut[name] = { before: await measure(data), after: NaN };
    const { graph, tables } = trainingGraph(cfg, dev, graphOpts);
    made.push({ dispose: () => tables.forEach((t) => t.dispose()) });
    const positions = dev.tensor(Int32Array.from({ length: B * S }, (_, i) => i % S), [B, S], 'int32', { label: 'positions' });
    made.push(positions);
    const losses: number[] = [];
    const stepMs: number[] = [];
    let partial = false;
    for (let step = 0; step < opts.steps; step++) {
      try {
        throwIfAborted();
      } catch (e) {
        if ((e as Error).name !== 'AbortError') throw e;
        partial = true;
        break;
      }
      const t0 = performance.now();
      const b = sampler.next();
      const lr = learningRate(recipe, step);
      const tokens = dev.tensor(b.tokens, [B, S], 'int32', { label: 'tokens' });
      const labels = dev.tensor(b.labels, [B, S], 'int32', { label: 'labels' });
      let loss: number;
      try {
        loss = await trainStep(dev, graph, [tokens, positions, labels, ...frozen.feeds, ...(adapters?.params() ?? [])], opt, lr, `finetune, step ${step}`);
      } finally {
        tokens.dispose();
        labels.dispose();
      }
      const ms = performance.now() - t0;
      losses.push(loss);
      stepMs.push(ms);
      opts.onStep?.({ step: step + 1, loss, lr, stepMs: ms, memory: dev.memory.snapshot().byTag });
    }
    const peak = dev.memory.peakByTag();
    const peakByTag = Object.fromEntries(Object.entries(peak).map(([tag, b]) => [tag, Math.max(0, b - (liveAtStart[tag as keyof BytesByTag] ?? 0))])) as BytesByTag;
    const paging = opt.paging();
    // Only what the held-out measure and the caller need stays: the optimizer's state and the graph's tables go now.
    for (const x of [positions, opt]) x.dispose();
    for (const t of tables) t.dispose();
    for (const [name, data] of Object.entries(opts.heldOut ?? {})) heldOut[name].after = await measure(data);
    const later = stepMs.slice(1).sort((a, b) => a - b);
    const baseParams = paramSpecs(cfg).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    let disposed = false;
    return {
      method, cfg, losses, stepMs, peakByTag, heldOut, adapters, partial, baseParams, paging,
      medianStepMs: later.length ? later[Math.floor(later.length / 2)] : (stepMs[0] ?? NaN),
      trainableParams: adapters ? adapters.trainableParams() : baseParams,
      heldOutLoss: (data, context, batch) => measure(data, context, batch),
      weights: async () => (adapters ? adapters.merge(await frozen.weights()) : frozen.weights()),
      baseWeights: () => frozen.weights(),
      dispose: () => {
        if (disposed) return;
        disposed = true;
        frozen.dispose();
        adapters?.dispose();
      },
    };
  } catch (e) {
    for (const x of made.reverse()) x.dispose();
    throw e;
  }
}
