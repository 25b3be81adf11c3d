/** config.json parsing against the published config files of real checkpoints, and every refusal naming its field. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadLlamaConfig, parseLlamaConfig, toHfConfig } from '../../../engine/model/hf_config.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';

// As published on the Hugging Face Hub (meta-llama/Llama-2-7b-hf, meta-llama/Meta-Llama-3-8B).
const LLAMA2_7B = {
  architectures: ['LlamaForCausalLM'], bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu', hidden_size: 4096,
  initializer_range: 0.02, intermediate_size: 11008, max_position_embeddings: 4096, model_type: 'llama',
  num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_scaling: null, tie_word_embeddings: false, torch_dtype: 'float16', transformers_version: '4.31.0.dev0',
  use_cache: true, vocab_size: 32000,
};
const LLAMA3_8B = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000,
  eos_token_id: 128001, hidden_act: 'silu', hidden_size: 4096, initializer_range: 0.02, intermediate_size: 14336,
  max_position_embeddings: 8192, model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 32,
  num_key_value_heads: 8, pretraining_tp: 1, rms_norm_eps: 1e-5, rope_scaling: null, rope_theta: 500000.0,
  tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.40.0.dev0', use_cache: true,
  vocab_size: 128256,
};

const dir = mkdtempSync(join(tmpdir(), 'hf-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function refusal(json: unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    parseLlamaConfig(json, 'config.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  for (const p of parts) expect((err as Error).message).toMatch(p);
}

describe('parseLlamaConfig', () => {
  it('reads Llama-2-7B with the defaults it leaves out', () => {
    expect(parseLlamaConfig(LLAMA2_7B, 'config.json')).toEqual<LlamaConfig>({
      vocabSize: 32000, hiddenSize: 4096, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128,
      intermediateSize: 11008, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositions: 4096, tieWordEmbeddings: false,
      bosTokenId: 1, eosTokenId: 2,
    });
  });

  it('reads Llama-3-8B: grouped-query heads and rope_theta 500000', () => {
    const c = parseLlamaConfig(LLAMA3_8B, 'config.json');
    expect(c).toMatchObject({ numKvHeads: 8, headDim: 128, ropeTheta: 500000, vocabSize: 128256, bosTokenId: 128000, eosTokenId: 128001 });
  });

  it('applies the documented defaults and takes the first of several eos ids', () => {
    const { num_key_value_heads: _kv, rope_theta: _t, tie_word_embeddings: _tie, bos_token_id: _b, ...rest } = LLAMA3_8B;
    const c = parseLlamaConfig({ ...rest, eos_token_id: [128001, 128008, 128009], head_dim: null }, 'config.json');
    expect(c).toMatchObject({ numKvHeads: 32, ropeTheta: 10000, tieWordEmbeddings: false, eosTokenId: 128001, headDim: 128 });
    expect(c.bosTokenId).toBeUndefined();
  });

  it('takes an explicit head_dim that is not hidden/heads', () => {
    const c = parseLlamaConfig({ ...LLAMA2_7B, hidden_size: 4000, head_dim: 64 }, 'x.json');
    expect(c.headDim).toBe(64);
  });

  it('accepts mistral with no sliding window or one as long as the context', () => {
    expect(parseLlamaConfig({ ...LLAMA3_8B, model_type: 'mistral', sliding_window: null }, 'c').numKvHeads).toBe(8);
    expect(parseLlamaConfig({ ...LLAMA3_8B, model_type: 'mistral', sliding_window: 8192 }, 'c').numKvHeads).toBe(8);
    refusal({ ...LLAMA3_8B, model_type: 'mistral', sliding_window: 4096 }, /config\.json: sliding_window 4096 is not supported/);
  });
});

describe('parseLlamaConfig refuses, naming file and field', () => {
  it('a required field missing or of the wrong type', () => {
    refusal({ ...LLAMA2_7B, num_attention_heads: '8' }, 'config.json: num_attention_heads must be a positive integer, got "8"');
    const { hidden_size: _h, ...noHidden } = LLAMA2_7B;
    refusal(noHidden, 'config.json: hidden_size must be a positive integer, got nothing');
    refusal({ ...LLAMA2_7B, vocab_size: 0 }, 'vocab_size must be a positive integer, got 0');
    refusal({ ...LLAMA2_7B, intermediate_size: 11008.5 }, 'intermediate_size must be a positive integer');
    refusal({ ...LLAMA2_7B, rms_norm_eps: '1e-5' }, 'rms_norm_eps must be a positive number, got "1e-5"');
    refusal({ ...LLAMA2_7B, rope_theta: -1 }, 'rope_theta must be a positive number, got -1');
    refusal({ ...LLAMA2_7B, tie_word_embeddings: 'no' }, 'tie_word_embeddings must be true or false');
    refusal({ ...LLAMA2_7B, eos_token_id: [] }, 'eos_token_id must be a token id or a non-empty list');
    refusal({ ...LLAMA2_7B, bos_token_id: -1 }, 'bos_token_id must be a non-negative integer token id');
    refusal([1, 2], 'config.json: must be a JSON object, got an array');
  });

  it('heads that do not divide hidden_size, kv heads that do not divide heads', () => {
    refusal({ ...LLAMA2_7B, num_attention_heads: 30 }, 'num_attention_heads 30 does not divide hidden_size 4096');
    refusal({ ...LLAMA3_8B, num_key_value_heads: 5 }, 'num_key_value_heads 5 does not divide num_attention_heads 32');
  });

  it('rope_scaling, biases and other activations', () => {
    refusal({ ...LLAMA3_8B, rope_scaling: { rope_type: 'llama3', factor: 8.0 } }, /rope_scaling .* is not supported/);
    refusal({ ...LLAMA3_8B, attention_bias: true }, 'attention_bias must be false');
    refusal({ ...LLAMA3_8B, hidden_act: 'gelu' }, 'hidden_act must be "silu"');
  });

  it('model types that are not Llama, saying why when known', () => {
    refusal({ ...LLAMA3_8B, model_type: 'qwen2' }, /model_type "qwen2" is not supported \(qwen2 has biases on q\/k\/v_proj.*accepted: llama, mistral/);
    refusal({ ...LLAMA3_8B, model_type: 'opt' }, 'model_type "opt" is not supported; accepted: llama, mistral');
  });
});

describe('loadLlamaConfig and toHfConfig', () => {
  it('reads dir/config.json; a missing file or bad JSON names the file', () => {
    const d = mkdtempSync(join(dir, 'ok-'));
    writeFileSync(join(d, 'config.json'), JSON.stringify(LLAMA3_8B));
    expect(loadLlamaConfig(d).numKvHeads).toBe(8);
    const empty = mkdtempSync(join(dir, 'missing-'));
    expect(() => loadLlamaConfig(empty)).toThrow(new RegExp(`${join(empty, 'config.json')}: no such file`));
    writeFileSync(join(d, 'config.json'), '{"hidden_size": 4096,');
    expect(() => loadLlamaConfig(d)).toThrow(ConfigError);
    expect(() => loadLlamaConfig(d)).toThrow(/config\.json: is not JSON/);
  });

  it('round-trips through a config.json transformers would load', () => {
    const cfgs: LlamaConfig[] = [
      parseLlamaConfig(LLAMA2_7B, 'c'),
      parseLlamaConfig(LLAMA3_8B, 'c'),
      { vocabSize: 64, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, intermediateSize: 64, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 64, tieWordEmbeddings: true },
    ];
    for (const c of cfgs) {
      const hf = toHfConfig(c, 'bfloat16');
      expect(hf).toMatchObject({ model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_act: 'silu', torch_dtype: 'bfloat16' });
      expect(parseLlamaConfig(JSON.parse(JSON.stringify(hf)), 'c')).toEqual(c);
    }
  });
});
