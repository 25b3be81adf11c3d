/**
 * LoRA adapters (engine/train/lora.ts) and the training graph's adapter seam (engine/train/lm_params.ts) on the tiny
 * Llama: counts against the model's own shapes, PEFT's initializations, the base model's loss exactly at B = 0,
 * gradients of A and B against central differences and against the chain rule through the merged weight, merged and
 * unmerged serving against the float64 reference, and every refused input.
 *
 * Tolerances:
 * - B = 0: the adapter path adds exactly 0 (0 * finite is 0, x + 0 is x), so the loss is bit-identical.
 * - gradients vs central differences on the reference backend (each op in float64, rounded once to fp32), h = 1e-2:
 *   |analytic - numeric| <= 1e-4 + 1e-2 max(|analytic|, |numeric|) + ulp(loss) / 2h, the rule of gradcheck.ts;
 *   the loss is a smooth function of A and B, and h = 1e-2 keeps its fp32 rounding (2.4e-5 here) small.
 * - gradients vs the chain rule dL/dA = s G B^T, dL/dB = s A^T G with G = dL/dW' of full fine-tuning at W' = W + sAB:
 *   two fp32 graphs summing in other orders, normwise 1e-4 (measured 1.4e-6 to 1.2e-5 over the 14 linears' A and B).
 * - merged vs unmerged serving and both vs referenceLogits of the merged weights (float64): normwise 1e-5, the fp32
 *   bound of test/engine/model/llama.test.ts (measured 7e-7 and 8e-7, and 8e-7 between the two).
 * - unmerge: |W'' - W| <= 2^-23 |W'| per element. merge rounds W + d to fp32 (an error e of at most 2^-24 |W'|),
 *   unmerge rounds W + e, whose nearest fp32 lies at most |e| from it: 2|e| in all.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomWeights, TINY_LLAMA } from '../model/tiny_config.ts';
import { createDevice, type Device, type Tensor } from '../../../engine/index.ts';
import { HF_NAMES, hfShapes, type LlamaConfig } from '../../../engine/model/config.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import { referenceLogits } from '../../../engine/model/reference.ts';
import { fromHfWeights, lossGraph, paramSpecs, trainingGraph } from '../../../engine/train/lm_params.ts';
import { heldOutLoss } from '../../../engine/train/trainer.ts';
import { LORA_TARGETS, LoraAdapters, LoraError, type AdapterValues, type LoraConfig } from '../../../engine/train/lora.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { relError } from '../../helpers/rel_error.ts';

const CFG: LlamaConfig = { ...TINY_LLAMA, vocabSize: 258, maxPositions: 32 };
const BASE = randomWeights(CFG, 7);
const TEXT = new TextEncoder().encode('It is a truth universally acknowledged, that a single man in possession of a good fortune. '.repeat(3));

let dev: Device;
let ref: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
  ref = await createDevice('reference');
});
afterAll(async () => {
  await dev.dispose();
  await ref.dispose();
});

function baseTensors(d: Device, weights = BASE): Tensor[] {
  return fromHfWeights(CFG, weights).map((v, i) => d.tensor(v, paramSpecs(CFG)[i].shape, 'fp32', { tag: 'weights' }));
}

/** Random non-zero adapters, so that both A and B have gradients. */
function randomAdapters(d: Device, lora: LoraConfig, seed: number): LoraAdapters {
  const fresh = LoraAdapters.create(d, CFG, lora);
  const r = new Rng(seed);
  const values: AdapterValues[] = fresh.values().map((v) => ({ A: v.A.map(() => r.normal(0, 0.3)), B: v.B.map(() => r.normal(0, 0.3)) }));
  fresh.dispose();
  return LoraAdapters.fromValues(d, CFG, lora, values);
}

const dispose = (ts: readonly Tensor[]) => ts.forEach((t) => t.dispose());

