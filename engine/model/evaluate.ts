/**
 * Held-out quality of a language model: mean cross entropy of the next byte (nats), perplexity e^nats and bits per
 * byte nats / ln 2 (the measure of byte-level models and compressors), and how often its greedy next token agrees
 * with another model's (the fp32 original's, when comparing weight formats).
 */
import { ServelabError } from '../errors.ts';
import { throwIfAborted } from '../abort.ts';
import { evalBatches } from '../train/corpus.ts';
import type { LlamaModel } from './llama.ts';

export interface Quality {
  /** Mean cross entropy per predicted token, nats. */
  nats: number;
  perplexity: number;
  bitsPerByte: number;
  /** Tokens scored. */
  tokens: number;
  /** Greedy next token at every scored position (argmax of the logits). */
  greedy: Int32Array;
  /** Fraction of positions where `greedy` equals opts.agreeWith's; null without it. */
  agreement: number | null;
}

export interface EvaluateOptions {
  /** Window length (default: the model's context). Each window starts from an empty cache. */
  context?: number;
  /** Windows per prefill; default 16. */
  batch?: number;
  /** Another evaluation's greedy tokens on the same data, to measure agreement with. */
  agreeWith?: Int32Array;
  onProgress?: (done: number, total: number) => void;
  /** Stops between batches (the running cell's interrupt stops it too). */
  signal?: AbortSignal;
}

/** Scores `data` (byte tokens) in consecutive windows: one prefill per batch of windows, logits at every position. */
export async function evaluate(model: LlamaModel, data: Uint8Array, opts: EvaluateOptions = {}): Promise<Quality> {
  const context = opts.context ?? model.cfg.maxPositions;
  const batches = evalBatches(data, context, opts.batch ?? 16);
  const V = model.cfg.vocabSize;
  let total = 0;
  let count = 0;
  const greedy: number[] = [];
  for (const [i, b] of batches.entries()) {
    throwIfAborted();
    opts.signal?.throwIfAborted();
    const rows = b.tokens.length / context;
    const prompts = Array.from({ length: rows }, (_, r) => Array.from(b.tokens.subarray(r * context, (r + 1) * context)));
    const cache = await model.createCache(rows, context);
    try {
      const { logits } = await model.prefill(prompts, cache, { all: true });
      const z = logits.toFloat32();
      logits.dispose();
      for (let p = 0; p < rows * context; p++) {
        const row = z.subarray(p * V, (p + 1) * V);
        let max = -Infinity;
        let arg = 0;
        for (let v = 0; v < V; v++) if (row[v] > max) [max, arg] = [row[v], v];
        let sum = 0;
        for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
        total += Math.log(sum) + max - row[b.labels[p]];
        greedy.push(arg);
        count++;
      }
    } finally {
      cache.dispose();
    }
    opts.onProgress?.(i + 1, batches.length);
  }
  if (count === 0) throw new ServelabError(`evaluate: ${data.length} bytes make no window of ${context} tokens`);
  const nats = total / count;
  const g = Int32Array.from(greedy);
  let agreement: number | null = null;
  if (opts.agreeWith) {
    if (opts.agreeWith.length !== g.length) throw new ServelabError(`evaluate: agreeWith has ${opts.agreeWith.length} tokens, this evaluation ${g.length}`);
    agreement = g.reduce((s, t, i) => s + (t === opts.agreeWith![i] ? 1 : 0), 0) / g.length;
  }
  return { nats, perplexity: Math.exp(nats), bitsPerByte: nats / Math.LN2, tokens: count, greedy: g, agreement };
}
