/**
 * LlamaModel on the engine against independent references: numpy's float64 forward pass of the two fixture
 * checkpoints (test/fixtures/generate_llama.py), and referenceLogits (plain-TypeScript float64, sharing no code with
 * the engine's graph) for a random model in every Linear format, on the cpu and reference backends.
 *
 * Tolerances, on logits:
 * - fixtures, fp32: |got - want| <= 1e-5 + 1e-5 |want| per logit. numpy's values are rounded to 7 significant
 *   digits (5e-7 relative); the engine sums in fp32 (2^-24 per op) over 2 layers of 32- to 64-term products.
 *   Measured worst: 1.0e-6 absolute on llama_tiny (|logits| <= 3.8), 8.1e-6 on llama_tiny_sharded, whose logits
 *   are about 5x larger (|logits| <= 27): 0.22 of the bound there, which the relative term scales with them.
 * - random model, normwise relative error ||got - ref|| / ||ref|| over all logits [S, V]; measured on cpu (the
 *   reference backend's within 1% of it but fp32's, 1.6e-7) and the bound:
 *     fp32      4e-7 -> 1e-5 (cpu), 1e-6 (reference backend, which sums in float64 and rounds per op)
 *     fp16    1.2e-3 -> 5e-3   (activations and weights rounded at 2^-11 in every product)
 *     bf16    9.4e-3 -> 3e-2   (2^-8)
 *     int8    2.8e-2 -> 0.1    (one step of absmax / 127 per weight and per activation)
 *     llm.int8 2.8e-2 -> 0.1   (no |x| >= 6 in this model, so as int8; with threshold 1: 8e-3, asserted < int8 / 2)
 *     int4      0.38 -> 0.6    (one step of absmax / 7 per weight: 18x int8's, through 2 layers and the head)
 *   int4 is weight-only (x stays fp32), so it is also checked against referenceLogits over the same weights rounded
 *   to 4 bits by hand (blocks of 32 along `in`, scale absmax / 7, round half to even): 3.5e-7 -> 1e-5.
 *   Deliberate bugs measured against the same reference: layer 1's q_proj transposed 0.35, o_proj 0.75, rotary
 *   pairing dims (2i, 2i+1) instead of (i, i + D/2) 0.55, ropeTheta 500 instead of 10000 0.28: every one past the
 *   largest bound but int4's (0.1), so each format's check would catch them; int4's tight check catches them too.
 * - prefill then decode, and batched rows, against full single-sequence prefill (fp32 both): 1e-5 normwise per row
 *   on cpu (measured 4.7e-7; a padded batched prefill is bit-identical to the single run), 1e-6 on reference (0).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomWeights, TINY_LLAMA } from './tiny_config.ts';
import { createDevice, LINEAR_FORMATS, type Device, type LinearFormat } from '../../../engine/index.ts';
import { HF_NAMES, hfShapes, type LlamaConfig } from '../../../engine/model/config.ts';
import { LlamaModel, transpose2d, type ModelOptions } from '../../../engine/model/llama.ts';
import { loadModel, modelBytes } from '../../../engine/model/checkpoint.ts';
import { referenceLogits } from '../../../engine/model/reference.ts';
import { relError } from '../../helpers/rel_error.ts';

const CFG: LlamaConfig = TINY_LLAMA;
const VARIANTS = { untied: CFG, tied: { ...CFG, tieWordEmbeddings: true } };

const BOUND: Record<LinearFormat, number> = { fp32: 1e-5, fp16: 5e-3, bf16: 3e-2, 'int8-tensor': 0.2, int8: 0.1, 'llm.int8': 0.1, int4: 0.6, nf4: 0.6, fp4: 0.6 };
const TOKENS = [3, 17, 42, 5, 63, 0, 28, 9, 11, 50, 7, 33];

async function build(dev: Device, cfg: LlamaConfig, w: ReadonlyMap<string, Float32Array>, opts: ModelOptions = {}): Promise<LlamaModel> {
  return LlamaModel.fromWeights(dev, cfg, (name) => w.get(name)!, opts);
}

/** Logits [S, V] at every position of one sequence, from a fresh cache. */
async function prefillAll(m: LlamaModel, tokens: readonly number[]): Promise<Float32Array> {
  const cache = await m.createCache(1, tokens.length);
  try {
    const { logits } = await m.prefill([tokens], cache, { all: true });
    expect(logits.shape).toEqual([1, tokens.length, m.cfg.vocabSize]);
    const z = logits.toFloat32();
    logits.dispose();
    return z;
  } finally {
    cache.dispose();
  }
}

