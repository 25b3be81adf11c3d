/**
 * A tiny random byte-level Llama checkpoint folder (fp32, so the float64 reference reads the very weights the engine
 * loads), built so that it can never choose <|bos|> or <|eos|>: every generation runs to its limit.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveModel } from '../../engine/model/checkpoint.ts';
import { HF_NAMES, hfShapes, type LlamaConfig } from '../../engine/model/config.ts';
import { BYTE_BOS_ID, BYTE_EOS_ID, BYTE_VOCAB_SIZE, byteTokenizerJson } from '../../engine/io/byte_tokenizer.ts';
import { Rng } from '../../engine/train/rng.ts';

export const TINY_CONFIG: LlamaConfig = {
  vocabSize: BYTE_VOCAB_SIZE,
  hiddenSize: 32,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 16,
  intermediateSize: 64,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 512,
  tieWordEmbeddings: false,
  bosTokenId: BYTE_BOS_ID,
  eosTokenId: BYTE_EOS_ID,
};

export function tinyWeights(cfg = TINY_CONFIG, seed = 7): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const H = cfg.hiddenSize;
  const w = new Map<string, Float32Array>();
  for (const [name, shape] of hfShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, shape.length === 1 ? new Float32Array(n).fill(1) : Float32Array.from({ length: n }, () => rng.normal(0, 0.3)));
  }
  // Hidden unit 0 holds 4 in every embedding and no layer writes to it (row 0 of o_proj and down_proj is zero), so
  // after the final norm it is always positive; the head reads it alone for bos and eos, with weight -10.
  const emb = w.get(HF_NAMES.embedding)!;
  for (let v = 0; v < cfg.vocabSize; v++) emb[v * H] = 4;
  for (let l = 0; l < cfg.numLayers; l++) {
    const n = HF_NAMES.layer(l);
    w.get(n.o)!.fill(0, 0, cfg.numHeads * cfg.headDim);
    w.get(n.down)!.fill(0, 0, cfg.intermediateSize);
  }
  const head = w.get(HF_NAMES.lmHead)!;
  for (let v = 0; v < cfg.vocabSize; v++) {
    head.fill(0, v * H, v * H + 1);
    if (v === BYTE_BOS_ID || v === BYTE_EOS_ID) head.fill(0, v * H, (v + 1) * H).fill(-10, v * H, v * H + 1);
  }
  return w;
}

/** A fresh temporary folder holding the tiny model: config.json, model.safetensors (fp32), tokenizer.json. */
export function writeTinyModel(): { dir: string; cfg: LlamaConfig; weights: Map<string, Float32Array> } {
  const dir = mkdtempSync(join(tmpdir(), 'servelab-tiny-'));
  const weights = tinyWeights();
  saveModel(dir, TINY_CONFIG, weights, { dtype: 'fp32', tokenizer: byteTokenizerJson() });
  return { dir, cfg: TINY_CONFIG, weights };
}
