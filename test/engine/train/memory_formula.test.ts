/**
 * Training memory formulas against published figures and against the tracker. Published: ZeRO (Rajbhandari et al.
 * 2020) section 3.1, "a 1.5B parameter model ... requires at least 24 GB" for mixed-precision Adam (16 bytes per
 * parameter), and its Figure 1 baseline, 120 GB for 7.5B parameters at K = 12; QLoRA (Dettmers et al. 2023) section 3,
 * double quantization's 8/64 + 32/(64 * 256) = 0.127 bits of scale per parameter, down from 32/64 = 0.5, and finetuning
 * a 65B model in under 48 GB. Measured: a real AdamW over real params, full (fp32, and bf16 with masters) and
 * LoRA-style (a frozen base, trained adapters), whose tracker must show the formula's bytes exactly, tag by tag.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, type Device, type Tensor } from '../../../engine/index.ts';
import { AdamW } from '../../../engine/train/adamw.ts';
import { runBackward } from '../../../engine/train/step.ts';
import {
  fullFineTuningFp32,
  loraMemory,
  mixedPrecisionAdam,
  nf4BitsPerParam,
  qloraMemory,
  trainingMemory,
  type TrainingMemory,
} from '../../../engine/train/memory_formula.ts';
import { rng, uniform } from '../../../bench/random.ts';
import { initParams, meanSquaredError, mlp, MLP_PARAMS } from '../autograd/models.ts';

const GB = 1e9;
const tags = (m: TrainingMemory) => ({ weights: m.weights, grads: m.grads, optimizer: m.optimizer });

describe('training memory formulas', () => {
  it('full fine-tuning in fp32 and mixed-precision Adam: 16 bytes per parameter, 112 GB for 7B', () => {
    expect(tags(fullFineTuningFp32(7e9))).toEqual({ weights: 28e9, grads: 28e9, optimizer: 56e9 });
    expect(fullFineTuningFp32(7e9).total).toBe(112 * GB);
    expect(tags(mixedPrecisionAdam(7e9))).toEqual({ weights: 14e9, grads: 14e9, optimizer: 84e9 });
    expect(mixedPrecisionAdam(7e9, 'fp16').total).toBe(112 * GB);
    expect(mixedPrecisionAdam(7e9).formula).toMatch(/activations excluded/);
  });

  it("ZeRO's figures: 24 GB for 1.5B parameters, 120 GB for 7.5B (Figure 1's baseline)", () => {
    expect(mixedPrecisionAdam(1.5e9).total).toBe(24 * GB);
    expect(mixedPrecisionAdam(7.5e9).total).toBe(120 * GB);
  });

  it("NF4 storage: 4.127 bits with QLoRA's double quantization, 4.5 without", () => {
    expect(nf4BitsPerParam()).toBe(4 + 0.125 + 0.001953125);
    expect(nf4BitsPerParam().toFixed(3)).toBe('4.127');
    expect(nf4BitsPerParam({ doubleQuant: false })).toBe(4.5);
    expect(nf4BitsPerParam({ doubleQuant: false, blockSize: 128 })).toBe(4.25);
    expect(() => nf4BitsPerParam({ blockSize: 0 })).toThrow(/blockSize must be a positive integer, got 0/);
  });

  it('QLoRA 65B: a 33.5 GB base, the whole under 48 GB with adapters; 36.6 GB without double quantization', () => {
    const base = qloraMemory(65e9, 0);
    expect(base.weights).toBe((65e9 * 4.126953125) / 8);
    expect(base.weights / GB).toBeCloseTo(33.53, 2);
    expect(base.grads + base.optimizer).toBe(0);
    expect(qloraMemory(65e9, 0, { doubleQuant: false }).weights).toBe(36.5625 * GB);
    // Double quantization saves 0.373 bits per parameter: about 3 GB at 65B (the paper's "roughly 3 GB").
    expect((qloraMemory(65e9, 0, { doubleQuant: false }).weights - base.weights) / GB).toBeCloseTo(3.03, 2);
    // 250M adapter parameters (a high-rank adapter on every linear of a 65B model is of that order).
    const q = qloraMemory(65e9, 250e6);
    expect(q.weights).toBe(base.weights + 4 * 250e6);
    expect(q.grads).toBe(4 * 250e6);
    expect(q.optimizer).toBe(8 * 250e6);
    expect(q.total).toBe(base.weights + 16 * 250e6);
    expect(q.total).toBeLessThan(48 * GB);
  });

  it('LoRA: a frozen base at its width and 16 bytes per trainable parameter, whichever the adapters are kept in', () => {
    const T = 4_194_304;
    expect(tags(loraMemory(7e9, T, { base: 'bf16' }))).toEqual({ weights: 14e9 + 4 * T, grads: 4 * T, optimizer: 8 * T });
    expect(tags(loraMemory(7e9, T, { base: 'fp16', adapters: 'bf16' }))).toEqual({ weights: 14e9 + 2 * T, grads: 2 * T, optimizer: 12 * T });
    expect(loraMemory(7e9, T).total).toBe(28e9 + 16 * T);
    expect(trainingMemory('lora', 7e9, T)).toEqual(loraMemory(7e9, T));
    expect(trainingMemory('full-fp32', 7e9)).toEqual(fullFineTuningFp32(7e9));
  });

  it('refuses counts that are not parameter counts, unknown widths and methods', () => {
    expect(() => fullFineTuningFp32(-1)).toThrow(/params must be a non-negative integer count of parameters, got -1/);
    expect(() => loraMemory(10, 1.5)).toThrow(/trainable must be a non-negative integer/);
    expect(() => loraMemory(10, 1, { base: 'int8' as 'fp32' })).toThrow(/base must be fp32, fp16 or bf16, got "int8"/);
    expect(() => trainingMemory('sgd' as 'lora', 10)).toThrow(/unknown method "sgd"/);
  });
});

describe('formula beside the tracker', () => {
  const devices: Device[] = [];
  afterEach(async () => {
    for (const d of devices.splice(0)) await d.dispose();
  });

  for (const dtype of ['fp32', 'bf16'] as const) {
    it(`full training of an MLP in ${dtype}: the tracker's weights, grads and optimizer bytes are the formula's`, async () => {
      const dev = await createDevice('cpu');
      devices.push(dev);
      const specs = MLP_PARAMS(6, 16, 3);
      const g = new Graph('mlp');
      const x = g.input('x', dtype, [5, 6]);
      const target = g.input('target', dtype, [5, 3]);
      const p = specs.map((s) => g.input(s.name, dtype, s.shape));
      const bw = backward(g, meanSquaredError(g, mlp(g, x, p), target), p).graph;
      const params = initParams(specs, 3).map((v, i) => dev.tensor(v, specs[i].shape, dtype, { tag: 'weights' }));
      const P = params.reduce((n, t) => n + t.numel, 0);
      const data = [dev.tensor(uniform(rng(1), 30), [5, 6], dtype), dev.tensor(uniform(rng(2), 15), [5, 3], dtype)];
      const opt = new AdamW(dev, params);
      const out = await runBackward(dev, bw, [...data, ...params]);
      const byTag = dev.memory.liveByTag();
      const want = dtype === 'fp32' ? fullFineTuningFp32(P) : mixedPrecisionAdam(P, 'bf16');
      expect({ weights: byTag.weights, grads: byTag.grads, optimizer: byTag.optimizer }).toEqual(tags(want));
      await opt.step(out.grads);
      out.dispose();
      // Paged with no room left on the device: the formula's optimizer bytes, all in host memory.
      dev.memory.setBudget(dev.memory.live);
      const paged = new AdamW(dev, params, { paged: true });
      expect(paged.bytes()).toBe(0);
      expect(paged.hostBytes).toBe(want.optimizer);
      expect(dev.memory.liveByTag().optimizer).toBe(want.optimizer);
      paged.dispose();
      expect(paged.hostBytes).toBe(0);
    });
  }

  for (const base of ['fp32', 'bf16'] as const) {
    it(`LoRA-style training over a frozen ${base} base: the tracker's bytes are the formula's`, async () => {
      const dev = await createDevice('cpu');
      devices.push(dev);
      const [n, k, r, batch] = [24, 32, 4, 3];
      // y = x W + (x A) B, with W frozen (fed, never differentiated) and A, B the trained adapters.
      const g = new Graph('lora mlp');
      const x = g.input('x', 'fp32', [batch, n]);
      const target = g.input('target', 'fp32', [batch, k]);
      const W = g.input('W', base, [n, k]);
      const A = g.input('A', 'fp32', [n, r]);
      const B = g.input('B', 'fp32', [r, k]);
      const w32 = base === 'fp32' ? W : g.op('Cast', [W], { to: 'fp32' })[0];
      const y = g.op('Add', [g.op('MatMul', [x, w32])[0], g.op('MatMul', [g.op('MatMul', [x, A])[0], B])[0]])[0];
      const bw = backward(g, meanSquaredError(g, y, target), [A, B]).graph;
      const frozen = dev.tensor(uniform(rng(5), n * k), [n, k], base, { tag: 'weights', label: 'W' });
      const adapters: Tensor[] = [dev.tensor(uniform(rng(6), n * r, -0.1, 0.1), [n, r], 'fp32', { tag: 'weights' }), dev.tensor(new Array(r * k).fill(0), [r, k], 'fp32', { tag: 'weights' })];
      const data = [dev.tensor(uniform(rng(7), batch * n), [batch, n]), dev.tensor(uniform(rng(8), batch * k), [batch, k])];
      const opt = new AdamW(dev, adapters);
      const out = await runBackward(dev, bw, [...data, frozen, ...adapters]);
      const byTag = dev.memory.liveByTag();
      const want = loraMemory(n * k, (n + k) * r, { base });
      expect({ weights: byTag.weights, grads: byTag.grads, optimizer: byTag.optimizer }).toEqual(tags(want));
      await opt.step(out.grads);
      out.dispose();
      expect(dev.memory.liveByTag().weights).toBe(want.weights);
    });
  }
});