/** The same checkpoint rounded to int4 as MatMulNBits stores it: per output row, blocks of `bs` along `in`. */
function roundInt4(w: Float32Array, out: number, inF: number, bs = 32): Float32Array {
  const halfEven = (v: number) => (Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
  const r = new Float32Array(w.length);
  for (let o = 0; o < out; o++) {
    for (let b = o * inF; b < (o + 1) * inF; b += bs) {
      let amax = 0;
      for (let j = 0; j < bs; j++) amax = Math.max(amax, Math.abs(w[b + j]));
      const s = Math.fround(amax / 7);
      for (let j = 0; j < bs; j++) r[b + j] = halfEven(Math.fround(w[b + j] / s)) * s;
    }
  }
  return r;
}

let cpu: Device;
let refDev: Device;
beforeAll(async () => {
  cpu = await createDevice('cpu');
  refDev = await createDevice('reference');
});
afterAll(async () => {
  await cpu.dispose();
  await refDev.dispose();
});

interface Expected {
  tied: boolean;
  sequences: { text: string; ids: number[]; logits: number[][] }[];
}

describe('loadModel on the numpy fixtures (fp32, cpu)', () => {
  for (const name of ['llama_tiny', 'llama_tiny_sharded']) {
    it(`${name}: prefill logits at every position match numpy's float64 forward pass`, async () => {
      const dir = new URL(`../../fixtures/${name}/`, import.meta.url).pathname;
      const expected: Expected = JSON.parse(readFileSync(`${dir}expected.json`, 'utf8'));
      const model = await loadModel(dir, { device: cpu, format: 'fp32' });
      try {
        expect(model.cfg.tieWordEmbeddings).toBe(expected.tied);
        expect(model.tokenizer).not.toBeNull();
        expect(expected.sequences.length).toBeGreaterThan(0);
        for (const seq of expected.sequences) {
          const got = await prefillAll(model, seq.ids);
          const want = seq.logits.flat();
          expect(got.length).toBe(want.length);
          let worst = 0;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1e-5 + 1e-5 * Math.abs(want[i])));
          expect(worst, `"${seq.text}": worst |err| / (1e-5 + 1e-5 |want|)`).toBeLessThanOrEqual(1);
        }
      } finally {
        model.dispose();
      }
    });
  }
});

for (const [kind, fp32Bound] of [['cpu', BOUND.fp32], ['reference', 1e-6]] as const) {
  describe(`a random model on ${kind} against referenceLogits, every format`, () => {
    const dev = () => (kind === 'cpu' ? cpu : refDev);
    for (const [variant, cfg] of Object.entries(VARIANTS)) {
      const w = randomWeights(cfg, 7);
      const ref = referenceLogits(cfg, w, TOKENS);
      for (const format of LINEAR_FORMATS) {
        const bound = format === 'fp32' ? fp32Bound : BOUND[format];
        it(`${variant} head, ${format}: normwise error <= ${bound}`, async () => {
          const m = await build(dev(), cfg, w, { format });
          try {
            expect(m.format).toBe(format);
            expect(relError(await prefillAll(m, TOKENS), ref)).toBeLessThanOrEqual(bound);
          } finally {
            m.dispose();
          }
        });
      }

      it(`${variant} head, int4 equals the reference over the same weights rounded to 4 bits (1e-5)`, async () => {
        const q = new Map(w);
        for (const [name, shape] of hfShapes(cfg)) if (shape.length === 2 && name !== HF_NAMES.embedding) q.set(name, roundInt4(w.get(name)!, shape[0], shape[1]));
        // A tied head is a Linear of its own in the format; the embedding lookup stays fp32.
        if (cfg.tieWordEmbeddings) q.set(HF_NAMES.lmHead, roundInt4(w.get(HF_NAMES.embedding)!, cfg.vocabSize, cfg.hiddenSize));
        const want = referenceLogits({ ...cfg, tieWordEmbeddings: false }, q, TOKENS);
        const m = await build(dev(), cfg, w, { format: 'int4' });
        try {
          const got = await prefillAll(m, TOKENS);
          expect(relError(got, want)).toBeLessThanOrEqual(1e-5);
          // Rounding to 4 bits is most of int4's error against the unrounded model.
          expect(relError(got, ref)).toBeGreaterThan(0.1);
        } finally {
          m.dispose();
        }
      });
    }

    it('llm.int8 with threshold 1 keeps the outlier columns in fp16: under half of int8 error', async () => {
      const w = randomWeights(CFG, 7);
      const ref = referenceLogits(CFG, w, TOKENS);
      const err = async (opts: ModelOptions) => {
        const m = await build(dev(), CFG, w, opts);
        try {
          return relError(await prefillAll(m, TOKENS), ref);
        } finally {
          m.dispose();
        }
      };
      const int8 = await err({ format: 'int8' });
      const outliers = await err({ format: 'llm.int8', linear: { threshold: 1 } });
      expect(outliers).toBeLessThan(int8 / 2);
      expect(outliers).toBeGreaterThan(BOUND.fp16 / 10); // still int8 on the columns below 1
    });
  });
}

