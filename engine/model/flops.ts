/**
 * FLOPs of a Llama decoder's forward step, counted from its shapes (the 2N-per-token rule of Kaplan et al. 2020, with
 * attention's own products over the attended length), and of generating tokens with and without a KV cache.
 *
 * Counted, at 2 FLOPs per multiply-add: every projection of every layer (q, k, v, o, gate, up, down), the output head
 * over the rows whose logits are asked for, and attention's two products for each query head, q k^T and p v, over the
 * positions each new token attends to (its cached past and the new tokens up to itself: causal). Left out, as small
 * beside what is counted: RMSNorm, rotary embedding, SiLU and the gating product, and the residual adds (O(hidden) per
 * token against the projections' O(hidden^2)); softmax (O(heads) per attended position against attention's
 * O(heads x headDim)); the embedding lookup (a gather, no arithmetic). Also left out: work a kernel
 * does beyond the causal minimum; a prefill kernel may multiply the whole rectangle of q k^T and mask it afterwards,
 * which at most doubles the attention term of a prefill.
 */
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';

export interface ForwardShape {
  /** Tokens run through the model in this step (the prompt at a prefill, 1 at a cached decode step). */
  newTokens: number;
  /** Tokens whose keys and values are already cached, attended to but not recomputed. Default 0. */
  pastTokens?: number;
  /**
   * Rows that go through the output head: 'last' (default) for generation, which needs the next token's logits only
   * (the engine's prefill picks the last row before the head); 'all' for scoring every position.
   */
  logits?: 'last' | 'all';
}

/** FLOPs of one forward step, by part. */
export interface ForwardFlops {
  /** The decoder layers' linears: 2 x newTokens x their weights. */
  projections: number;
  /** q k^T and p v of every query head over the attended positions. */
  attention: number;
  /** The output head: 2 x rows x hidden x vocab. */
  head: number;
  total: number;
}

function checkCount(fn: string, name: string, n: number, min: number): number {
  if (!Number.isSafeInteger(n) || n < min) throw new ServelabError(`${fn}: ${name} must be an integer >= ${min}, got ${n}`);
  return n;
}

/** Weights of one decoder layer's linears: q and o are [hidden, heads x headDim], k and v [hidden, kvHeads x headDim]. */
function layerWeights(cfg: LlamaConfig): number {
  const H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  return H * q + 2 * H * kv + q * H + 3 * H * cfg.intermediateSize;
}

/** FLOPs of one forward step of `newTokens` tokens after `pastTokens` cached ones. */
export function forwardFlops(cfg: LlamaConfig, shape: ForwardShape): ForwardFlops {
  const n = checkCount('forwardFlops', 'newTokens', shape.newTokens, 1);
  const past = checkCount('forwardFlops', 'pastTokens', shape.pastTokens ?? 0, 0);
  const logits = shape.logits ?? 'last';
  if (logits !== 'last' && logits !== 'all') throw new ServelabError(`forwardFlops: logits must be 'last' or 'all', got ${JSON.stringify(logits)}`);
  const L = cfg.numLayers;
  const projections = 2 * n * L * layerWeights(cfg);
  // New token j (0-based) attends to past + j + 1 positions; summed over the n new tokens:
  const attended = n * past + (n * (n + 1)) / 2;
  // Per attended position and query head: headDim multiply-adds for q.k, headDim more for p.v.
  const attention = 2 * 2 * L * cfg.numHeads * cfg.headDim * attended;
  const head = 2 * (logits === 'all' ? n : 1) * cfg.hiddenSize * cfg.vocabSize;
  return { projections, attention, head, total: projections + attention + head };
}

export interface DecodeFlopsOptions {
  /** Tokens of the prompt, prefilled at the first step. */
  promptTokens: number;
  /** New tokens to generate: one forward step each. */
  steps: number;
  /** With a KV cache, each step after the first runs one token against the cached ones; without, the whole sequence. */
  cache: boolean;
}

export interface StepFlops extends ForwardFlops {
  /** 0 for the prefill that yields the first new token. */
  step: number;
  /** Tokens run through the model at this step. */
  newTokens: number;
  /** Cached tokens it attends to without recomputing them. */
  pastTokens: number;
  /** The sequence the step predicts from: pastTokens + newTokens. */
  seqLen: number;
}

export interface DecodeFlops {
  steps: StepFlops[];
  total: number;
}

/**
 * FLOPs of greedy generation of `steps` tokens after a prompt. Step 0 runs the prompt either way. Step i then predicts
 * from promptTokens + i tokens: with a cache it runs the newest token against promptTokens + i - 1 cached ones (linear
 * in the length, from attention alone); without, it runs all promptTokens + i tokens again, so a step grows linearly
 * and the total quadratically in the length.
 */
export function decodeFlops(cfg: LlamaConfig, opts: DecodeFlopsOptions): DecodeFlops {
  const P = checkCount('decodeFlops', 'promptTokens', opts.promptTokens, 1);
  const n = checkCount('decodeFlops', 'steps', opts.steps, 1);
  if (typeof opts.cache !== 'boolean') throw new ServelabError(`decodeFlops: cache must be true or false, got ${JSON.stringify(opts.cache)}`);
  const steps: StepFlops[] = [];
  let total = 0;
  for (let step = 0; step < n; step++) {
    const seqLen = P + step;
    const newTokens = step === 0 || !opts.cache ? seqLen : 1;
    const pastTokens = seqLen - newTokens;
    const f = forwardFlops(cfg, { newTokens, pastTokens });
    steps.push({ step, newTokens, pastTokens, seqLen, ...f });
    total += f.total;
  }
  return { steps, total };
}