describe('adapters', () => {
  it('trainableParams is r (in + out) per adapted linear, counted from the checkpoint shapes ([out, in])', () => {
    const shapes = hfShapes(CFG);
    for (const [targets, names] of [
      [undefined, ['q', 'v']],
      ['all', [...LORA_TARGETS]],
      [['down', 'k'], ['k', 'down']],
    ] as const) {
      const a = LoraAdapters.create(dev, CFG, { r: 4, alpha: 8, targets: targets as LoraConfig['targets'] });
      let want = 0;
      for (let i = 0; i < CFG.numLayers; i++) {
        for (const p of names) {
          const [out, inF] = shapes.get(HF_NAMES.layer(i)[p])!;
          want += 4 * (inF + out);
        }
      }
      expect(a.trainableParams()).toBe(want);
      expect(a.sites.map((s) => s.label)).toEqual(Array.from({ length: CFG.numLayers }, (_, i) => names.map((p) => `layers.${i}.${p}`)).flat());
      a.dispose();
    }
    // The tiny model's q and v: 2 layers x 4 x ((32 + 32) + (32 + 16)).
    const qv = LoraAdapters.create(dev, CFG, { r: 4, alpha: 8 });
    expect(qv.trainableParams()).toBe(2 * 4 * (64 + 48));
    expect(qv.scaling).toBe(2);
    qv.dispose();
  });

  it('are fp32 tensors tagged weights, labelled lora.layers.{i}.{proj}.{A|B}, and the tracker counts 4 bytes each', () => {
    const before = dev.memory.snapshot().byTag.weights;
    const a = LoraAdapters.create(dev, CFG, { r: 2, alpha: 4, targets: 'all' });
    expect(dev.memory.snapshot().byTag.weights - before).toBe(4 * a.trainableParams());
    expect(a.A[0].label).toBe('lora.layers.0.q.A');
    expect(a.B[13].label).toBe('lora.layers.1.down.B');
    expect([...a.A, ...a.B].every((t) => t.tag === 'weights' && t.dtype === 'fp32')).toBe(true);
    expect(a.A[6].shape).toEqual([CFG.intermediateSize, 2]);
    expect(a.B[6].shape).toEqual([2, CFG.hiddenSize]);
    a.dispose();
    expect(dev.memory.snapshot().byTag.weights).toBe(before);
  });

  it("draw A as PEFT does (kaiming: U(-1/sqrt(in), 1/sqrt(in)); gaussian: N(0, 1/r^2)) and set B to zero", () => {
    const k = LoraAdapters.create(dev, { ...CFG, hiddenSize: 256, numHeads: 4, headDim: 64, numKvHeads: 4 }, { r: 16, alpha: 16, seed: 3 });
    for (const v of k.values()) {
      const bound = 1 / Math.sqrt(256);
      expect(Math.max(...v.A.map(Math.abs))).toBeLessThanOrEqual(bound);
      // The variance of U(-b, b) is b^2 / 3; over 4096 draws its standard error is about 2.2% of it.
      const variance = v.A.reduce((s, x) => s + x * x, 0) / v.A.length;
      expect(Math.abs(variance / (bound ** 2 / 3) - 1)).toBeLessThan(0.1);
      expect(v.B.every((x) => x === 0)).toBe(true);
    }
    k.dispose();
    const g = LoraAdapters.create(dev, CFG, { r: 8, alpha: 16, init: 'gaussian', seed: 3 });
    const all = g.values().flatMap((v) => Array.from(v.A));
    const std = Math.sqrt(all.reduce((s, x) => s + x * x, 0) / all.length);
    expect(Math.abs(std * 8 - 1)).toBeLessThan(0.05); // 1024 draws: the std's standard error is 2.2%
    g.dispose();
  });

  it('are reproducible from the seed, and another seed draws others', () => {
    const [a, b, c] = [1, 1, 2].map((seed) => LoraAdapters.create(dev, CFG, { r: 4, alpha: 4, seed }));
    expect(a.values()).toEqual(b.values());
    expect(a.values()[0].A).not.toEqual(c.values()[0].A);
    for (const x of [a, b, c]) x.dispose();
  });
});