describe('the fp32 bound catches a wrong layout or a wrong rotary', () => {
  const w = randomWeights(CFG, 7);
  const ref = referenceLogits(CFG, w, TOKENS);
  const largest = Math.max(...LINEAR_FORMATS.filter((f) => f !== 'int4' && f !== 'nf4' && f !== 'fp4').map((f) => BOUND[f]));

  async function errorWith(change: (w: Map<string, Float32Array>) => void): Promise<number> {
    const w2 = new Map(w);
    change(w2);
    const m = await build(cpu, CFG, w2);
    try {
      return relError(await prefillAll(m, TOKENS), ref);
    } finally {
      m.dispose();
    }
  }

  it('an unchanged model is within the fp32 bound (the control)', async () => {
    expect(await errorWith(() => {})).toBeLessThanOrEqual(BOUND.fp32);
  });

  for (const p of ['q', 'o'] as const) {
    it(`layer 1's ${p}_proj read transposed ([in, out] taken as [out, in]) exceeds every bound but int4's`, async () => {
      const name = HF_NAMES.layer(1)[p];
      expect(await errorWith((m) => m.set(name, transpose2d(w.get(name)!, CFG.hiddenSize, CFG.hiddenSize)))).toBeGreaterThan(largest);
    });
  }

  it("rotary pairing dims (2i, 2i+1) instead of (i, i + D/2) exceeds every bound but int4's", async () => {
    // Permuting q's and k's rows in each head by the same perm leaves q.k unchanged except for which dims rotary
    // pairs: rotate_half over the permuted rows is the interleaved (GPT-J) rotary over the original ones.
    const D = CFG.headDim;
    const perm = [...Array.from({ length: D / 2 }, (_, i) => 2 * i), ...Array.from({ length: D / 2 }, (_, i) => 2 * i + 1)];
    const H = CFG.hiddenSize;
    const err = await errorWith((m) => {
      for (let l = 0; l < CFG.numLayers; l++) {
        for (const [p, heads] of [['q', CFG.numHeads], ['k', CFG.numKvHeads]] as const) {
          const name = HF_NAMES.layer(l)[p];
          const src = w.get(name)!;
          const out = new Float32Array(src.length);
          for (let h = 0; h < heads; h++) for (let d = 0; d < D; d++) out.set(src.subarray((h * D + perm[d]) * H, (h * D + perm[d] + 1) * H), (h * D + d) * H);
          m.set(name, out);
        }
      }
    });
    expect(err).toBeGreaterThan(largest);
  });

  it("a model built with ropeTheta 500 instead of 10000 exceeds every bound but int4's", async () => {
    const m = await build(cpu, { ...CFG, ropeTheta: 500 }, w);
    try {
      expect(relError(await prefillAll(m, TOKENS), ref)).toBeGreaterThan(largest);
    } finally {
      m.dispose();
    }
  });
});

