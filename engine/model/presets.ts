/** Shapes of published models and the size formulas serving starts from: parameters, weight bytes, KV bytes per token. */
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';

/**
 * OPT (Zhang et al. 2022) is not a Llama: multi-head attention, LayerNorm, a ReLU MLP of two biased linears, and
 * learned positions. Only what the size formulas need is kept.
 */
export interface OptShape {
  family: 'opt';
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** fc1's width (ffn_dim). */
  ffnSize: number;
  /** Learned positions: OPT's table has maxPositions + 2 rows (its first two are reserved, an offset kept from fairseq). */
  maxPositions: number;
  tieWordEmbeddings: true;
}

export type ModelShape = LlamaConfig | OptShape;

const isOpt = (c: ModelShape): c is OptShape => (c as OptShape).family === 'opt';

/** meta-llama/Llama-2-7b-hf config.json (Touvron et al. 2023b). */
export const LLAMA_2_7B: LlamaConfig = Object.freeze({
  vocabSize: 32000, hiddenSize: 4096, numLayers: 32, numHeads: 32, numKvHeads: 32, headDim: 128,
  intermediateSize: 11008, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositions: 4096, tieWordEmbeddings: false,
  bosTokenId: 1, eosTokenId: 2,
});

/** meta-llama/Llama-2-13b-hf; the same shape as the first LLaMA-13B (Touvron et al. 2023a) but for a 4096 context. */
export const LLAMA_2_13B: LlamaConfig = Object.freeze({
  vocabSize: 32000, hiddenSize: 5120, numLayers: 40, numHeads: 40, numKvHeads: 40, headDim: 128,
  intermediateSize: 13824, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositions: 4096, tieWordEmbeddings: false,
  bosTokenId: 1, eosTokenId: 2,
});

/** meta-llama/Meta-Llama-3-8B: grouped-query attention with 8 kv heads, a 128k vocabulary, rope_theta 500000. */
export const LLAMA_3_8B: LlamaConfig = Object.freeze({
  vocabSize: 128256, hiddenSize: 4096, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128,
  intermediateSize: 14336, rmsNormEps: 1e-5, ropeTheta: 500000, maxPositions: 8192, tieWordEmbeddings: false,
  bosTokenId: 128000, eosTokenId: 128001,
});

/** TinyLlama/TinyLlama-1.1B-Chat-v1.0 (Zhang et al. 2024): Llama 2's tokenizer, 4 kv heads. */
export const TINYLLAMA_1_1B: LlamaConfig = Object.freeze({
  vocabSize: 32000, hiddenSize: 2048, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64,
  intermediateSize: 5632, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositions: 2048, tieWordEmbeddings: false,
  bosTokenId: 1, eosTokenId: 2,
});

/** facebook/opt-13b: the model of the vLLM paper's memory figures (Kwon et al. 2023). */
export const OPT_13B: OptShape = Object.freeze({
  family: 'opt', vocabSize: 50272, hiddenSize: 5120, numLayers: 40, numHeads: 40, ffnSize: 20480,
  maxPositions: 2048, tieWordEmbeddings: true,
});

export const PRESETS: Readonly<Record<string, ModelShape>> = Object.freeze({
  'Llama-2-7B': LLAMA_2_7B,
  'Llama-2-13B': LLAMA_2_13B,
  'Llama-3-8B': LLAMA_3_8B,
  'TinyLlama-1.1B': TINYLLAMA_1_1B,
  'OPT-13B': OPT_13B,
});

/** The linears of one decoder layer as [out, in], the Hugging Face orientation. */
function layerLinears(c: ModelShape): [number, number][] {
  const H = c.hiddenSize;
  if (isOpt(c)) return [[H, H], [H, H], [H, H], [H, H], [c.ffnSize, H], [H, c.ffnSize]];
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const I = c.intermediateSize;
  return [[q, H], [kv, H], [kv, H], [H, q], [I, H], [I, H], [H, I]];
}

interface Split {
  /** Weights of the decoder layers' linears: what weight-only quantization (GPTQ, AWQ, bitsandbytes) converts. */
  linear: number;
  /** Their output rows, summed: one int8 scale each. */
  rows: number;
  /** Everything else: embeddings, the output head, norms, biases. */
  rest: number;
}

function split(c: ModelShape): Split {
  const lin = layerLinears(c);
  const H = c.hiddenSize;
  const linear = c.numLayers * lin.reduce((s, [o, i]) => s + o * i, 0);
  const rows = c.numLayers * lin.reduce((s, [o]) => s + o, 0);
  const head = c.tieWordEmbeddings ? 0 : c.vocabSize * H;
  let rest: number;
  if (isOpt(c)) {
    // Biases of the six linears, two LayerNorms (weight and bias) per layer, the final LayerNorm, learned positions.
    const perLayer = lin.reduce((s, [o]) => s + o, 0) + 4 * H;
    rest = c.vocabSize * H + (c.maxPositions + 2) * H + c.numLayers * perLayer + 2 * H + head;
  } else {
    rest = c.vocabSize * H + c.numLayers * 2 * H + H + head;
  }
  return { linear, rows, rest };
}

/** Every parameter: embeddings, each layer's linears and norms, the final norm, and the output head unless tied. */
export function parameterCount(cfg: ModelShape): number {
  const s = split(cfg);
  return s.linear + s.rest;
}

export type WeightFormat = 'fp32' | 'fp16' | 'bf16' | 'int8' | 'int4';
export const WEIGHT_FORMATS: readonly WeightFormat[] = Object.freeze(['fp32', 'fp16', 'bf16', 'int8', 'int4'] as const);

/**
 * Bytes of the weights stored in `format`. fp32/fp16/bf16 store every parameter so. int8 (vector-wise, as LLM.int8
 * stores weights) and int4 (blockwise, GPTQ/AWQ style) convert only the decoder layers' linears, the same set those
 * libraries convert by default: int8 as one byte a weight plus an fp32 scale per output row; int4 as half a byte a
 * weight plus an fp32 scale per block of `blockSize` along the input. Embeddings, head, norms and biases stay fp16.
 */
export function weightBytes(cfg: ModelShape, format: WeightFormat, blockSize = 32): number {
  const s = split(cfg);
  switch (format) {
    case 'fp32':
      return 4 * (s.linear + s.rest);
    case 'fp16':
    case 'bf16':
      return 2 * (s.linear + s.rest);
    case 'int8':
      return s.linear + 4 * s.rows + 2 * s.rest;
    case 'int4': {
      if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new ServelabError(`weightBytes: blockSize must be a positive integer, got ${blockSize}`);
      const blocks = cfg.numLayers * layerLinears(cfg).reduce((n, [o, i]) => n + o * Math.ceil(i / blockSize), 0);
      return Math.ceil(s.linear / 2) + 4 * blocks + 2 * s.rest;
    }
    default:
      throw new ServelabError(`weightBytes: unknown format ${JSON.stringify(format)}; valid: ${WEIGHT_FORMATS.join(', ')}`);
  }
}

/** One token's keys and values over every layer: 2 x layers x kvHeads x headDim x bytesPerElement (vLLM, SOSP 2023). */
export function kvBytesPerToken(cfg: ModelShape, bytesPerElement: number): number {
  if (!(bytesPerElement > 0)) throw new ServelabError(`kvBytesPerToken: bytesPerElement must be positive, got ${bytesPerElement}`);
  const kvWidth = isOpt(cfg) ? cfg.hiddenSize : cfg.numKvHeads * cfg.headDim;
  return 2 * cfg.numLayers * kvWidth * bytesPerElement;
}