describe('the training graph with adapters', () => {
  it('at B = 0 gives the base model loss exactly', async () => {
    const base = baseTensors(dev);
    const a = LoraAdapters.create(dev, CFG, { r: 4, alpha: 32, targets: 'all', seed: 5 });
    try {
      const plain = await heldOutLoss(dev, CFG, base, TEXT, 16, 4);
      const adapted = await heldOutLoss(dev, CFG, [...base, ...a.params()], TEXT, 16, 4, { adapters: a.sites });
      expect(adapted).toBe(plain);
      // The control: a non-zero B moves the loss.
      a.B[0].write(new Float32Array(a.B[0].numel).fill(0.05));
      expect(await heldOutLoss(dev, CFG, [...base, ...a.params()], TEXT, 16, 4, { adapters: a.sites })).not.toBe(plain);
    } finally {
      dispose(base);
      a.dispose();
    }
  });

  it('differentiates only A and B: one gradient per adapter matrix, in order A0, B0, A1, B1, ...', () => {
    const a = LoraAdapters.create(dev, CFG, { r: 2, alpha: 2 });
    const { graph, tables } = trainingGraph(CFG, dev, { adapters: a.sites });
    expect(graph.outputs.map((v) => v.shape)).toEqual([[], ...a.sites.flatMap((s) => [[s.inFeatures, 2], [2, s.outFeatures]])]);
    dispose(tables);
    a.dispose();
  });

  const B = 2;
  const S = 8;
  const batch = (d: Device) => {
    const r = new Rng(11);
    const tok = Int32Array.from({ length: B * (S + 1) }, () => r.uniformInt(256));
    const tokens = Int32Array.from({ length: B * S }, (_, i) => tok[Math.floor(i / S) * (S + 1) + (i % S)]);
    const labels = Int32Array.from({ length: B * S }, (_, i) => tok[Math.floor(i / S) * (S + 1) + (i % S) + 1]);
    return [d.tensor(tokens, [B, S], 'int32'), d.tensor(Int32Array.from({ length: B * S }, (_, i) => i % S), [B, S], 'int32'), d.tensor(labels, [B, S], 'int32')];
  };

  it('gradients of A and B match central differences of the loss (reference backend)', async () => {
    const lora: LoraConfig = { r: 2, alpha: 3, targets: ['v', 'down'] };
    const a = randomAdapters(ref, lora, 1);
    const base = baseTensors(ref);
    const data = batch(ref);
    const { graph: grads, tables: t1 } = trainingGraph(CFG, ref, { adapters: a.sites });
    const { graph: fwd, tables: t2 } = lossGraph(CFG, ref, { adapters: a.sites });
    try {
      const [lossT, ...g] = await ref.run(grads, [...data, ...base, ...a.params()]);
      const loss = lossT.toFloat32()[0];
      const h = 1e-2;
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(loss))) - 23);
      const params = a.params();
      let checked = 0;
      for (const [pi, p] of params.entries()) {
        const values = p.toFloat32();
        const analytic = g[pi].toFloat32();
        const rng = new Rng(100 + pi);
        for (let n = 0; n < 3; n++) {
          const k = rng.uniformInt(values.length);
          const at = async (v: number) => {
            const moved = values.slice();
            moved[k] = v;
            const t = ref.tensor(moved, p.shape, 'fp32');
            const [l] = await ref.run(fwd, [...data, ...base, ...params.map((q) => (q === p ? t : q))]);
            t.dispose();
            return l.toFloat32()[0];
          };
          const numeric = ((await at(values[k] + h)) - (await at(values[k] - h))) / (2 * h);
          const allowed = 1e-4 + 1e-2 * Math.max(Math.abs(analytic[k]), Math.abs(numeric)) + ulp / (2 * h);
          expect(Math.abs(analytic[k] - numeric), `${p.label}[${k}]: ${analytic[k]} vs ${numeric}`).toBeLessThanOrEqual(allowed);
          checked++;
        }
      }
      expect(checked).toBe(4 * 2 * 3);
      dispose([lossT, ...g]);
    } finally {
      dispose([...base, ...data, ...t1, ...t2]);
      a.dispose();
    }
  });

  it("gradients of A and B follow the chain rule through full fine-tuning's gradient at the merged weight", async () => {
    const lora: LoraConfig = { r: 3, alpha: 6, targets: 'all' };
    const a = randomAdapters(dev, lora, 2);
    const base = baseTensors(dev);
    const merged = baseTensors(dev, a.merge(BASE));
    const data = batch(dev);
    const lo = trainingGraph(CFG, dev, { adapters: a.sites });
    const full = trainingGraph(CFG, dev);
    try {
      const [l1, ...gl] = await dev.run(lo.graph, [...data, ...base, ...a.params()]);
      const [l2, ...gf] = await dev.run(full.graph, [...data, ...merged]);
      expect(Math.abs(l1.toFloat32()[0] - l2.toFloat32()[0])).toBeLessThan(1e-5);
      const names = paramSpecs(CFG).map((s) => s.name);
      const values = a.values();
      a.sites.forEach((s, i) => {
        const G = gf[names.indexOf(HF_NAMES.layer(s.layer)[s.proj])].toFloat32(); //  [in, out]
        const { A, B: Bv } = values[i];
        const [K, N, r] = [s.inFeatures, s.outFeatures, s.r];
        const dA = new Float64Array(K * r);
        const dB = new Float64Array(r * N);
        for (let k = 0; k < K; k++) for (let o = 0; o < N; o++) for (let j = 0; j < r; j++) {
          dA[k * r + j] += s.scaling * G[k * N + o] * Bv[j * N + o];
          dB[j * N + o] += s.scaling * A[k * r + j] * G[k * N + o];
        }
        expect(relError(gl[2 * i].toFloat32(), dA), `${s.label} A`).toBeLessThan(1e-4);
        expect(relError(gl[2 * i + 1].toFloat32(), dB), `${s.label} B`).toBeLessThan(1e-4);
      });
      dispose([l1, l2, ...gl, ...gf]);
    } finally {
      dispose([...base, ...merged, ...data, ...lo.tables, ...full.tables]);
      a.dispose();
    }
  });
});