describe('prefill then decode against the full prefill (fp32)', () => {
  for (const [kind, tol] of [['cpu', 1e-5], ['reference', 1e-6]] as const) {
    it(`${kind}, batch 1: a 5-token prefill then 7 decode steps give each position's logits`, async () => {
      const m = await build(kind === 'cpu' ? cpu : refDev, CFG, randomWeights(CFG, 11));
      const V = CFG.vocabSize;
      try {
        const full = await prefillAll(m, TOKENS);
        const cache = await m.createCache(1, 16);
        try {
          const { logits } = await m.prefill([TOKENS.slice(0, 5)], cache, { all: true });
          expect(relError(logits.toFloat32(), full.subarray(0, 5 * V))).toBeLessThanOrEqual(tol);
          logits.dispose();
          for (let i = 5; i < TOKENS.length; i++) {
            const step = await m.decode([TOKENS[i]], cache);
            expect(step.logits.shape).toEqual([1, 1, V]);
            expect(relError(step.logits.toFloat32(), full.subarray(i * V, (i + 1) * V)), `position ${i}`).toBeLessThanOrEqual(tol);
            step.logits.dispose();
          }
          expect(Array.from(cache.lengths)).toEqual([TOKENS.length]);
        } finally {
          cache.dispose();
        }
      } finally {
        m.dispose();
      }
    });
  }

  it('a batch of 3 right-padded prompts (5, 2, 8 tokens) decoded together: each row is its own single run', async () => {
    const w = randomWeights(CFG, 12);
    const m = await build(cpu, CFG, w);
    const V = CFG.vocabSize;
    const prompts = [[4, 8, 15, 16, 23], [42, 1], [9, 9, 2, 60, 31, 7, 7, 0]];
    const next = [[5, 6, 7, 8, 9, 10], [61, 62, 63, 0, 1, 2], [20, 30, 40, 50, 60, 3]]; // one token per row per step
    try {
      const solo = await Promise.all(prompts.map(async (p, b) => prefillAll(m, [...p, ...next[b]])));
      // referenceLogits anchors the single runs themselves.
      prompts.forEach((p, b) => expect(relError(solo[b], referenceLogits(CFG, w, [...p, ...next[b]]))).toBeLessThanOrEqual(BOUND.fp32));
      const cache = await m.createCache(3, 16);
      try {
        const { logits } = await m.prefill(prompts, cache);
        expect(logits.shape).toEqual([3, 1, V]);
        const z = logits.toFloat32();
        logits.dispose();
        prompts.forEach((p, b) => {
          const at = p.length - 1;
          expect(relError(z.subarray(b * V, (b + 1) * V), solo[b].subarray(at * V, (at + 1) * V)), `row ${b} prefill`).toBeLessThanOrEqual(1e-5);
        });
        expect(Array.from(cache.lengths)).toEqual([5, 2, 8]);
        for (let s = 0; s < 6; s++) {
          const step = await m.decode(next.map((n) => n[s]), cache);
          const y = step.logits.toFloat32();
          step.logits.dispose();
          prompts.forEach((p, b) => {
            const at = p.length + s;
            expect(relError(y.subarray(b * V, (b + 1) * V), solo[b].subarray(at * V, (at + 1) * V)), `row ${b} step ${s}`).toBeLessThanOrEqual(1e-5);
          });
        }
        expect(Array.from(cache.lengths)).toEqual([11, 8, 14]);
      } finally {
        cache.dispose();
      }
    } finally {
      m.dispose();
    }
  });
});

describe('sessions', () => {
  it('100 decode steps, a prefill and an all-positions prefill compile 3 sessions in all', async () => {
    const cfg = { ...CFG, maxPositions: 128 };
    const w = randomWeights(cfg, 13);
    const dev = await createDevice('cpu');
    const m = await build(dev, cfg, w);
    try {
      const created = () => dev.stats().sessionsCreated;
      const before = created();
      const seq = [1, 2, 3, 4];
      const cache = await m.createCache(1, 110);
      let last: Float32Array;
      try {
        const { logits } = await m.prefill([seq], cache);
        logits.dispose();
        expect(created() - before).toBe(1);
        for (let i = 0; i < 100; i++) {
          const t = (7 * i + 3) % cfg.vocabSize;
          seq.push(t);
          const step = await m.decode([t], cache);
          last = step.logits.toFloat32();
          step.logits.dispose();
        }
        expect(created() - before).toBe(2);
      } finally {
        cache.dispose();
      }
      // The 100th step still computes the right thing: the reference over the whole 104-token sequence.
      const ref = referenceLogits(cfg, w, seq);
      const V = cfg.vocabSize;
      expect(relError(last!, ref.subarray((seq.length - 1) * V))).toBeLessThanOrEqual(BOUND.fp32);

      // Other batch sizes and lengths reuse the same three sessions: shapes are symbols.
      const c2 = await m.createCache(2, 20);
      try {
        for (const all of [true, false]) {
          const { logits } = await m.prefill([[5, 6, 7], [8]], c2, { all });
          logits.dispose();
        }
        const step = await m.decode([9, 10], c2);
        step.logits.dispose();
      } finally {
        c2.dispose();
      }
      expect(created() - before).toBe(3);
    } finally {
      m.dispose();
      await dev.dispose();
    }
  });
});

