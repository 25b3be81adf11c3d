/**
 * LoRA adapters on disk as Hugging Face PEFT writes them: adapter_model.safetensors with PEFT's tensor names
 * (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in], `...lora_B.weight` [out, r]) and
 * adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, ...), so `PeftModel.from_pretrained` reads
 * what this writes and the other way round. Only the adapter is saved; the base model stays where it is.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../device/device.ts';
import { bf16ArrayToFp32 } from '../dtype/bf16.ts';
import { fp16ArrayToFp32 } from '../dtype/fp16.ts';
import { openSafetensors, writeSafetensors, type TensorToWrite } from '../io/safetensors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { transpose2d } from '../model/llama.ts';
import type { AdapterSpec } from './lm_params.ts';
import { LORA_TARGETS, LoraAdapters, LoraError, loraSites, resolveLora, type AdapterValues, type LoraConfig, type LoraTarget } from './lora.ts';

export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
export const ADAPTER_CONFIG = 'adapter_config.json';

/** PEFT's module of each projection inside a Llama decoder layer. */
const MODULE: Record<LoraTarget, string> = {
  q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj',
};
const TARGET_OF = new Map(LORA_TARGETS.map((t) => [MODULE[t].split('.')[1], t]));

/** PEFT's name of an adapter matrix: base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight. */
export function peftTensorName(site: Pick<AdapterSpec, 'layer' | 'proj'>, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${site.layer}.${MODULE[site.proj]}.lora_${which}.weight`;
}

/** adapter_config.json as PEFT's LoraConfig serializes it (the fields a PEFT user reads, at their PEFT values). */
export function adapterConfigJson(adapters: LoraAdapters, baseModel = ''): Record<string, unknown> {
  const c = adapters.config;
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModel,
    r: c.r,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    target_modules: c.targets.map((t) => MODULE[t].split('.')[1]),
    bias: 'none',
    fan_in_fan_out: false,
    init_lora_weights: c.init === 'gaussian' ? 'gaussian' : true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    layers_to_transform: null,
    rank_pattern: {},
    alpha_pattern: {},
    inference_mode: true,
  };
}

/** Writes `dir`/adapter_model.safetensors (fp32, PEFT's layout) and `dir`/adapter_config.json. */
export function saveAdapter(dir: string, adapters: LoraAdapters, opts: { baseModel?: string } = {}): void {
  const tensors: Record<string, TensorToWrite> = {};
  const values = adapters.values();
  adapters.sites.forEach((s, i) => {
    tensors[peftTensorName(s, 'A')] = { dtype: 'fp32', shape: [s.r, s.inFeatures], data: transpose2d(values[i].A, s.inFeatures, s.r) };
    tensors[peftTensorName(s, 'B')] = { dtype: 'fp32', shape: [s.outFeatures, s.r], data: transpose2d(values[i].B, s.r, s.outFeatures) };
  });
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  writeFileSync(join(dir, ADAPTER_CONFIG), JSON.stringify(adapterConfigJson(adapters, opts.baseModel ?? ''), null, 2) + '\n');
}

/** adapter_config.json -> a LoraConfig, refusing what PEFT would compute differently from plain LoRA. */
export function parseAdapterConfig(file: string, json: unknown): LoraConfig {
  const fail = (detail: string) => new LoraError(`${file}: ${detail}`);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fail('must hold a JSON object');
  const c = json as Record<string, unknown>;
  if (c.peft_type !== 'LORA') throw fail(`peft_type is ${JSON.stringify(c.peft_type)}; only "LORA" adapters are read`);
  if (c.task_type !== undefined && c.task_type !== 'CAUSAL_LM') throw fail(`task_type is ${JSON.stringify(c.task_type)}; a decoder's adapter is "CAUSAL_LM"`);
  const absentOr = (key: string, ok: (v: unknown) => boolean, why: string) => {
    if (c[key] !== undefined && !ok(c[key])) throw fail(`${key} is ${JSON.stringify(c[key])}; ${why}`);
  };
  absentOr('bias', (v) => v === 'none', 'only "none" is supported (no trained biases)');
  absentOr('fan_in_fan_out', (v) => v === false, 'a Llama linear stores [out, in]: it must be false');
  absentOr('use_rslora', (v) => v === false, 'rank-stabilized scaling alpha / sqrt(r) is not supported');
  absentOr('use_dora', (v) => v === false, 'DoRA is not supported');
  absentOr('modules_to_save', (v) => v === null || (Array.isArray(v) && v.length === 0), 'only the adapters are loaded');
  absentOr('layers_to_transform', (v) => v === null, 'every layer must be adapted');
  for (const k of ['rank_pattern', 'alpha_pattern']) absentOr(k, (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'one r and alpha for every linear');
  const modules = c.target_modules;
  let targets: LoraTarget[];
  if (modules === 'all-linear') targets = [...LORA_TARGETS];
  else if (Array.isArray(modules)) {
    targets = modules.map((m) => {
      const t = TARGET_OF.get(m);
      if (!t) throw fail(`target_modules names ${JSON.stringify(m)}; a Llama layer has ${[...TARGET_OF.keys()].join(', ')}`);
      return t;
    });
  } else throw fail(`target_modules must be a list of module names, got ${JSON.stringify(modules)}`);
  const init = c.init_lora_weights === 'gaussian' ? 'gaussian' : c.init_lora_weights === true || c.init_lora_weights === false || c.init_lora_weights === undefined ? 'kaiming' : null;
  if (!init) throw fail(`init_lora_weights ${JSON.stringify(c.init_lora_weights)} is not read; expected true, false or "gaussian"`);
  return { r: c.r as number, alpha: c.lora_alpha as number, targets, init, dropout: (c.lora_dropout as number | undefined) ?? 0 };
}

/**
 * Reads an adapter saved by saveAdapter or by PEFT for a model of `cfg`: the config file and every tensor's name,
 * dtype and shape are checked before any value is read; an error names the file and the field or tensor.
 */
export function loadAdapter(dir: string, dev: Device, cfg: LlamaConfig): LoraAdapters {
  const cfgFile = join(dir, ADAPTER_CONFIG);
  if (!existsSync(cfgFile)) throw new LoraError(`${cfgFile}: no such file`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(cfgFile, 'utf8'));
  } catch (e) {
    throw new LoraError(`${cfgFile}: is not JSON: ${(e as Error).message}`);
  }
  const lora = parseAdapterConfig(cfgFile, json);
  let resolved;
  try {
    resolved = resolveLora(cfg, lora, { anyDropout: true });
  } catch (e) {
    throw new LoraError(`${cfgFile}: ${(e as Error).message}`);
  }
  const sites = loraSites(cfg, resolved.targets, resolved.r);
  const file = join(dir, ADAPTER_WEIGHTS);
  const st = openSafetensors(file);
  try {
    const want = new Map<string, number[]>();
    for (const s of sites) want.set(peftTensorName(s, 'A'), [s.r, s.inFeatures]).set(peftTensorName(s, 'B'), [s.outFeatures, s.r]);
    for (const t of st.tensors) if (!want.has(t.name)) throw new LoraError(`${file}: tensor ${t.name} is not an adapter of ${ADAPTER_CONFIG}'s target_modules on a ${cfg.numLayers}-layer model`);
    for (const [name, shape] of want) {
      if (!st.has(name)) throw new LoraError(`${file}: tensor ${name} is missing (${ADAPTER_CONFIG} targets ${resolved.targets.join(', ')} in ${cfg.numLayers} layers)`);
      const t = st.info(name);
      if (t.shape.join() !== shape.join()) throw new LoraError(`${file}: tensor ${name} is [${t.shape.join(', ')}]; r = ${resolved.r} and the model's config imply [${shape.join(', ')}]`);
      if (t.dtype !== 'fp32' && t.dtype !== 'fp16' && t.dtype !== 'bf16') throw new LoraError(`${file}: tensor ${name} is ${t.safetensorsDtype}; adapters must be F32, F16 or BF16`);
    }
    const read = (name: string): Float32Array => {
      const t = st.read(name);
      const v = t.dtype === 'fp32' ? (t.data as Float32Array) : t.dtype === 'fp16' ? fp16ArrayToFp32(t.data as Uint16Array) : bf16ArrayToFp32(t.data as Uint16Array);
      const bad = v.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new LoraError(`${file}: tensor ${name} holds ${v[bad]} at element ${bad}`);
      return v;
    };
    const values = sites.map((s): AdapterValues => ({
      A: transpose2d(read(peftTensorName(s, 'A')), s.r, s.inFeatures),
      B: transpose2d(read(peftTensorName(s, 'B')), s.outFeatures, s.r),
    }));
    return LoraAdapters.fromValues(dev, cfg, lora, values);
  } finally {
    st.close();
  }
}
