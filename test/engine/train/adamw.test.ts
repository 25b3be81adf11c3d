/**
 * AdamW against a float64 TypeScript implementation of the same update (Loshchilov & Hutter 2019, as
 * torch.optim.AdamW computes it), one graph run per step, and the memory a parameter costs as the tracker counts it:
 * fp32 training 4 (weight) + 4 (gradient) + 8 (moments), mixed precision 2 + 2 + 12 (fp32 master weight and moments).
 *
 * Tolerance against float64: each step is about ten fp32 ops, each rounding once (2^-24 relative), and the weight
 * itself is rounded to fp32 every step: after 5 steps |got - want| <= 1e-6 * (1 + |want|) covers that with room.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, DTypeError, ShapeError, type Device, type DType, type Tensor } from '../../../engine/index.ts';
import { AdamW } from '../../../engine/train/adamw.ts';
import { runBackward } from '../../../engine/train/step.ts';
import { rng, uniform } from '../../../bench/random.ts';
import { initParams, meanSquaredError, mlp, MLP_PARAMS } from '../autograd/models.ts';

interface Hyper {
  lr: number;
  b1: number;
  b2: number;
  eps: number;
  wd: number;
}

/** torch.optim.AdamW's update in float64. */
function adamwFloat64(p0: readonly number[], grads: readonly (readonly number[])[], h: Hyper) {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, s) => {
    const t = s + 1;
    for (let i = 0; i < p.length; i++) {
      p[i] *= 1 - h.lr * h.wd;
      m[i] = h.b1 * m[i] + (1 - h.b1) * g[i];
      v[i] = h.b2 * v[i] + (1 - h.b2) * g[i] * g[i];
      p[i] -= (h.lr * (m[i] / (1 - h.b1 ** t))) / (Math.sqrt(v[i] / (1 - h.b2 ** t)) + h.eps);
    }
  });
  return { p, m, v };
}

function within(got: ArrayLike<number>, want: readonly number[], tol = 1e-6): string[] {
  const bad: string[] = [];
  for (let i = 0; i < want.length && bad.length < 5; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])))) bad.push(`[${i}] got ${got[i]}, want ${want[i]}`);
  }
  return bad;
}

const SHAPES = [[4, 3], [3], [2, 2, 2]];
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