describe('memory', () => {
  it("a KV cache holds 2 x layers x batch x kvHeads x maxSeq x headDim x 4 bytes, tagged 'kv', through steps and dispose", async () => {
    const m = await build(cpu, CFG, randomWeights(CFG, 14));
    const kv = () => cpu.memory.snapshot().byTag.kv;
    const before = kv();
    try {
      const [B, maxSeq] = [3, 20];
      const want = 2 * CFG.numLayers * B * CFG.numKvHeads * maxSeq * CFG.headDim * 4;
      expect(want).toBe(15360);
      const cache = await m.createCache(B, maxSeq);
      expect(cache.bytes).toBe(want);
      expect(kv() - before).toBe(want);
      const { logits } = await m.prefill([[1, 2], [3], [4, 5, 6]], cache);
      logits.dispose();
      const step = await m.decode([7, 8, 9], cache);
      step.logits.dispose();
      expect(cache.bytes).toBe(want);
      expect(kv() - before).toBe(want);
      cache.dispose();
      expect(kv()).toBe(before);
    } finally {
      m.dispose();
    }
  });

  for (const [variant, cfg] of Object.entries(VARIANTS)) {
    it(`${variant} head: model.bytes().total equals modelBytes(cfg, format) and the tracker's weights, every format`, async () => {
      const w = randomWeights(cfg, 15);
      for (const format of LINEAR_FORMATS) {
        const weightsBefore = cpu.memory.snapshot().byTag.weights;
        const m = await build(cpu, cfg, w, { format });
        try {
          expect(m.bytes().total, format).toBe(modelBytes(cfg, format));
          expect(cpu.memory.snapshot().byTag.weights - weightsBefore, format).toBe(m.bytes().total);
        } finally {
          m.dispose();
        }
        expect(cpu.memory.snapshot().byTag.weights, `${format} after dispose`).toBe(weightsBefore);
      }
    });
  }
});

describe('linearInputs: what enters each projection', () => {
  it("probes one input per distinct site, the first equal to RMSNorm of the embedding, after any other step's graph", async () => {
    const w = randomWeights(CFG, 3);
    const m = await build(cpu, CFG, w);
    // A decode step first: building another graph must not disturb the probe's bookkeeping.
    const cache = await m.createCache(1, 16);
    await m.prefill([[1, 2, 3]], cache);
    await m.decode([4], cache);
    cache.dispose();
    const prompts = [[5, 9, 2, 7], [1, 1, 0, 63]];
    const sites = await m.linearInputs(prompts);
    // Per layer: q/k/v share one input, then o, gate/up, down; then the head.
    expect(sites.map((s) => s.linears.join(','))).toEqual([
      'layers.0.q,layers.0.k,layers.0.v', 'layers.0.o', 'layers.0.gate,layers.0.up', 'layers.0.down',
      'layers.1.q,layers.1.k,layers.1.v', 'layers.1.o', 'layers.1.gate,layers.1.up', 'layers.1.down',
      'head',
    ]);
    expect(sites[3].x.shape).toEqual([2, 4, CFG.intermediateSize]);
    // The first site is RMSNorm(embedding[token]) * attnNorm, computed here in float64.
    const H = CFG.hiddenSize;
    const emb = w.get(HF_NAMES.embedding)!;
    const norm = w.get(HF_NAMES.layer(0).attnNorm)!;
    const got = sites[0].x.toFloat32();
    prompts.flat().forEach((t, r) => {
      const row = emb.subarray(t * H, (t + 1) * H);
      const rms = Math.sqrt(row.reduce((s, v) => s + v * v, 0) / H + CFG.rmsNormEps);
      for (let i = 0; i < H; i++) expect(Math.abs(got[r * H + i] - (row[i] / rms) * norm[i])).toBeLessThan(1e-5);
    });
    for (const s of sites) s.x.dispose();
    await expect(m.linearInputs([[1, 2], [3]])).rejects.toThrow(/one length/);
    m.dispose();
  });
});
