/**
 * What every parallel training scheme starts from and is compared on: a model's parameters (the built-in model by
 * default) as fp32 values in paramSpecs order, read by each worker from disk itself (nothing large crosses between
 * threads), the optimizer's settings, and a global batch cut into rows per worker or per micro-batch. The head's
 * loss is scaled by 1 / (tokens of the global batch), so the parts' gradients add up to the whole batch's mean.
 */
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { Batch } from '../train/corpus.ts';
import { loadBase } from '../train/finetune.ts';
import { fromHfWeights } from '../train/lm_params.ts';
import type { SegmentBatch } from '../train/segments.ts';
import { shardRange } from './shard.ts';

export interface JobOptions {
  /** A checkpoint folder (Hugging Face layout); default the built-in model. */
  model?: string;
  /** Parameters and gradients in bf16 with fp32 master weights in AdamW (mixed precision, ZeRO's setting), or fp32. Default 'bf16'. */
  precision?: 'fp32' | 'bf16';
  /** AdamW's learning rate; default JOB_LR. */
  lr?: number;
  /** AdamW's decoupled weight decay; default 0.01. */
  weightDecay?: number;
}

/** A fine-tuning learning rate for the built-in (already trained) model: larger ones undo its training in a step. */
export const JOB_LR = 1e-4;

/** The parameters a job starts from: config and fp32 values in paramSpecs order. */
export function loadJobParams(model?: string): { cfg: LlamaConfig; values: Float32Array[] } {
  const base = loadBase(model);
  return { cfg: base.cfg, values: fromHfWeights(base.cfg, base.weights) };
}

/** Rows shardRange(batch, parts, k) of a batch, for each part k: a data-parallel rank or a micro-batch. */
export function splitBatch(b: Batch, parts: number, what = 'workers'): SegmentBatch[] {
  if (parts > b.batch) throw new ServelabError(`a batch of ${b.batch} sequences cannot be split among ${parts} ${what}; use a batch of at least ${parts}`);
  const C = b.context;
  return Array.from({ length: parts }, (_, k) => {
    const { start, end } = shardRange(b.batch, parts, k);
    return { tokens: b.tokens.slice(start * C, end * C), labels: b.labels.slice(start * C, end * C), batch: end - start, seq: C };
  });
}

/** 1 / tokens of the whole batch: the head's loss scale that makes the parts' gradients sum to the mean's. */
export const lossScale = (b: Batch): number => 1 / (b.batch * b.context);