describe('AdamW', () => {
  const devs: Record<string, Device> = {};
  beforeAll(async () => {
    devs.reference = await createDevice('reference');
    devs.cpu = await createDevice('cpu');
  });
  afterAll(async () => {
    for (const d of Object.values(devs)) await d.dispose();
  });

  for (const kind of ['reference', 'cpu']) {
    it(`matches float64 AdamW over 5 steps: weights and both moments (${kind})`, async () => {
      const dev = devs[kind];
      const h: Hyper = { lr: 0.02, b1: 0.9, b2: 0.99, eps: 1e-8, wd: 0.1 };
      const p0 = SHAPES.map((s, i) => Array.from(Float32Array.from(uniform(rng(10 + i), numel(s), -1, 1))));
      const grads = [0, 1, 2, 3, 4].map((step) => SHAPES.map((s, i) => Array.from(Float32Array.from(uniform(rng(100 * step + i), numel(s), -2, 2)))));
      const params = SHAPES.map((s, i) => dev.tensor(p0[i], s, 'fp32', { tag: 'weights' }));
      const opt = new AdamW(dev, params, { lr: h.lr, betas: [h.b1, h.b2], eps: h.eps, weightDecay: h.wd });
      for (const gs of grads) {
        const gt = gs.map((g, i) => dev.tensor(g, SHAPES[i]));
        await opt.step(gt);
        for (const t of gt) t.dispose();
      }
      SHAPES.forEach((_, i) => {
        const want = adamwFloat64(p0[i], grads.map((gs) => gs[i]), h);
        const st = opt.state(i);
        expect(within(params[i].toFloat32(), want.p), `param ${i}`).toEqual([]);
        expect(within(st.m.toFloat32(), want.m), `m ${i}`).toEqual([]);
        expect(within(st.v.toFloat32(), want.v), `v ${i}`).toEqual([]);
        expect(st.master).toBeNull();
      });
      expect(opt.t).toBe(5);
      opt.dispose();
    });
  }

  it('bias correction: the first step moves every weight by lr against the sign of its gradient', async () => {
    const dev = devs.cpu;
    const p = dev.tensor([1, -2, 0.5, 3], [4]);
    const opt = new AdamW(dev, [p], { lr: 0.1, weightDecay: 0 });
    // Without bias correction m / sqrt(v) would be 0.1 g / sqrt(0.001 g^2) = 3.16 sign(g): a 3x too large first step.
    await opt.step([dev.tensor([0.3, -5, 1e-3, 40], [4])]);
    expect(within(p.toFloat32(), [0.9, -1.9, 0.4 + 1e-6, 2.9], 1e-6)).toEqual([]);
  });

  it('one graph run per step on one session; params keep their identity and bump their version', async () => {
    const dev = devs.cpu;
    const params = SHAPES.map((s, i) => dev.tensor(uniform(rng(i), numel(s)), s));
    const opt = new AdamW(dev, params, { lr: 0.01 });
    const grads = SHAPES.map((s, i) => dev.tensor(uniform(rng(50 + i), numel(s)), s));
    await opt.step(grads);
    const before = dev.stats();
    const versions = params.map((p) => p.version);
    for (let s = 0; s < 4; s++) await opt.step(grads, 0.01 / (s + 2));
    const after = dev.stats();
    expect(after.sessionsCreated).toBe(before.sessionsCreated);
    expect(after.runs - before.runs).toBe(4);
    expect(params.map((p) => p.version)).toEqual(versions.map((v) => v + 4));
    expect(params.every((p) => !p.disposed)).toBe(true);
  });

  it('master weights: fp16 weights take updates below half an fp16 ulp, which stall without them', async () => {
    const dev = devs.cpu;
    // 0.75 has fp16 ulp 2^-11 = 4.9e-4; each step moves it by lr = 1e-4.
    const withMaster = dev.tensor([0.75], [1], 'fp16');
    const without = dev.tensor([0.75], [1], 'fp16');
    const a = new AdamW(dev, [withMaster], { lr: 1e-4, weightDecay: 0 });
    const b = new AdamW(dev, [without], { lr: 1e-4, weightDecay: 0, masterWeights: false });
    const g = dev.tensor([1], [1], 'fp16');
    for (let s = 0; s < 20; s++) {
      await a.step([g]);
      await b.step([g]);
    }
    expect(without.toFloat32()[0]).toBe(0.75);
    expect(a.state(0).master!.toFloat32()[0]).toBeCloseTo(0.75 - 20e-4, 5);
    expect(withMaster.toFloat32()[0]).toBe(0.748046875); // fp16 nearest to 0.748
  });

  // Weights tagged 'weights', gradients retagged 'grads' by runBackward, masters and moments tagged 'optimizer'.
  for (const [dtype, want] of [['fp16', { weights: 2, grads: 2, optimizer: 12 }], ['bf16', { weights: 2, grads: 2, optimizer: 12 }], ['fp32', { weights: 4, grads: 4, optimizer: 8 }]] as const) {
    it(`bytes per parameter from the tracker, ${dtype}: weights ${want.weights}, grads ${want.grads}, optimizer ${want.optimizer}`, async () => {
      const dev = await createDevice('cpu');
      const specs = MLP_PARAMS(3, 8, 2);
      const g = new Graph('mlp');
      const x = g.input('x', dtype as DType, [5, 3]);
      const target = g.input('target', dtype as DType, [5, 2]);
      const p = specs.map((s) => g.input(s.name, dtype as DType, s.shape));
      const bw = backward(g, meanSquaredError(g, mlp(g, x, p), target), p).graph;
      const params = initParams(specs, 1).map((v, i) => dev.tensor(v, specs[i].shape, dtype, { tag: 'weights' }));
      const n = params.reduce((s, t) => s + t.numel, 0);
      const data = [dev.tensor(uniform(rng(1), 15), [5, 3], dtype), dev.tensor(uniform(rng(2), 10), [5, 2], dtype)];
      const opt = new AdamW(dev, params);
      const out = await runBackward(dev, bw, [...data, ...params]);
      const byTag = dev.memory.liveByTag();
      expect({ weights: byTag.weights / n, grads: byTag.grads / n, optimizer: byTag.optimizer / n }).toEqual(want);
      expect(opt.bytes()).toBe(want.optimizer * n);
      await opt.step(out.grads);
      out.dispose();
      expect(dev.memory.liveByTag().grads).toBe(0);
      expect(dev.memory.liveByTag().weights).toBe(want.weights * n);
      await dev.dispose();
    });
  }

  it('refuses gradients that do not fit its params, and integer params', async () => {
    const dev = devs.reference;
    const p: Tensor = dev.tensor([1, 2], [2]);
    const opt = new AdamW(dev, [p]);
    await expect(opt.step([])).rejects.toThrow(/0 gradients for 1 params/);
    await expect(opt.step([dev.tensor([1, 2, 3], [3])])).rejects.toThrow(ShapeError);
    await expect(opt.step([dev.tensor([1, 2], [2], 'fp16')])).rejects.toThrow(DTypeError);
    expect(() => new AdamW(dev, [dev.tensor([1], [1], 'int32')])).toThrow(DTypeError);
    expect(() => new AdamW(dev, [p], { betas: [0.9, 1] })).toThrow(/betas must lie in \[0, 1\)/);
    expect(p.toArray()).toEqual([1, 2]);
  });
});
