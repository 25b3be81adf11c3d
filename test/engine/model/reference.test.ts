/**
 * The float64 reference decoder against facts derivable without it: zero layers leave RMSNorm(embedding) W^T,
 * causality, a tied head is an untied one holding the embedding, grouped-query attention is multi-head attention
 * with repeated kv weights, and rotary is a rotation (norms kept, attention sees only relative positions).
 * Both sides compute in float64, so agreement is to 1e-12.
 */
import { describe, expect, it } from 'vitest';
import { HF_NAMES, hfShapes, type LlamaConfig } from '../../../engine/model/config.ts';
import { ReferenceWeightError, referenceLogits, rotary } from '../../../engine/model/reference.ts';
import { Rng } from '../../../engine/train/rng.ts';

const TINY: LlamaConfig = {
  vocabSize: 16,
  hiddenSize: 8,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 4,
  intermediateSize: 12,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  maxPositions: 64,
  tieWordEmbeddings: false,
};

/** N(0, 0.5) weights for every tensor of cfg; norms N(1, 0.1) so they are not the identity. */
function randomWeights(cfg: LlamaConfig, seed: number): Map<string, Float32Array> {
  const r = new Rng(seed);
  const m = new Map<string, Float32Array>();
  for (const [name, shape] of hfShapes(cfg)) {
    const isNorm = shape.length === 1;
    m.set(name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r.normal(isNorm ? 1 : 0, isNorm ? 0.1 : 0.5)));
  }
  return m;
}

function expectClose(got: Float64Array, want: ArrayLike<number>, tol = 1e-12) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i])));
}

const TOKENS = [3, 1, 4, 1, 5, 9, 2, 6];

describe('referenceLogits', () => {
  it('with zero layer weights is RMSNorm(embedding) * w W_lm^T, by hand', () => {
    const w = randomWeights(TINY, 1);
    for (let l = 0; l < TINY.numLayers; l++) {
      const n = HF_NAMES.layer(l);
      for (const name of [n.q, n.k, n.v, n.o, n.gate, n.up, n.down]) w.get(name)!.fill(0);
      w.get(n.attnNorm)!.fill(1);
      w.get(n.mlpNorm)!.fill(1);
    }
    const E = w.get(HF_NAMES.embedding)!;
    const g = w.get(HF_NAMES.finalNorm)!;
    const W = w.get(HF_NAMES.lmHead)!;
    const H = TINY.hiddenSize;
    const want: number[] = [];
    for (const t of TOKENS) {
      const e = Array.from(E.subarray(t * H, (t + 1) * H));
      const rms = Math.sqrt(e.reduce((a, x) => a + x * x, 0) / H + TINY.rmsNormEps);
      const n = e.map((x, i) => (x / rms) * g[i]);
      for (let v = 0; v < TINY.vocabSize; v++) want.push(n.reduce((a, x, i) => a + x * W[v * H + i], 0));
    }
    expectClose(referenceLogits(TINY, w, TOKENS), want);
  });

  it('is causal: the logits at position i ignore every later token', () => {
    const w = randomWeights(TINY, 2);
    const a = referenceLogits(TINY, w, TOKENS);
    const b = referenceLogits(TINY, w, [...TOKENS.slice(0, 4), 15, 0, 15, 0]);
    const V = TINY.vocabSize;
    expectClose(b.subarray(0, 4 * V), a.subarray(0, 4 * V), 0);
    expect(Math.abs(b[4 * V] - a[4 * V])).toBeGreaterThan(1e-6);
    expectClose(referenceLogits(TINY, w, TOKENS.slice(0, 3)), a.subarray(0, 3 * V), 0);
  });

  it('a tied head equals an untied one holding the embedding', () => {
    const untied = randomWeights(TINY, 3);
    untied.set(HF_NAMES.lmHead, untied.get(HF_NAMES.embedding)!.slice());
    const tied = new Map(untied);
    tied.delete(HF_NAMES.lmHead);
    expectClose(referenceLogits({ ...TINY, tieWordEmbeddings: true }, tied, TOKENS), referenceLogits(TINY, untied, TOKENS), 0);
  });

  it('grouped-query attention is multi-head attention with the kv head repeated', () => {
    const gqa = randomWeights(TINY, 4);
    const mha = new Map(gqa);
    for (let l = 0; l < TINY.numLayers; l++) {
      const n = HF_NAMES.layer(l);
      for (const name of [n.k, n.v]) {
        const one = gqa.get(name)!; // [D, H]: the single kv head
        const two = new Float32Array(2 * one.length);
        two.set(one, 0);
        two.set(one, one.length);
        mha.set(name, two);
      }
    }
    expectClose(referenceLogits({ ...TINY, numKvHeads: 2 }, mha, TOKENS), referenceLogits(TINY, gqa, TOKENS));
  });

  it('sees only relative positions: shifting every position by 37 leaves the logits', () => {
    const w = randomWeights(TINY, 5);
    expectClose(referenceLogits(TINY, w, TOKENS, 37), referenceLogits(TINY, w, TOKENS), 1e-10);
  });

  it('names a missing or misshapen weight', () => {
    const w = randomWeights(TINY, 6);
    w.delete(HF_NAMES.layer(1).up);
    expect(() => referenceLogits(TINY, w, TOKENS)).toThrow(ReferenceWeightError);
    expect(() => referenceLogits(TINY, w, TOKENS)).toThrow(/model\.layers\.1\.mlp\.up_proj\.weight \[12, 8\] is missing/);
    const v = randomWeights(TINY, 6);
    v.set(HF_NAMES.finalNorm, new Float32Array(7));
    expect(() => referenceLogits(TINY, v, TOKENS)).toThrow(/model\.norm\.weight has 7 values/);
    expect(() => referenceLogits(TINY, randomWeights(TINY, 6), [16])).toThrow(/outside the vocabulary/);
  });
});

describe('rotary', () => {
  it('keeps each head norm and leaves position 0 alone (S = 2)', () => {
    const r = new Rng(7);
    const [S, heads, D] = [2, 2, 4];
    const q = Float64Array.from({ length: S * heads * D }, () => r.normal());
    const before = q.slice();
    rotary(q, S, heads, D, 10000);
    expectClose(q.subarray(0, heads * D), before.subarray(0, heads * D), 0);
    for (let s = 0; s < S; s++) {
      for (let h = 0; h < heads; h++) {
        const norm = (x: Float64Array) => Math.hypot(...x.subarray((s * heads + h) * D, (s * heads + h + 1) * D));
        expect(Math.abs(norm(q) - norm(before))).toBeLessThan(1e-14);
      }
    }
    // Position 1, pair (0, 2) turns by 1 radian: (x0 cos 1 - x2 sin 1, ..., x2 cos 1 + x0 sin 1).
    const [x0, x2] = [before[heads * D], before[heads * D + 2]];
    expect(q[heads * D]).toBeCloseTo(x0 * Math.cos(1) - x2 * Math.sin(1), 14);
    expect(q[heads * D + 2]).toBeCloseTo(x2 * Math.cos(1) + x0 * Math.sin(1), 14);
    // Pair (1, 3) turns by theta^(-2/4) = 0.01 radian.
    expect(q[heads * D + 1]).toBeCloseTo(before[heads * D + 1] * Math.cos(0.01) - before[heads * D + 3] * Math.sin(0.01), 14);
  });
});