describe('merge and unmerge', () => {
  const PROMPT = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100];

  async function logits(m: LlamaModel): Promise<Float32Array> {
    const cache = await m.createCache(1, PROMPT.length);
    try {
      const { logits: z } = await m.prefill([PROMPT], cache, { all: true });
      const v = z.toFloat32();
      z.dispose();
      return v;
    } finally {
      cache.dispose();
    }
  }

  it('a merged model and the base with unmerged adapters give the float64 reference logits of W + (alpha/r) A B', async () => {
    const a = randomAdapters(dev, { r: 4, alpha: 8, targets: 'all' }, 3);
    const mergedW = a.merge(BASE);
    const want = referenceLogits(CFG, mergedW, PROMPT);
    const merged = await LlamaModel.fromWeights(dev, CFG, (n) => mergedW.get(n)!);
    const unmerged = await LlamaModel.fromWeights(dev, CFG, (n) => BASE.get(n)!, { adapters: a.forModel() });
    try {
      const zm = await logits(merged);
      const zu = await logits(unmerged);
      expect(relError(zm, want)).toBeLessThan(1e-5);
      expect(relError(zu, want)).toBeLessThan(1e-5);
      expect(relError(zu, zm)).toBeLessThan(1e-5);
      // The control: the base alone is far from the adapted model.
      expect(relError(referenceLogits(CFG, BASE, PROMPT), want)).toBeGreaterThan(1e-2);
      expect(unmerged.bytes().adapters).toBe(4 * a.trainableParams());
      expect(merged.bytes().adapters).toBe(0);
    } finally {
      merged.dispose();
      unmerged.dispose();
      a.dispose();
    }
  });

  it('merge changes only the adapted linears; unmerge gives the base back within 2^-23 |W\'| per element', () => {
    const a = randomAdapters(dev, { r: 4, alpha: 8 }, 4);
    const merged = a.merge(BASE);
    const back = a.unmerge(merged);
    const adapted = new Set(a.sites.map((s) => HF_NAMES.layer(s.layer)[s.proj]));
    let exact = 0;
    let total = 0;
    for (const [name, w] of BASE) {
      if (!adapted.has(name)) {
        expect(merged.get(name)).toBe(w);
        continue;
      }
      expect(merged.get(name)).not.toEqual(w);
      const m = merged.get(name)!;
      const b = back.get(name)!;
      for (let i = 0; i < w.length; i++) {
        expect(Math.abs(b[i] - w[i])).toBeLessThanOrEqual(2 ** -23 * Math.abs(m[i]));
        if (b[i] === w[i]) exact++;
        total++;
      }
    }
    expect(total).toBe(2 * (32 * 32 + 16 * 32));
    expect(exact / total).toBeGreaterThan(0.5);
    a.dispose();
  });
});

