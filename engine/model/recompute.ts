/**
 * Greedy decoding with and without a KV cache, timed step by step: without one, every step runs the model over the
 * whole sequence so far, recomputing the keys and values of every earlier token (the redundancy the KV cache removes,
 * Pope et al. 2022; Kwon et al. 2023); with one, each step runs only the newest token against the cached keys and
 * values. Both pick the same tokens; each step reports its length, its measured time and its predicted FLOPs.
 */
import { ServelabError } from '../errors.ts';
import { currentSignal } from '../abort.ts';
import { Rng } from '../train/rng.ts';
import { sampleToken } from './generate.ts';
import { forwardFlops } from './flops.ts';
import type { LlamaModel } from './llama.ts';

export interface DecodeStep {
  /** 0 for the prefill of the prompt that yields the first new token. */
  step: number;
  /** Tokens the step predicts from: the prompt and the tokens generated before this step. */
  seqLen: number;
  /** Tokens run through the model at this step: seqLen without a cache (and at step 0), 1 with one. */
  newTokens: number;
  /** Wall time of the forward step, logits read back to the host included. */
  ms: number;
  /** The step's FLOPs as forwardFlops counts them from the shapes. */
  flops: number;
  /** The token it picked. */
  token: number;
}

export interface DecodeRun {
  cache: boolean;
  promptTokens: number;
  /** The generated tokens, one per step. */
  tokens: number[];
  steps: DecodeStep[];
  /** Sum of the steps' times. */
  totalMs: number;
  /** Decode rate: tokens after the first per second of the steps after the prefill (0 for a single step). */
  tokensPerSec: number;
  /** Each step's logits [vocab], when asked for with keepLogits. */
  logits?: Float32Array[];
}

export interface DecodeRunOptions {
  /** New tokens to generate: one forward step each. */
  steps: number;
  /** Decode with the KV cache (prefill once, then one token per step) or recompute the whole sequence every step. */
  cache: boolean;
  /** Called after each step, for a live chart. */
  onStep?: (s: DecodeStep) => void;
  /** Keep every step's logits in the result (to compare the two ways). Default false. */
  keepLogits?: boolean;
  /** Stops at the next step by throwing its reason (default: the running cell's interrupt). */
  signal?: AbortSignal;
}

const GREEDY = { temperature: 0, topK: 0, topP: 1 } as const;

/**
 * Generates `steps` tokens greedily after `prompt` (token ids). The cache is reserved once, for the longest sequence
 * a step runs (prompt + steps - 1 tokens). Without `cache`, every step is a prefill of the whole sequence, which
 * starts from an empty cache: keys and values written by earlier steps are never read again.
 */
export async function greedyDecode(model: LlamaModel, prompt: readonly number[], opts: DecodeRunOptions): Promise<DecodeRun> {
  const { steps: n, cache: useCache } = opts;
  const P = prompt.length;
  const ctx = model.cfg.maxPositions;
  if (P === 0) throw new ServelabError('greedyDecode: the prompt is empty; it needs at least one token');
  if (!Number.isSafeInteger(n) || n < 1) throw new ServelabError(`greedyDecode: steps must be a positive integer, got ${n}`);
  if (typeof useCache !== 'boolean') throw new ServelabError(`greedyDecode: cache must be true or false, got ${JSON.stringify(useCache)}`);
  // The last step predicts from P + n - 1 tokens; the token it picks is returned, never run.
  if (P + n - 1 > ctx) {
    throw new ServelabError(`greedyDecode: a prompt of ${P} tokens and ${n} steps run sequences of up to ${P + n - 1} tokens; the model's context is ${ctx} (at most ${ctx - P + 1} steps after this prompt)`);
  }
  const signal = opts.signal ?? currentSignal();
  const rng = new Rng(0); // greedy picks never draw from it
  const seq = [...prompt];
  const out: DecodeRun = { cache: useCache, promptTokens: P, tokens: [], steps: [], totalMs: 0, tokensPerSec: 0 };
  if (opts.keepLogits) out.logits = [];
  const kv = await model.createCache(1, P + n - 1);
  try {
    for (let step = 0; step < n; step++) {
      signal?.throwIfAborted();
      const runsAll = step === 0 || !useCache;
      const newTokens = runsAll ? seq.length : 1;
      const t0 = performance.now();
      const { logits } = runsAll ? await model.prefill([seq], kv) : await model.decode([seq[seq.length - 1]], kv);
      let z: Float32Array;
      try {
        z = await logits.values();
      } finally {
        logits.dispose();
      }
      const ms = performance.now() - t0;
      const token = sampleToken(z, GREEDY, rng);
      const record: DecodeStep = { step, seqLen: seq.length, newTokens, ms, flops: forwardFlops(model.cfg, { newTokens, pastTokens: seq.length - newTokens }).total, token };
      out.steps.push(record);
      out.tokens.push(token);
      out.logits?.push(z.slice());
      out.totalMs += ms;
      seq.push(token);
      opts.onStep?.(record);
    }
  } finally {
    kv.dispose();
  }
  const decodeMs = out.totalMs - out.steps[0].ms;
  out.tokensPerSec = n > 1 ? (n - 1) / (decodeMs / 1000) : 0;
  return out;
}
