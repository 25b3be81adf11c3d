/** The tiny Llama shape the model tests share: vocab 64, width 32, 2 layers, 4 query heads of 8 sharing 2 KV heads. */
import { hfShapes, type LlamaConfig } from '../../../engine/model/config.ts';
import { Rng } from '../../../engine/train/rng.ts';

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

/** Linears N(0, 1/in) so activations keep unit scale and attention is far from uniform; norms N(1, 0.1). */
export function randomWeights(cfg: LlamaConfig, seed: number): Map<string, Float32Array> {
  const r = new Rng(seed);
  const m = new Map<string, Float32Array>();
  for (const [name, shape] of hfShapes(cfg)) {
    const norm = shape.length === 1;
    const std = norm ? 0.1 : 1 / Math.sqrt(shape[1]);
    m.set(name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r.normal(norm ? 1 : 0, std)));
  }
  return m;
}
