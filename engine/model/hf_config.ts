/** config.json of a Hugging Face Llama-family checkpoint, read into and written from LlamaConfig (transformers' LlamaConfig). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';

/** A config.json that does not describe a model this engine runs: names the file and the field. */
export class ConfigError extends ServelabError {
  override name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly field: string | undefined,
    detail: string,
  ) {
    super(`${file}: ${field === undefined ? '' : `${field} `}${detail}`);
  }
}

/**
 * model_type values whose checkpoints are exactly LlamaConfig's architecture: pre-norm RMSNorm, rotary positions,
 * grouped-query attention without biases, a SwiGLU MLP. qwen2 has q/k/v biases, gemma scales its embedding and
 * offsets its norms, phi3 fuses qkv: each would load without error and compute something else, so each is refused.
 */
export const ACCEPTED_MODEL_TYPES = ['llama', 'mistral'] as const;

const REFUSED_WHY: Record<string, string> = {
  qwen2: 'has biases on q/k/v_proj, which a Llama checkpoint lacks',
  qwen3: 'normalizes q and k per head, which a Llama layer does not',
  gemma: 'scales the embedding by sqrt(hidden_size) and uses (1 + weight) norms',
  gemma2: 'scales the embedding, soft-caps logits and alternates local attention',
  phi3: 'fuses q/k/v and gate/up into single tensors',
  mixtral: 'is a mixture of experts',
};

const show = (v: unknown) => (v === undefined ? 'nothing' : JSON.stringify(v));

/** Reads a parsed config.json. `file` is only for messages, e.g. "config.json" or the path it came from. */
export function parseLlamaConfig(json: unknown, file: string): LlamaConfig {
  const fail = (field: string | undefined, detail: string) => new ConfigError(file, field, detail);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fail(undefined, `must be a JSON object, got ${Array.isArray(json) ? 'an array' : show(json)}`);
  const j = json as Record<string, unknown>;
  const has = (k: string) => j[k] !== undefined && j[k] !== null;

  const posInt = (k: string, dflt?: number): number => {
    const v = j[k];
    if (!has(k) && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw fail(k, `must be a positive integer, got ${show(v)}`);
    return v;
  };
  const posNum = (k: string, dflt?: number): number => {
    const v = j[k];
    if (!has(k) && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw fail(k, `must be a positive number, got ${show(v)}`);
    return v;
  };
  const tokenId = (k: string): number | undefined => {
    let v = j[k];
    if (!has(k)) return undefined;
    // Llama 3 lists several end tokens (end_of_text, eot_id, eom_id); the first is the one generation stops on by default.
    if (Array.isArray(v)) {
      if (v.length === 0) throw fail(k, 'must be a token id or a non-empty list of them, got []');
      v = v[0];
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw fail(k, `must be a non-negative integer token id, got ${show(j[k])}`);
    return v;
  };

  if (has('model_type')) {
    const t = j.model_type;
    if (typeof t !== 'string') throw fail('model_type', `must be a string, got ${show(t)}`);
    if (!(ACCEPTED_MODEL_TYPES as readonly string[]).includes(t)) {
      const why = REFUSED_WHY[t] ? ` (${t} ${REFUSED_WHY[t]})` : '';
      throw fail('model_type', `${JSON.stringify(t)} is not supported${why}; accepted: ${ACCEPTED_MODEL_TYPES.join(', ')}`);
    }
  }
  if (has('rope_scaling')) {
    throw fail('rope_scaling', `${show(j.rope_scaling)} is not supported: only plain rotary positions (rope_scaling null) are implemented`);
  }
  for (const k of ['attention_bias', 'mlp_bias']) {
    if (has(k) && j[k] !== false) throw fail(k, `must be false (a Llama layer has no biases), got ${show(j[k])}`);
  }
  if (has('hidden_act') && j.hidden_act !== 'silu') throw fail('hidden_act', `must be "silu" (SwiGLU), got ${show(j.hidden_act)}`);

  const hiddenSize = posInt('hidden_size');
  const numHeads = posInt('num_attention_heads');
  const numKvHeads = posInt('num_key_value_heads', numHeads);
  if (!has('head_dim') && hiddenSize % numHeads !== 0) {
    throw fail('num_attention_heads', `${numHeads} does not divide hidden_size ${hiddenSize} (and head_dim is not given)`);
  }
  const headDim = posInt('head_dim', hiddenSize / numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw fail('num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}: each kv head must serve a whole group of query heads`);
  }
  const maxPositions = posInt('max_position_embeddings');
  // Mistral's sliding window changes attention only past its width; a window covering every position is plain causal.
  if (has('sliding_window') && !(typeof j.sliding_window === 'number' && j.sliding_window >= maxPositions)) {
    throw fail('sliding_window', `${show(j.sliding_window)} is not supported: only full causal attention (a window of null or >= max_position_embeddings ${maxPositions})`);
  }
  const tie = j.tie_word_embeddings;
  if (has('tie_word_embeddings') && typeof tie !== 'boolean') throw fail('tie_word_embeddings', `must be true or false, got ${show(tie)}`);

  const cfg: LlamaConfig = {
    vocabSize: posInt('vocab_size'),
    hiddenSize,
    numLayers: posInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: posInt('intermediate_size'),
    rmsNormEps: posNum('rms_norm_eps'),
    ropeTheta: posNum('rope_theta', 10000),
    maxPositions,
    tieWordEmbeddings: tie === true,
  };
  const bos = tokenId('bos_token_id');
  const eos = tokenId('eos_token_id');
  if (bos !== undefined) cfg.bosTokenId = bos;
  if (eos !== undefined) cfg.eosTokenId = eos;
  return cfg;
}

/** Reads dir/config.json. */
export function loadLlamaConfig(dir: string): LlamaConfig {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, undefined, code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(file, undefined, `is not JSON: ${(e as Error).message}`);
  }
  return parseLlamaConfig(json, file);
}

/** A config.json transformers' LlamaForCausalLM loads, and that parseLlamaConfig reads back to `cfg`. */
export function toHfConfig(cfg: LlamaConfig, torchDtype: 'float32' | 'float16' | 'bfloat16' = 'float32'): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    torch_dtype: torchDtype,
    hidden_act: 'silu',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    attention_bias: false,
    attention_dropout: 0,
    mlp_bias: false,
    initializer_range: 0.02,
    pretraining_tp: 1,
    use_cache: true,
  };
  if (cfg.bosTokenId !== undefined) out.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenId !== undefined) out.eos_token_id = cfg.eosTokenId;
  return out;
}
