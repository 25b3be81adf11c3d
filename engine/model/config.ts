/**
 * The shape of a Llama-family decoder (Touvron et al. 2023): what config.json of a Hugging Face checkpoint says, in
 * the engine's names. Parsing and writing config.json is engine/model/hf_config.ts.
 */
export interface LlamaConfig {
  vocabSize: number;
  /** d_model. */
  hiddenSize: number;
  numLayers: number;
  /** Query heads. */
  numHeads: number;
  /** Key/value heads (grouped-query attention; numHeads for multi-head attention, 1 for multi-query). */
  numKvHeads: number;
  /** hiddenSize / numHeads unless config.json says head_dim. */
  headDim: number;
  /** The SwiGLU MLP's width. */
  intermediateSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** The longest sequence the model was trained for (max_position_embeddings). */
  maxPositions: number;
  /** The output head reuses the token embedding. */
  tieWordEmbeddings: boolean;
  bosTokenId?: number;
  eosTokenId?: number;
}

/** The projections of a decoder layer (attention q, k, v, o; SwiGLU gate, up, down), in graph order. */
export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
export type ProjectionName = (typeof PROJECTIONS)[number];

/** Hugging Face's names of a Llama checkpoint's tensors; every linear is [out, in]. */
export const HF_NAMES = {
  embedding: 'model.embed_tokens.weight',
  finalNorm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  layer: (i: number) => ({
    attnNorm: `model.layers.${i}.input_layernorm.weight`,
    q: `model.layers.${i}.self_attn.q_proj.weight`,
    k: `model.layers.${i}.self_attn.k_proj.weight`,
    v: `model.layers.${i}.self_attn.v_proj.weight`,
    o: `model.layers.${i}.self_attn.o_proj.weight`,
    mlpNorm: `model.layers.${i}.post_attention_layernorm.weight`,
    gate: `model.layers.${i}.mlp.gate_proj.weight`,
    up: `model.layers.${i}.mlp.up_proj.weight`,
    down: `model.layers.${i}.mlp.down_proj.weight`,
  }),
} as const;

/** Every tensor a checkpoint of `cfg` holds, by Hugging Face name, with its shape. */
export function hfShapes(cfg: LlamaConfig): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const m = new Map<string, number[]>([[HF_NAMES.embedding, [cfg.vocabSize, H]]]);
  for (let i = 0; i < cfg.numLayers; i++) {
    const n = HF_NAMES.layer(i);
    m.set(n.attnNorm, [H]).set(n.q, [q, H]).set(n.k, [kv, H]).set(n.v, [kv, H]).set(n.o, [H, q]);
    m.set(n.mlpNorm, [H]).set(n.gate, [I, H]).set(n.up, [I, H]).set(n.down, [H, I]);
  }
  m.set(HF_NAMES.finalNorm, [H]);
  if (!cfg.tieWordEmbeddings) m.set(HF_NAMES.lmHead, [cfg.vocabSize, H]);
  return m;
}
