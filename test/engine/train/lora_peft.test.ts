/**
 * LoRA adapters on disk in PEFT's format (engine/train/lora_peft.ts): an adapter folder written as PEFT writes one
 * (test/fixtures/generate_lora.py, numpy) is read, merged and served against numpy's float64 merged model; a saved
 * adapter has PEFT's names, layouts and config fields and loads back to identical outputs; every malformed folder is
 * refused naming its file.
 *
 * Tolerances:
 * - merged q_proj against numpy's W + (alpha/r) B @ A (float64, rounded once to fp32): the engine also sums in
 *   float64 and rounds once, in another order: at most 1 ulp of the merged value (measured: all equal).
 * - logits against numpy's float64 forward pass over the merged weights: |got - want| <= 1e-5 + 1e-5 |want|, the
 *   fp32 bound of test/engine/model/llama.test.ts for the same checkpoint (numpy rounds its logits to 7 digits).
 * - save -> load: values and logits bit-identical (fp32 written and read as they are).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, openSafetensors, SafetensorsError, writeSafetensors, type Device } from '../../../engine/index.ts';
import { HF_NAMES, type LlamaConfig } from '../../../engine/model/config.ts';
import { loadLlamaConfig } from '../../../engine/model/hf_config.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import { loadBase } from '../../../engine/train/finetune.ts';
import { LoraAdapters, LoraError } from '../../../engine/train/lora.ts';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, loadAdapter, peftTensorName, saveAdapter } from '../../../engine/train/lora_peft.ts';

const FIXTURES = new URL('../../fixtures/', import.meta.url).pathname;
const TINY = join(FIXTURES, 'llama_tiny');
const LORA = join(FIXTURES, 'lora_tiny');
const expected = JSON.parse(readFileSync(join(LORA, 'expected.json'), 'utf8')) as {
  merged_sums: Record<string, number>;
  merged_q0: number[];
  sequences: { ids: number[]; logits: number[][] }[];
};

let dev: Device;
let tmp: string;
let cfg: LlamaConfig;
let base: ReadonlyMap<string, Float32Array>;
beforeAll(async () => {
  dev = await createDevice('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'servelab-lora-'));
  ({ cfg, weights: base } = loadBase(TINY));
});
afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await dev.dispose();
});

async function logitsOf(m: LlamaModel, ids: readonly number[]): Promise<Float32Array> {
  const cache = await m.createCache(1, ids.length);
  try {
    const { logits } = await m.prefill([ids], cache, { all: true });
    const z = logits.toFloat32();
    logits.dispose();
    return z;
  } finally {
    cache.dispose();
  }
}

describe('an adapter folder written as PEFT writes one', () => {
  it('loads as r 4, alpha 8 on q, v and down, merges to numpy\'s W + (alpha/r) B @ A, and serves its logits merged or not', async () => {
    const a = loadAdapter(LORA, dev, cfg);
    try {
      expect(a.config).toMatchObject({ r: 4, alpha: 8, targets: ['q', 'v', 'down'], init: 'kaiming', dropout: 0.05 });
      expect(a.scaling).toBe(2);
      const merged = a.merge(base);
      const q0 = merged.get(HF_NAMES.layer(0).q)!;
      q0.forEach((x, i) => expect(Math.abs(x - expected.merged_q0[i])).toBeLessThanOrEqual(2 ** -23 * Math.abs(expected.merged_q0[i])));
      for (const [name, sum] of Object.entries(expected.merged_sums)) {
        expect(Math.abs(merged.get(name)!.reduce((s, x) => s + x, 0) - sum), name).toBeLessThan(1e-4);
      }
      expect(Object.keys(expected.merged_sums)).toHaveLength(6);
      const served = [
        await LlamaModel.fromWeights(dev, cfg, (n) => merged.get(n)!),
        await LlamaModel.fromWeights(dev, cfg, (n) => base.get(n)!, { adapters: a.forModel() }),
      ];
      try {
        for (const m of served) {
          for (const s of expected.sequences) {
            const z = await logitsOf(m, s.ids);
            s.logits.flat().forEach((want, i) => expect(Math.abs(z[i] - want)).toBeLessThanOrEqual(1e-5 + 1e-5 * Math.abs(want)));
          }
        }
      } finally {
        for (const m of served) m.dispose();
      }
    } finally {
      a.dispose();
    }
  });
});

describe('saveAdapter', () => {
  it("writes PEFT's names, [r, in] and [out, r] layouts and adapter_config.json; loading gives identical values and logits", async () => {
    const fresh = LoraAdapters.create(dev, cfg, { r: 3, alpha: 6, targets: ['q', 'v', 'gate'], init: 'gaussian', seed: 9 });
    // A trained adapter has a non-zero B.
    fresh.B.forEach((b, i) => b.write(Float32Array.from({ length: b.numel }, (_, k) => Math.sin(k + 7 * i) / 10)));
    const dir = join(tmp, 'saved');
    saveAdapter(dir, fresh, { baseModel: 'servelab/builtin' });
    const json = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8'));
    expect(json).toMatchObject({
      peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 3, lora_alpha: 6, lora_dropout: 0, target_modules: ['q_proj', 'v_proj', 'gate_proj'],
      bias: 'none', fan_in_fan_out: false, init_lora_weights: 'gaussian', base_model_name_or_path: 'servelab/builtin', use_rslora: false,
    });
    const st = openSafetensors(join(dir, ADAPTER_WEIGHTS));
    try {
      const names = st.tensors.map((t) => t.name);
      expect(names).toHaveLength(12);
      expect(names).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
      expect(names).toContain('base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight');
      expect(st.info('base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight').shape).toEqual([3, 32]);
      expect(st.info('base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight').shape).toEqual([64, 3]);
      expect(st.info('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight').shape).toEqual([16, 3]);
      // PEFT's lora_A.weight[j, k] is the engine's A[k, j]; lora_B.weight[o, j] is B[j, o].
      const v = fresh.values()[1];
      const A = st.read(peftTensorName({ layer: 0, proj: 'v' }, 'A')).data as Float32Array;
      const B = st.read(peftTensorName({ layer: 0, proj: 'v' }, 'B')).data as Float32Array;
      expect(A[2 * 32 + 5]).toBe(v.A[5 * 3 + 2]);
      expect(B[11 * 3 + 1]).toBe(v.B[1 * 16 + 11]);
    } finally {
      st.close();
    }
    const back = loadAdapter(dir, dev, cfg);
    expect(back.values()).toEqual(fresh.values());
    expect({ ...back.config, seed: 9 }).toEqual(fresh.config); // PEFT keeps no seed
    const models = [
      await LlamaModel.fromWeights(dev, cfg, (n) => base.get(n)!, { adapters: fresh.forModel() }),
      await LlamaModel.fromWeights(dev, cfg, (n) => base.get(n)!, { adapters: back.forModel() }),
    ];
    const ids = expected.sequences[0].ids;
    expect(await logitsOf(models[1], ids)).toEqual(await logitsOf(models[0], ids));
    for (const x of [...models, fresh, back]) x.dispose();
  });
});

describe('loadAdapter refuses', () => {
  /** A copy of the fixture folder with `edit` applied to its config and `tensors` (name -> replaced or removed). */
  function variant(name: string, edit: (c: Record<string, unknown>) => void = () => {}, tensors?: (t: Map<string, { shape: number[]; data: Float32Array } | null>) => void): string {
    const dir = join(tmp, name);
    mkdirSync(dir, { recursive: true });
    const c = JSON.parse(readFileSync(join(LORA, ADAPTER_CONFIG), 'utf8'));
    edit(c);
    writeFileSync(join(dir, ADAPTER_CONFIG), JSON.stringify(c));
    if (!tensors) {
      copyFileSync(join(LORA, ADAPTER_WEIGHTS), join(dir, ADAPTER_WEIGHTS));
      return dir;
    }
    const st = openSafetensors(join(LORA, ADAPTER_WEIGHTS));
    const m = new Map(st.tensors.map((t) => [t.name, { shape: t.shape, data: st.read(t.name).data as Float32Array }] as const));
    st.close();
    const edited = new Map<string, { shape: number[]; data: Float32Array } | null>(m);
    tensors(edited);
    const out: Parameters<typeof writeSafetensors>[1] = {};
    for (const [k, v] of edited) if (v) out[k] = { dtype: 'fp32', shape: v.shape, data: v.data };
    writeSafetensors(join(dir, ADAPTER_WEIGHTS), out);
    return dir;
  }
  const q0A = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const cases: [string, () => string, string][] = [
    ['a folder without adapter_config.json', () => join(tmp, 'nothing-here'), 'nothing-here/adapter_config.json: no such file'],
    ['a config that is not JSON', () => { const d = variant('not-json'); writeFileSync(join(d, ADAPTER_CONFIG), '{"r": 4,'); return d; }, 'not-json/adapter_config.json: is not JSON'],
    ['another PEFT method', () => variant('ia3', (c) => (c.peft_type = 'IA3')), 'peft_type is "IA3"; only "LORA" adapters are read'],
    ['an unknown module', () => variant('lm-head', (c) => (c.target_modules = ['q_proj', 'lm_head'])), 'target_modules names "lm_head"'],
    ['rank-stabilized scaling', () => variant('rslora', (c) => (c.use_rslora = true)), 'use_rslora is true'],
    ['a trained bias', () => variant('bias', (c) => (c.bias = 'lora_only')), 'bias is "lora_only"'],
    ['r = 0', () => variant('r0', (c) => (c.r = 0)), 'r0/adapter_config.json: LoRA: r must be an integer >= 1, got 0'],
    ['lora_alpha negative', () => variant('alpha', (c) => (c.lora_alpha = -8)), 'alpha must be a finite number > 0, got -8'],
    ['a missing tensor', () => variant('missing', undefined, (t) => t.set(q0A, null)), `tensor ${q0A} is missing`],
    ['an extra tensor', () => variant('extra', undefined, (t) => t.set('base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', { shape: [4, 32], data: new Float32Array(128) })), 'k_proj.lora_A.weight is not an adapter'],
    ['a tensor of the wrong shape', () => variant('shape', undefined, (t) => t.set(q0A, { shape: [32, 4], data: new Float32Array(128) })), `tensor ${q0A} is [32, 4]; r = 4 and the model's config imply [4, 32]`],
    ['a config whose r disagrees with the tensors', () => variant('r8', (c) => (c.r = 8)), 'r = 8 and the model\'s config imply [8, 32]'],
    ['a NaN in a tensor', () => variant('nan', undefined, (t) => t.set(q0A, { shape: [4, 32], data: new Float32Array(128).fill(NaN) })), `tensor ${q0A} holds NaN at element 0`],
  ];
  for (const [what, make, message] of cases) {
    it(`${what}: LoraError naming the file, nothing allocated`, () => {
      const dir = make();
      const live = dev.memory.live;
      expect(() => loadAdapter(dir, dev, cfg)).toThrow(LoraError);
      expect(() => loadAdapter(dir, dev, cfg)).toThrow(message);
      expect(dev.memory.live).toBe(live);
    });
  }

  it('a truncated adapter_model.safetensors: SafetensorsError naming the file', () => {
    const dir = variant('truncated');
    const file = join(dir, ADAPTER_WEIGHTS);
    writeFileSync(file, readFileSync(file).subarray(0, 200));
    expect(() => loadAdapter(dir, dev, cfg)).toThrow(SafetensorsError);
    expect(() => loadAdapter(dir, dev, cfg)).toThrow(file);
  });

  it("an adapter for another model: the tensor's shape against the config", () => {
    const wider = { ...loadLlamaConfig(TINY), intermediateSize: 96 };
    expect(() => loadAdapter(LORA, dev, wider)).toThrow('mlp.down_proj.lora_A.weight is [4, 64]; r = 4 and the model\'s config imply [4, 96]');
    expect(() => loadAdapter(LORA, dev, { ...wider, intermediateSize: 64, numLayers: 1 })).toThrow('layers.1.mlp.down_proj.lora_A.weight is not an adapter of adapter_config.json\'s target_modules on a 1-layer model');
  });
});
