/**
 * Hugging Face checkpoint folders (config.json, model.safetensors or shards with model.safetensors.index.json):
 * `loadModel` checks every tensor's name, dtype and shape and the device budget before it reads any weight, then
 * builds the model one tensor at a time; `saveModel` writes a folder that transformers' LlamaForCausalLM loads.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Device } from '../device/device.ts';
import { OutOfMemoryError, ServelabError } from '../errors.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';
import { fp16ArrayToFp32, fp32ArrayToFp16 } from '../dtype/fp16.ts';
import { openCheckpoint, writeSafetensors, type TensorCollection, type TensorToWrite } from '../io/safetensors.ts';
import { loadLlamaConfig, toHfConfig } from './hf_config.ts';
import { hfShapes, type LlamaConfig } from './config.ts';
import { LlamaModel, type ModelOptions } from './llama.ts';
import type { LinearFormat, LinearOptions } from '../nn/linear.ts';
import { nf4WeightBytes } from '../quant/nf4_nodes.ts';
import { loadTokenizer } from '../io/tokenizer.ts';

export interface LoadOptions extends ModelOptions {
  device: Device;
}

/** A checkpoint whose tensors do not match its config.json: names the file and the tensor. */
export class CheckpointError extends ServelabError {
  override name = 'CheckpointError';
}

/** What a Linear's byte count depends on beyond its shape and format. */
export type LinearStorage = Pick<LinearOptions, 'blockSize' | 'doubleQuant' | 'blockSize2'>;

/** Bytes a [K, N] Linear holds in `format` (as the tracker will count them); int4 blocks default to 32, NF4/FP4 to 64. */
export function linearBytes(K: number, N: number, format: LinearFormat, storage: LinearStorage = {}): number {
  switch (format) {
    case 'fp32':
      return 4 * K * N;
    case 'fp16':
    case 'bf16':
      return 2 * K * N;
    case 'int8-tensor':
      return K * N + 4;
    case 'int8':
      return K * N + 4 * N;
    case 'llm.int8':
      return K * N + 4 * N + 2 * K * N;
    case 'int4': {
      const bs = storage.blockSize ?? 32;
      return Math.ceil(K / bs) * (bs / 2) * N + 4 * Math.ceil(K / bs) * N;
    }
    case 'nf4':
    case 'fp4':
      return nf4WeightBytes(K, N, { blockSize: storage.blockSize ?? 64, doubleQuant: storage.doubleQuant, blockSize2: storage.blockSize2 });
  }
}

/** What a model of `cfg` holds on the device in `format`: the linears in the format, embedding and norms in fp32. */
export function modelBytes(cfg: LlamaConfig, format: LinearFormat, storage: LinearStorage = {}): number {
  let total = 4 * cfg.maxPositions * cfg.headDim; // the rotary tables
  for (const [name, shape] of hfShapes(cfg)) {
    if (name === 'model.embed_tokens.weight') total += 4 * shape[0] * shape[1];
    if (shape.length === 1) total += 4 * shape[0];
    else if (name !== 'model.embed_tokens.weight') total += linearBytes(shape[1], shape[0], format, storage);
  }
  if (cfg.tieWordEmbeddings) total += linearBytes(cfg.hiddenSize, cfg.vocabSize, format, storage);
  return total;
}

/** Checks that `ck` holds exactly the float tensors `cfg` needs, with their shapes. */
function checkTensors(ck: TensorCollection, cfg: LlamaConfig): void {
  for (const [name, shape] of hfShapes(cfg)) {
    if (!ck.has(name)) throw new CheckpointError(`${ck.path}: tensor ${name} is missing (config.json describes ${cfg.numLayers} layers${cfg.tieWordEmbeddings ? ', tied embeddings' : ''})`);
    const t = ck.info(name);
    if (t.shape.join() !== shape.join()) throw new CheckpointError(`${t.file}: tensor ${name} is [${t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    if (t.dtype !== 'fp32' && t.dtype !== 'fp16' && t.dtype !== 'bf16') throw new CheckpointError(`${t.file}: tensor ${name} is ${t.safetensorsDtype}; weights must be F32, F16 or BF16`);
  }
}

function toFloat32(ck: TensorCollection, name: string): Float32Array {
  const t = ck.read(name);
  if (t.dtype === 'fp32') return t.data as Float32Array;
  return t.dtype === 'fp16' ? fp16ArrayToFp32(t.data as Uint16Array) : bf16ArrayToFp32(t.data as Uint16Array);
}

/**
 * Loads a Llama-family checkpoint folder onto `opts.device` with every Linear in `opts.format` (default fp32).
 * Refuses a checkpoint that cannot fit the device's budget before reading any weight; a failure part way frees
 * everything loaded.
 */
export async function loadModel(dir: string, opts: LoadOptions): Promise<LlamaModel> {
  const cfg = loadLlamaConfig(dir);
  const ck = openCheckpoint(dir);
  try {
    checkTensors(ck, cfg);
    const dev = opts.device;
    const format = opts.format ?? 'fp32';
    const need = modelBytes(cfg, format, opts.linear);
    if (!dev.memory.canAllocate(need)) throw new OutOfMemoryError(dev.name, need, dev.memory.live, dev.memory.budget!, 'weights');
    const tokenizer = existsSync(join(dir, 'tokenizer.json')) ? loadTokenizer(dir) : null;
    const model = await LlamaModel.fromWeights(dev, cfg, (name) => toFloat32(ck, name), opts);
    model.tokenizer = tokenizer;
    return model;
  } finally {
    ck.close();
  }
}

export interface SaveOptions {
  /** Stored dtype of every tensor; default 'bf16' (half the bytes of fp32, fp32's range). */
  dtype?: 'fp32' | 'fp16' | 'bf16';
  /** Written as tokenizer.json when given. */
  tokenizer?: object;
  /** safetensors metadata. */
  metadata?: Record<string, string>;
}

/** Writes config.json and model.safetensors (Hugging Face names and [out, in] layout) into `dir`. */
export function saveModel(dir: string, cfg: LlamaConfig, weights: ReadonlyMap<string, Float32Array>, opts: SaveOptions = {}): void {
  const dtype = opts.dtype ?? 'bf16';
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of hfShapes(cfg)) {
    const w = weights.get(name);
    if (!w) throw new CheckpointError(`saveModel: weight ${name} is missing`);
    const n = shape.reduce((a, b) => a * b, 1);
    if (w.length !== n) throw new CheckpointError(`saveModel: weight ${name} has ${w.length} values, [${shape.join(', ')}] needs ${n}`);
    tensors[name] = { dtype, shape, data: dtype === 'fp32' ? w : dtype === 'fp16' ? fp32ArrayToFp16(w) : fp32ArrayToBf16(w) };
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', ...opts.metadata });
  const torchDtype = ({ fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' } as const)[dtype];
  writeFileSync(join(dir, 'config.json'), JSON.stringify(toHfConfig(cfg, torchDtype), null, 2) + '\n');
  if (opts.tokenizer) writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(opts.tokenizer) + '\n');
}
