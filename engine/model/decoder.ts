/**
 * The Llama decoder as one graph (Touvron et al. 2023): token embedding, pre-norm blocks of RMSNorm, rotary
 * grouped-query attention and a SwiGLU MLP with residuals, a final RMSNorm and the output head. Where the weights
 * come from (graph constants through `Linear` for serving, graph inputs for training) and how attention reads its
 * keys (a KV cache, or the whole causal sequence) are the caller's: this file is only the math.
 */
import type { Graph, Value } from '../graph/graph.ts';
import type { LlamaConfig } from './config.ts';

/** x [..., in] -> [..., out]. */
export type Projection = (x: Value) => Value;

export interface BlockWeights {
  attnNorm: Value;
  q: Projection;
  k: Projection;
  v: Projection;
  o: Projection;
  mlpNorm: Value;
  gate: Projection;
  up: Projection;
  down: Projection;
}

export interface DecoderWeights {
  /** [vocab, hidden]. */
  embedding: Value;
  layers: BlockWeights[];
  finalNorm: Value;
  head: Projection;
  /** Rotary angle tables [maxPositions, headDim / 2], in the activations' dtype (rotaryTables). */
  cos: Value;
  sin: Value;
}

/**
 * Attention of layer `layer`: q [B, S, Hq*D] and k, v [B, S, Hkv*D], already rotated -> [B, S, Hq*D]. A serving
 * graph attends through its KV cache (GroupQueryAttention), a training graph over the causal sequence.
 */
export type Attend = (layer: number, q: Value, k: Value, v: Value) => Value;

/** Rotary angle tables [maxPositions, headDim / 2], in the activations' dtype (rotaryTables). */
export interface Rotary {
  cos: Value;
  sin: Value;
}

/** tokens int32 [B, S] -> h [B, S, hidden]: the rows of the token embedding [vocab, hidden]. */
export function embedTokens(g: Graph, embedding: Value, tokens: Value): Value {
  return g.op('Gather', [embedding, tokens])[0];
}

/**
 * Decoder layer `layer` (pre-norm): h + attention(RMSNorm(h)) with rotary q and k, then + SwiGLU(RMSNorm(h)).
 * h [B, S, H], positions int32 [B, S] -> h [B, S, H].
 */
export function decoderBlock(g: Graph, cfg: LlamaConfig, p: BlockWeights, layer: number, h: Value, positions: Value, rotary: Rotary, attend: Attend): Value {
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const norm = (x: Value, scale: Value) => op('RMSNorm', [x, scale], { epsilon: cfg.rmsNormEps });
  const rope = (x: Value, heads: number) => op('RotaryEmbedding', [x, positions, rotary.cos, rotary.sin], { numHeads: heads });
  const n = norm(h, p.attnNorm);
  const q = rope(p.q(n), cfg.numHeads); //                                                 [B, S, Hq*D]
  const k = rope(p.k(n), cfg.numKvHeads); //                                               [B, S, Hkv*D]
  h = op('Add', [h, p.o(attend(layer, q, k, p.v(n)))]);
  const n2 = norm(h, p.mlpNorm);
  const swiglu = op('Mul', [op('SiLU', [p.gate(n2)]), p.up(n2)]); //                      [B, S, I]
  return op('Add', [h, p.down(swiglu)]);
}

/** The final RMSNorm and the output head: h [B, S, H] -> logits [B, S, vocab]. */
export function decoderHead(g: Graph, cfg: LlamaConfig, finalNorm: Value, head: Projection, h: Value): Value {
  return head(g.op('RMSNorm', [h, finalNorm], { epsilon: cfg.rmsNormEps })[0]);
}

/** tokens int32 [B, S], positions int32 [B, S] -> logits [B, S, vocab] (fp32). */
export function decoder(g: Graph, cfg: LlamaConfig, w: DecoderWeights, tokens: Value, positions: Value, attend: Attend): Value {
  let h = embedTokens(g, w.embedding, tokens); //                                          [B, S, H]
  w.layers.forEach((p, i) => {
    h = decoderBlock(g, cfg, p, i, h, positions, w, attend);
  });
  return decoderHead(g, cfg, w.finalNorm, w.head, h); //                                   [B, S, vocab]
}

/**
 * Causal attention over the whole sequence, no cache (training, and the full recomputation prefill+decode is checked
 * against): [B, S, H*D] -> [B, H, S, D], the Attention op with grouped kv heads, and back.
 */
export function causalAttention(g: Graph, cfg: LlamaConfig): Attend {
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const D = cfg.headDim;
  return (_layer, q, k, v) => {
    const [B, S] = q.shape;
    const heads = (x: Value, n: number) => op('Transpose', [op('Reshape', [x], { shape: [B, S, n, D] })], { perm: [0, 2, 1, 3] });
    const att = op('Attention', [heads(q, cfg.numHeads), heads(k, cfg.numKvHeads), heads(v, cfg.numKvHeads)], { causal: true });
    return op('Reshape', [op('Transpose', [att], { perm: [0, 2, 1, 3] })], { shape: [B, S, cfg.numHeads * D] });
  };
}
