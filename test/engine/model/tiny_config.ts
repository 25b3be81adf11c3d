/** The tiny Llama shape the model tests share: vocab 64, width 32, 2 layers, 4 query heads of 8 sharing 2 KV heads. */
import type { LlamaConfig } from '../../../engine/model/config.ts';

export const TINY_LLAMA: LlamaConfig = Object.freeze({
  vocabSize: 64,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  intermediateSize: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 64,
  tieWordEmbeddings: false,
});
