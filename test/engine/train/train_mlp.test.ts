/**
 * Training end to end on cpu: a two-layer MLP learns the two-spirals classification (Lang & Witbrock 1988, here
 * 1.25 turns per arm, seeded noise) with backward() and AdamW, full batch, cross-entropy loss; and XOR in mixed
 * precision. The step's two sessions (gradients, update) are compiled once for the whole run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, type Device } from '../../../engine/index.ts';
import { AdamW } from '../../../engine/train/adamw.ts';
import { runBackward, trainStep } from '../../../engine/train/step.ts';
import { rng } from '../../../bench/random.ts';
import { initParams, mlp, MLP_PARAMS } from '../autograd/models.ts';

const PER_CLASS = 64;
const HIDDEN = 64;
const STEPS = 500;
/** Cross-entropy the run must reach (a constant guess is ln 2 = 0.69), and the accuracy. */
const TARGET_LOSS = 0.05;

/** Two interleaved spirals: points [2 * PER_CLASS, 2] and labels 0/1. */
function spirals(seed: number): { x: number[]; labels: number[] } {
  const r = rng(seed);
  const x: number[] = [];
  const labels: number[] = [];
  for (let c = 0; c < 2; c++) {
    for (let i = 0; i < PER_CLASS; i++) {
      const t = (i + 1) / PER_CLASS;
      const angle = t * 2.5 * Math.PI + c * Math.PI;
      x.push(t * Math.cos(angle) + 0.02 * (r() - 0.5), t * Math.sin(angle) + 0.02 * (r() - 0.5));
      labels.push(c);
    }
  }
  return { x, labels };
}

describe('training a small MLP', () => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice('cpu');
  });
  afterAll(async () => {
    await dev.dispose();
  });

  it(`two spirals: cross-entropy below ${TARGET_LOSS} and every point right within ${STEPS} steps, on one session per graph`, async () => {
    const n = 2 * PER_CLASS;
    const specs = MLP_PARAMS(2, HIDDEN, 2);
    const g = new Graph('spirals');
    const x = g.input('x', 'fp32', [n, 2]);
    const labels = g.input('labels', 'int32', [n]);
    const p = specs.map((s) => g.input(s.name, 'fp32', s.shape));
    const logits = mlp(g, x, p, 'SiLU');
    const [loss] = g.op('SoftmaxCrossEntropyLoss', [logits, labels]);
    const bw = backward(g, loss, p, { keep: [logits] }).graph;

    const data = spirals(7);
    const feeds = [dev.tensor(data.x, [n, 2]), dev.tensor(data.labels, [n], 'int32')];
    // Inputs spread over [-1, 1]; a wider first layer init lets the SiLU units cut the plane finely enough.
    const params = initParams(specs.map((s, i) => (i === 0 ? { ...s, scale: 4 } : s)), 3).map((v, i) => dev.tensor(v, specs[i].shape, 'fp32', { tag: 'weights' }));
    const opt = new AdamW(dev, params, { lr: 0.05, weightDecay: 1e-4 });

    const losses: number[] = [];
    let accuracy = 0;
    let sessions = 0;
    for (let step = 0; step < STEPS; step++) {
      const out = await runBackward(dev, bw, [...feeds, ...params], 1);
      losses.push(out.loss);
      const z = out.keep[0].toFloat32();
      accuracy = data.labels.filter((c, i) => (z[2 * i + 1] > z[2 * i] ? 1 : 0) === c).length / n;
      await opt.step(out.grads);
      out.dispose();
      if (step === 0) sessions = dev.stats().sessionsCreated;
      if (out.loss < TARGET_LOSS && accuracy === 1) break;
    }
    expect(losses[0]).toBeGreaterThan(0.5);
    expect(losses.at(-1)!, `loss after ${losses.length} steps`).toBeLessThan(TARGET_LOSS);
    expect(accuracy).toBe(1);
    expect(dev.stats().sessionsCreated).toBe(sessions);
  });

  it('mixed precision: fp16 weights and gradients with fp32 master weights learn XOR in 40 steps (trainStep)', async () => {
    // Four corners of the square, two labels by XOR of the signs, 8 points per corner.
    const r = rng(11);
    const x: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 32; i++) {
      const [a, b] = [i & 1, (i >> 1) & 1];
      x.push((a ? 1 : -1) + 0.2 * (r() - 0.5), (b ? 1 : -1) + 0.2 * (r() - 0.5));
      labels.push(a ^ b);
    }
    const specs = MLP_PARAMS(2, 16, 2);
    const g = new Graph('xor fp16');
    const p = specs.map((s) => g.input(s.name, 'fp16', s.shape));
    const [loss] = g.op('SoftmaxCrossEntropyLoss', [mlp(g, g.input('x', 'fp16', [32, 2]), p, 'Gelu'), g.input('labels', 'int32', [32])]);
    const bw = backward(g, loss, p).graph;
    const params = initParams(specs, 5).map((v, i) => dev.tensor(v, specs[i].shape, 'fp16', { tag: 'weights' }));
    const opt = new AdamW(dev, params, { lr: 0.05 });
    const feeds = [...params, dev.tensor(x, [32, 2], 'fp16'), dev.tensor(labels, [32], 'int32')];
    const losses: number[] = [];
    for (let step = 0; step < 40; step++) losses.push(await trainStep(dev, bw, feeds, opt));
    expect(losses[0]).toBeGreaterThan(0.5);
    expect(losses.at(-1)!).toBeLessThan(0.01);
    expect(params.every((t) => t.dtype === 'fp16')).toBe(true);
  });
});
