/**
 * Training memory per method, as the literature counts it: bytes of weights, gradients and optimizer state for a model
 * of P parameters (T of them trainable adapters), with Adam. Full fine-tuning in fp32 costs 4 + 4 + 8 = 16 bytes per
 * parameter; mixed-precision Adam 2 + 2 + K with K = 12 (fp32 master, m and v: ZeRO, Rajbhandari et al. 2020, section
 * 3.1); LoRA (Hu et al. 2022) freezes the base, so only the adapters carry gradients and Adam state; QLoRA (Dettmers et
 * al. 2023) stores the frozen base in NF4 with double quantization, 4 + 8/64 + 32/(64 * 256) = 4.127 bits per parameter
 * (4.5 without: one fp32 absmax per 64 weights). Activations are NOT included: they depend on batch, sequence length
 * and checkpointing, not on P. Results are by the tracker's tags, so a lesson can put them beside
 * `dev.memory.liveByTag()` of a real AdamW.
 */
import { ServelabError } from '../errors.ts';
import type { BytesByTag } from '../memory/tracker.ts';

/** The 16-bit or 32-bit float types a trained or frozen tensor is kept in. */
export type FloatWidth = 'fp32' | 'fp16' | 'bf16';

export type TrainingMethod = 'full-fp32' | 'mixed-precision' | 'lora' | 'qlora';

export interface TrainingMemory extends Pick<BytesByTag, 'weights' | 'grads' | 'optimizer'> {
  method: TrainingMethod;
  /** weights + grads + optimizer. Activations excluded. */
  total: number;
  /** How the figure was made, for a table's caption. */
  formula: string;
}

/** Adam's optimizer state in bytes per trained parameter: m and v in fp32, plus an fp32 master for 16-bit weights. */
export const adamStateBytes = (dtype: FloatWidth): number => (dtype === 'fp32' ? 8 : 12);

const widthBytes = (dtype: FloatWidth): number => (dtype === 'fp32' ? 4 : 2);

function count(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new ServelabError(`memory formula: ${what} must be a non-negative integer count of parameters, got ${n}`);
  return n;
}

function width(what: string, d: string): FloatWidth {
  if (d !== 'fp32' && d !== 'fp16' && d !== 'bf16') throw new ServelabError(`memory formula: ${what} must be fp32, fp16 or bf16, got ${JSON.stringify(d)}`);
  return d;
}

const result = (method: TrainingMethod, weights: number, grads: number, optimizer: number, formula: string): TrainingMemory => ({
  method,
  weights,
  grads,
  optimizer,
  total: weights + grads + optimizer,
  formula: `${formula}; activations excluded`,
});

/** Every parameter trained in fp32 with Adam: 4 (weight) + 4 (gradient) + 8 (m, v) = 16 bytes per parameter. */
export function fullFineTuningFp32(params: number): TrainingMemory {
  const P = count('params', params);
  return result('full-fp32', 4 * P, 4 * P, 8 * P, '(4 + 4 + 8) bytes x P');
}

/**
 * Mixed-precision Adam (Micikevicius et al. 2018; ZeRO's accounting): 16-bit weights and gradients, fp32 master, m
 * and v: 2 + 2 + 12 = 16 bytes per parameter.
 */
export function mixedPrecisionAdam(params: number, dtype: 'fp16' | 'bf16' = 'bf16'): TrainingMemory {
  const P = count('params', params);
  width('dtype', dtype);
  return result('mixed-precision', 2 * P, 2 * P, 12 * P, '(2 + 2 + K) bytes x P, K = 12');
}

export interface LoraFormulaOptions {
  /** The frozen base's dtype; default fp32. */
  base?: FloatWidth;
  /** The adapters' dtype (16-bit adapters get fp32 masters); default fp32. Either way 16 bytes per trainable parameter. */
  adapters?: FloatWidth;
}

/** Bytes of T adapter parameters trained with Adam, by tag. */
function adapterBytes(T: number, dtype: FloatWidth) {
  return { weights: widthBytes(dtype) * T, grads: widthBytes(dtype) * T, optimizer: adamStateBytes(dtype) * T };
}

/** LoRA: a frozen base of P parameters (weights only: no gradient, no optimizer state) and T trained adapter parameters. */
export function loraMemory(params: number, trainable: number, opts: LoraFormulaOptions = {}): TrainingMemory {
  const P = count('params', params);
  const T = count('trainable', trainable);
  const base = width('base', opts.base ?? 'fp32');
  const a = adapterBytes(T, width('adapters', opts.adapters ?? 'fp32'));
  return result('lora', widthBytes(base) * P + a.weights, a.grads, a.optimizer, `${widthBytes(base)} bytes x P (frozen ${base} base) + 16 bytes x T (adapters)`);
}

export interface Nf4Storage {
  /** Quantize the fp32 absmax of each block to fp8 in blocks of `secondBlockSize`; default true. */
  doubleQuant?: boolean;
  /** Weights per absmax; default 64. */
  blockSize?: number;
  /** Absmaxes per fp32 second-level constant with double quantization; default 256. */
  secondBlockSize?: number;
}

/**
 * Bits per weight of NF4 storage: 4-bit codes plus the scale overhead, 32 / blockSize for an fp32 absmax, or with
 * double quantization 8 / blockSize (fp8 absmax) + 32 / (blockSize x secondBlockSize) (QLoRA, section 3): 4.127 and 4.5
 * bits at the paper's block sizes.
 */
export function nf4BitsPerParam(opts: Nf4Storage = {}): number {
  const b = opts.blockSize ?? 64;
  const b2 = opts.secondBlockSize ?? 256;
  for (const [name, v] of [['blockSize', b], ['secondBlockSize', b2]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new ServelabError(`memory formula: ${name} must be a positive integer, got ${v}`);
  }
  return (opts.doubleQuant ?? true) ? 4 + 8 / b + 32 / (b * b2) : 4 + 32 / b;
}

/** QLoRA: a frozen NF4 base of P parameters at nf4BitsPerParam bits each, and T trained adapter parameters. */
export function qloraMemory(params: number, trainable: number, opts: Nf4Storage & { adapters?: FloatWidth } = {}): TrainingMemory {
  const P = count('params', params);
  const T = count('trainable', trainable);
  const bits = nf4BitsPerParam(opts);
  const a = adapterBytes(T, width('adapters', opts.adapters ?? 'fp32'));
  return result('qlora', (bits / 8) * P + a.weights, a.grads, a.optimizer, `${bits} bits x P (NF4 base) + 16 bytes x T (adapters)`);
}

/** The four methods by name, for a table: T is ignored by the full-model methods. */
export function trainingMemory(method: TrainingMethod, params: number, trainable = 0): TrainingMemory {
  switch (method) {
    case 'full-fp32':
      return fullFineTuningFp32(params);
    case 'mixed-precision':
      return mixedPrecisionAdam(params);
    case 'lora':
      return loraMemory(params, trainable);
    case 'qlora':
      return qloraMemory(params, trainable);
    default:
      throw new ServelabError(`memory formula: unknown method ${JSON.stringify(method)}; expected full-fp32, mixed-precision, lora or qlora`);
  }
}
