/**
 * The built-in model: a small Llama (4 layers, width 256, 4 query heads of 64 sharing 2 KV heads, SwiGLU width 768,
 * tied embeddings) over bytes, trained on Moby-Dick by `servelab train --preset builtin`, and committed under
 * models/builtin/ so that every lesson has a real model offline.
 */
import { fileURLToPath } from 'node:url';
import type { LlamaConfig } from './config.ts';
import type { TrainRecipe } from '../train/trainer.ts';
import { BYTE_BOS_ID, BYTE_EOS_ID, BYTE_VOCAB_SIZE } from '../io/byte_tokenizer.ts';

export const BUILTIN_CONFIG: LlamaConfig = {
  vocabSize: BYTE_VOCAB_SIZE,
  hiddenSize: 256,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 64,
  intermediateSize: 768,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 256,
  tieWordEmbeddings: true,
  bosTokenId: BYTE_BOS_ID,
  eosTokenId: BYTE_EOS_ID,
};

/** 800 steps of 16 x 256 tokens: 3.3M tokens, 2.8 passes over the training split, 19 minutes on two cores. */
export const BUILTIN_RECIPE: TrainRecipe = {
  model: BUILTIN_CONFIG,
  batch: 16,
  context: 256,
  steps: 800,
  lr: 3e-3,
  minLr: 3e-4,
  warmup: 50,
  weightDecay: 0,
  seed: 1234,
};

/** Where the committed checkpoint lives. */
export const BUILTIN_DIR = fileURLToPath(new URL('../../models/builtin/', import.meta.url));
