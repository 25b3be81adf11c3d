/**
 * A Llama decoder's forward pass in plain float64 loops (Hugging Face LlamaForCausalLM, Touvron et al. 2023): the
 * oracle the engine's model is checked against, sharing none of its code. Weights are read by Hugging Face name in
 * Hugging Face layout (every linear [out, in], y = x W^T).
 */
import { ServelabError } from '../errors.ts';
import { HF_NAMES, hfShapes, type LlamaConfig } from './config.ts';

/** A weight missing from the map, or of the wrong size for the config. */
export class ReferenceWeightError extends ServelabError {
  override name = 'ReferenceWeightError';
}

type Weights = ReadonlyMap<string, Float32Array>;

/** x [S, inDim] -> x W^T [S, outDim], W [outDim, inDim]. */
function linear(x: Float64Array, S: number, inDim: number, W: Float32Array, outDim: number): Float64Array {
  const y = new Float64Array(S * outDim);
  for (let s = 0; s < S; s++) {
    for (let o = 0; o < outDim; o++) {
      let acc = 0;
      for (let i = 0; i < inDim; i++) acc += x[s * inDim + i] * W[o * inDim + i];
      y[s * outDim + o] = acc;
    }
  }
  return y;
}

/** RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * w, per row of x [S, H]. */
export function rmsNorm(x: Float64Array, S: number, H: number, w: Float32Array, eps: number): Float64Array {
  const y = new Float64Array(S * H);
  for (let s = 0; s < S; s++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[s * H + i] ** 2;
    const r = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[s * H + i] = x[s * H + i] * r * w[i];
  }
  return y;
}

/**
 * Rotary position embedding (Su et al. 2021) in place on x [S, heads * D], Hugging Face's rotate_half pairing:
 * dims i and i + D/2 turn by angle p * theta^(-2i/D), p = startPosition + s.
 */
export function rotary(x: Float64Array, S: number, heads: number, D: number, theta: number, startPosition = 0): void {
  const half = D / 2;
  for (let s = 0; s < S; s++) {
    for (let i = 0; i < half; i++) {
      const angle = (startPosition + s) * theta ** ((-2 * i) / D);
      const c = Math.cos(angle);
      const n = Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const at = (s * heads + h) * D + i;
        const x1 = x[at];
        const x2 = x[at + half];
        x[at] = x1 * c - x2 * n;
        x[at + half] = x2 * c + x1 * n;
      }
    }
  }
}

/** Causal grouped-query attention: q [S, Hq*D], k, v [S, Hkv*D] -> [S, Hq*D]; query head h reads kv head h / (Hq/Hkv). */
function attention(q: Float64Array, k: Float64Array, v: Float64Array, S: number, Hq: number, Hkv: number, D: number): Float64Array {
  const out = new Float64Array(S * Hq * D);
  const group = Hq / Hkv;
  const scale = 1 / Math.sqrt(D);
  const scores = new Float64Array(S);
  for (let h = 0; h < Hq; h++) {
    const kvh = Math.floor(h / group);
    for (let i = 0; i < S; i++) {
      // Softmax over keys 0..i only: position i never sees a later token.
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(i * Hq + h) * D + d] * k[(j * Hkv + kvh) * D + d];
        scores[j] = dot * scale;
        max = Math.max(max, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j <= i; j++) sum += scores[j] = Math.exp(scores[j] - max);
      for (let j = 0; j <= i; j++) {
        const p = scores[j] / sum;
        for (let d = 0; d < D; d++) out[(i * Hq + h) * D + d] += p * v[(j * Hkv + kvh) * D + d];
      }
    }
  }
  return out;
}

/** Every weight of `cfg`, checked for presence and size; a tied head is the embedding. */
function load(cfg: LlamaConfig, weights: Weights): (name: string) => Float32Array {
  for (const [name, shape] of hfShapes(cfg)) {
    const w = weights.get(name);
    const n = shape.reduce((a, b) => a * b, 1);
    if (!w) throw new ReferenceWeightError(`referenceLogits: weight ${name} [${shape.join(', ')}] is missing`);
    if (w.length !== n) throw new ReferenceWeightError(`referenceLogits: weight ${name} has ${w.length} values, expected [${shape.join(', ')}] = ${n}`);
  }
  return (name) => {
    if (name === HF_NAMES.lmHead && cfg.tieWordEmbeddings) return weights.get(HF_NAMES.embedding)!;
    return weights.get(name)!;
  };
}

/** Logits [S, vocab] (row-major) of `tokens`, the first at position `startPosition`. */
export function referenceLogits(cfg: LlamaConfig, weights: Weights, tokens: readonly number[], startPosition = 0): Float64Array {
  const { hiddenSize: H, numHeads: Hq, numKvHeads: Hkv, headDim: D, intermediateSize: I, vocabSize: V } = cfg;
  const eps = cfg.rmsNormEps;
  if (Hq % Hkv !== 0 || D % 2 !== 0) throw new ServelabError(`referenceLogits: need numHeads % numKvHeads = 0 and an even headDim (${Hq}, ${Hkv}, ${D})`);
  const S = tokens.length;
  const w = load(cfg, weights);

  const embed = w(HF_NAMES.embedding);
  const h = new Float64Array(S * H); // [S, H]
  tokens.forEach((t, s) => {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new ServelabError(`referenceLogits: token ${t} at ${s} is outside the vocabulary [0, ${V})`);
    for (let i = 0; i < H; i++) h[s * H + i] = embed[t * H + i];
  });

  for (let l = 0; l < cfg.numLayers; l++) {
    const n = HF_NAMES.layer(l);
    const x = rmsNorm(h, S, H, w(n.attnNorm), eps);
    const q = linear(x, S, H, w(n.q), Hq * D); // [S, Hq*D]
    const k = linear(x, S, H, w(n.k), Hkv * D); // [S, Hkv*D]
    const v = linear(x, S, H, w(n.v), Hkv * D); // [S, Hkv*D]
    rotary(q, S, Hq, D, cfg.ropeTheta, startPosition);
    rotary(k, S, Hkv, D, cfg.ropeTheta, startPosition);
    const a = linear(attention(q, k, v, S, Hq, Hkv, D), S, Hq * D, w(n.o), H);
    for (let i = 0; i < S * H; i++) h[i] += a[i];

    // SwiGLU (Shazeer 2020): down(silu(gate x) * up x).
    const x2 = rmsNorm(h, S, H, w(n.mlpNorm), eps);
    const g = linear(x2, S, H, w(n.gate), I); // [S, I]
    const u = linear(x2, S, H, w(n.up), I); // [S, I]
    for (let i = 0; i < S * I; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    const m = linear(g, S, I, w(n.down), H);
    for (let i = 0; i < S * H; i++) h[i] += m[i];
  }

  return linear(rmsNorm(h, S, H, w(HF_NAMES.finalNorm), eps), S, H, w(HF_NAMES.lmHead), V); // [S, V]
}
