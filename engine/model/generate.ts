/**
 * Autoregressive generation: one prefill of the prompt, then one decode step per new token against the KV cache,
 * each token chosen greedily or sampled with temperature, top-k (Fan et al. 2018) and nucleus top-p (Holtzman et al.
 * 2020) from a seeded stream. Text streams out as it is produced; an interrupt stops at the next step and keeps what
 * was produced.
 */
import { ServelabError } from '../errors.ts';
import { currentSignal } from '../abort.ts';
import { Rng } from '../train/rng.ts';
import type { Tokenizer } from '../io/tokenizer.ts';
import type { LlamaModel } from './llama.ts';

export interface GenerateOptions {
  /** New tokens at most; default 64. */
  maxTokens?: number;
  /** 0 (default) is greedy: the most likely token, exactly. */
  temperature?: number;
  /** Sample among the k most likely tokens only; 0 (default) for all. */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities sum to p; 1 (default) for all. */
  topP?: number;
  /** Seed of the sampling stream; default 0. */
  seed?: number;
  /** Stop once the text produced contains one of these (the stop string is kept out of the result). */
  stop?: string | readonly string[];
  /**
   * Put the tokenizer's BOS token first, as checkpoints trained with one expect (Llama's). Default false: the
   * built-in model was trained on windows of plain bytes and never saw it.
   */
  addBos?: boolean;
  /** Called with each new piece of text as soon as it decodes to whole characters. */
  onText?: (piece: string) => void;
  /** Stops generation at the next step (default: the running cell's interrupt). */
  signal?: AbortSignal;
}

export interface Generation {
  text: string;
  /** New token ids. */
  tokens: number[];
  promptTokens: number;
  stopReason: 'length' | 'eos' | 'stop' | 'context' | 'interrupted';
  prefillMs: number;
  decodeMs: number;
  /** New tokens per second of decoding (the prefill's first token excluded). */
  tokensPerSec: number;
}

/** Index of the chosen token in logits (one row). */
export function sampleToken(logits: Float32Array, opts: { temperature: number; topK: number; topP: number }, rng: Rng): number {
  if (opts.temperature === 0) {
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    return best;
  }
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const k = opts.topK > 0 ? Math.min(opts.topK, order.length) : order.length;
  const max = logits[order[0]];
  const p = order.slice(0, k).map((v) => Math.exp((logits[v] - max) / opts.temperature));
  const z = p.reduce((s, x) => s + x, 0);
  // The nucleus: the fewest most-likely tokens whose probability reaches topP (the first always kept).
  let keep = 0;
  for (let acc = 0; keep < p.length && (keep === 0 || acc < opts.topP); keep++) acc += p[keep] / z;
  const kept = p.slice(0, keep);
  let u = rng.uniform() * kept.reduce((s, x) => s + x, 0);
  for (let i = 0; i < kept.length; i++) if ((u -= kept[i]) < 0) return order[i];
  return order[kept.length - 1];
}

/** Length of the longest tail of `text` that is a proper prefix of a stop string. */
function heldForStop(text: string, stops: readonly string[]): number {
  let held = 0;
  for (const s of stops) for (let k = Math.min(s.length - 1, text.length); k > held; k--) if (text.endsWith(s.slice(0, k))) held = k;
  return held;
}

function checkOptions(o: GenerateOptions): { maxTokens: number; temperature: number; topK: number; topP: number } {
  const maxTokens = o.maxTokens ?? 64;
  const temperature = o.temperature ?? 0;
  const topK = o.topK ?? 0;
  const topP = o.topP ?? 1;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new ServelabError(`generate: maxTokens must be a positive integer, got ${maxTokens}`);
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw new ServelabError(`generate: temperature must be >= 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new ServelabError(`generate: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ServelabError(`generate: topP must be in (0, 1], got ${topP}`);
  return { maxTokens, temperature, topK, topP };
}

/** Continues `prompt` (text, through the model's tokenizer, or token ids). */
export async function generate(model: LlamaModel, prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<Generation> {
  const o = checkOptions(opts);
  const tok: Tokenizer | null = model.tokenizer;
  if (typeof prompt === 'string' && !tok) throw new ServelabError('generate: this model has no tokenizer; pass token ids');
  let ids = typeof prompt === 'string' ? tok!.encode(prompt) : [...prompt];
  if (opts.addBos && tok?.bosId !== undefined) ids = [tok.bosId, ...ids];
  if (ids.length === 0) throw new ServelabError('generate: the prompt is empty');
  const ctx = model.cfg.maxPositions;
  if (ids.length >= ctx) throw new ServelabError(`generate: the prompt is ${ids.length} tokens; the model's context is ${ctx}, which leaves no room for a new token`);
  const stops = typeof opts.stop === 'string' ? [opts.stop] : [...(opts.stop ?? [])];
  const signal = opts.signal ?? currentSignal();
  const rng = new Rng(opts.seed ?? 0);
  const eos = tok?.eosId ?? model.cfg.eosTokenId;
  const out: number[] = [];
  let text = '';
  let emitted = 0;
  let stopReason: Generation['stopReason'] = 'length';
  const cache = await model.createCache(1, ctx);
  let prefillMs = 0;
  const t0 = performance.now();
  try {
    let { logits } = await model.prefill([ids], cache);
    prefillMs = performance.now() - t0;
    for (;;) {
      const next = sampleToken(logits.toFloat32(), o, rng);
      logits.dispose();
      if (next === eos) {
        stopReason = 'eos';
        break;
      }
      out.push(next);
      if (tok) {
        text = tok.decode(out);
        const hit = stops.map((s) => text.indexOf(s, Math.max(0, emitted - s.length))).filter((i) => i >= 0);
        if (hit.length > 0) {
          text = text.slice(0, Math.min(...hit));
          stopReason = 'stop';
        }
        // Bytes of a character not yet complete decode to U+FFFD, and a tail that may begin a stop string may be cut
        // yet: both are held back until the next tokens tell.
        const ready = stopReason === 'stop' ? text.length : Math.min(text.endsWith('\uFFFD') ? text.lastIndexOf('\uFFFD') : text.length, text.length - heldForStop(text, stops));
        if (ready > emitted) opts.onText?.(text.slice(emitted, ready));
        emitted = Math.max(emitted, ready);
        if (stopReason === 'stop') break;
      }
      if (out.length >= o.maxTokens) break;
      if (signal?.aborted) {
        stopReason = 'interrupted';
        break;
      }
      if (!cache.canAppend(1)) {
        stopReason = 'context';
        break;
      }
      ({ logits } = await model.decode([next], cache));
    }
  } finally {
    cache.dispose();
  }
  if (tok && emitted < text.length) opts.onText?.(text.slice(emitted));
  const decodeMs = performance.now() - t0 - prefillMs;
  return { text, tokens: out, promptTokens: ids.length, stopReason, prefillMs, decodeMs, tokensPerSec: out.length > 1 ? (out.length - 1) / (decodeMs / 1000) : 0 };
}
