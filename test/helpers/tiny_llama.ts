/** A Llama small enough to check by gradients in a test: 2 layers of width 32, 4 query heads sharing 2 kv heads. */
import type { LlamaConfig } from '../../engine/model/config.ts';

export const TINY_LLAMA: LlamaConfig = {
  vocabSize: 40,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  intermediateSize: 48,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 32,
  tieWordEmbeddings: true,
};