describe('refused', () => {
  const bad: [string, LoraConfig, string][] = [
    ['r = 0', { r: 0, alpha: 1 }, 'r must be an integer >= 1, got 0'],
    ['a fractional r', { r: 1.5, alpha: 1 }, 'got 1.5'],
    ['r past min(in, out)', { r: 17, alpha: 1 }, 'r = 17 is larger than min(in, out) = 16 of the v projection [32, 16]'],
    ['r past min(in, out) of every target', { r: 40, alpha: 1, targets: ['gate'] }, 'min(in, out) = 32 of the gate projection [32, 64]'],
    ['alpha = 0', { r: 2, alpha: 0 }, 'alpha must be a finite number > 0, got 0'],
    ['alpha < 0', { r: 2, alpha: -1 }, 'got -1'],
    ['alpha NaN', { r: 2, alpha: NaN }, 'got null'],
    ['alpha Infinity', { r: 2, alpha: Infinity }, 'alpha must be a finite number > 0'],
    ['an unknown target', { r: 2, alpha: 1, targets: ['q', 'lm_head' as never] }, 'unknown target "lm_head"'],
    ['no targets', { r: 2, alpha: 1, targets: [] }, 'non-empty list'],
    ['a target twice', { r: 2, alpha: 1, targets: ['q', 'q'] }, 'name a projection twice'],
    ['an unknown init', { r: 2, alpha: 1, init: 'pissa' as never }, "init must be 'kaiming' or 'gaussian'"],
    ['dropout', { r: 2, alpha: 1, dropout: 0.1 }, 'dropout 0.1 is not supported; only 0 is implemented'],
    ['a fractional seed', { r: 2, alpha: 1, seed: 0.5 }, 'seed must be an integer'],
  ];
  for (const [what, lora, message] of bad) {
    it(`${what}: LoraError, nothing allocated`, () => {
      const live = dev.memory.live;
      expect(() => LoraAdapters.create(dev, CFG, lora)).toThrow(LoraError);
      expect(() => LoraAdapters.create(dev, CFG, lora)).toThrow(message);
      expect(dev.memory.live).toBe(live);
    });
  }

  it('adapters on a model of other shapes: checkModel, the serving model and merge name the linear', async () => {
    const a = LoraAdapters.create(dev, CFG, { r: 2, alpha: 2, targets: 'all' });
    const wider = { ...CFG, intermediateSize: 96 };
    expect(() => a.checkModel(wider)).toThrow('the adapter on layers.0.gate is for a [32, 64] linear; the model\'s is [32, 96]');
    expect(() => a.checkModel({ ...CFG, numLayers: 1 })).toThrow('the adapter on layers.1.q has no linear in a model of 1 layers');
    expect(() => a.checkModel(CFG)).not.toThrow();
    const wideW = randomWeights(wider, 1);
    const live = dev.memory.live;
    await expect(LlamaModel.fromWeights(dev, wider, (n) => wideW.get(n)!, { adapters: a.forModel() })).rejects.toThrow('layers.0.gate needs A [32, r] and B [r, 96]');
    await expect(LlamaModel.fromWeights(dev, CFG, (n) => BASE.get(n)!, { adapters: new Map([['layers.2.q', a.forModel().get('layers.0.q')!]]) })).rejects.toThrow('"layers.2.q" is not a projection of this 2-layer model');
    expect(dev.memory.live).toBe(live);
    expect(() => a.merge(wideW)).toThrow(`${HF_NAMES.layer(0).gate} has 3072 values; the adapter on layers.0.gate needs [64, 32]`);
    const partial = new Map(BASE);
    partial.delete(HF_NAMES.layer(1).up);
    expect(() => a.merge(partial)).toThrow(`the weights have no ${HF_NAMES.layer(1).up}`);
    expect(() => LoraAdapters.fromValues(dev, CFG, { r: 2, alpha: 2 }, a.values().slice(0, 3))).toThrow('3 adapters given for 4 targeted linears');
    a.dispose();
    expect(() => a.params()).toThrow('the adapters were disposed');
  });

  it('a supplier giving a parameter of the wrong shape is refused by the training graph, naming it', () => {
    const spec = paramSpecs(CFG)[1];
    expect(() => lossGraph(CFG, dev, { supply: (g, s) => g.input(s.name, 'fp32', s.name === spec.name ? [1, 2] : s.shape) })).toThrow(`the supplier gave ${spec.name} as fp32`);
  });
});
