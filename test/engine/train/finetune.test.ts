/**
 * Fine-tuning (engine/train/finetune.ts) on the tiny byte-level Llama: full fine-tuning, LoRA and QLoRA from the same
 * random base on a repetitive text. What each method trains, by the tracker's tags: full fine-tuning holds a gradient
 * (4 bytes) and two AdamW moments (8 bytes) for every base parameter, LoRA and QLoRA for the adapters' r (in + out)
 * per matrix and nothing for the base, which stays bit-identical. QLoRA's base is checked against the host NF4 code
 * (engine/quant/nf4.ts, double_quant.ts), and its loss at B = 0 against the fp32 graph over those rounded weights.
 * A paged AdamW (passed through) trains the same adapters; two steps on the built-in model check the real setup.
 *
 * Tolerances: losses and weights of one method on one device are deterministic (compared exactly); the held-out loss
 * of the base through the LoRA graph at B = 0 equals the plain graph's exactly (the adapter path adds 0).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomWeights, TINY_LLAMA } from '../model/tiny_config.ts';
import { createDevice, type Device } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { makeCorpus } from '../../../engine/train/corpus.ts';
import { sotu } from '../../../engine/train/sotu.ts';
import { finetune, loadBase, type BaseModel, type FinetuneOptions, type FinetuneStep } from '../../../engine/train/finetune.ts';
import { fromHfWeights, paramSpecs } from '../../../engine/train/lm_params.ts';
import { heldOutLoss } from '../../../engine/train/trainer.ts';
import { LoraError } from '../../../engine/train/lora.ts';
import { quantizedNames } from '../../../engine/train/qlora.ts';
import { nf4Dequantize, nf4Quantize } from '../../../engine/quant/nf4.ts';
import { doubleDequantize, doubleQuantize } from '../../../engine/quant/double_quant.ts';
import { hfShapes } from '../../../engine/model/config.ts';
import { nf4WeightBytes } from '../../../engine/quant/nf4_nodes.ts';

const CFG: LlamaConfig = { ...TINY_LLAMA, vocabSize: 258, maxPositions: 32, intermediateSize: 128 };
const BASE: BaseModel = { cfg: CFG, weights: randomWeights(CFG, 3) };
const corpus = makeCorpus(new TextEncoder().encode('the cat sat on the mat. the dog ran to the log. a bird in the hand. '.repeat(60)));
const OLD = new TextEncoder().encode('Call me Ishmael. Some years ago, never mind how long precisely, having little money. '.repeat(2));
const RUN: FinetuneOptions = { method: 'lora', steps: 6, batch: 4, context: 32, lr: 1e-2, seed: 5, heldOut: { new: corpus.heldOut, old: OLD }, evalBatch: 4 };
const baseParams = paramSpecs(CFG).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
const ropeBytes = 2 * 4 * CFG.maxPositions * (CFG.headDim / 2);

/** Live bytes but the compile cache's (sessions stay cached for the next run, by design). */
const held = () => {
  const { compiled: _, ...rest } = dev.memory.snapshot().byTag;
  return rest;
};

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

describe('finetune', () => {
  it('lora: the base stays bit-identical, only the adapters have gradients and AdamW state, the loss falls', async () => {
    const steps: FinetuneStep[] = [];
    const live = held();
    const r = await finetune(dev, BASE, corpus, { ...RUN, steps: 12, lora: { r: 4, alpha: 8, targets: 'all' }, onStep: (s) => steps.push(s) });
    try {
      expect(r.trainableParams).toBe(2 * 4 * (2 * (32 + 32) + 2 * (32 + 16) + 3 * (32 + 128))); // q o, k v, gate up down
      expect(r.baseParams).toBe(baseParams);
      expect(await r.baseWeights()).toEqual(new Map(BASE.weights));
      expect(r.peakByTag.grads).toBe(4 * r.trainableParams);
      expect(r.peakByTag.optimizer).toBe(8 * r.trainableParams);
      expect(r.peakByTag.weights).toBe(4 * baseParams + 4 * r.trainableParams + ropeBytes);
      expect(r.losses).toHaveLength(12);
      expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
      expect(steps.every((s) => s.stepMs > 0 && s.memory.weights > 0)).toBe(true);
      const tail = r.losses.slice(-3).reduce((a, b) => a + b, 0) / 3;
      expect(tail).toBeLessThan(r.losses[0] - 0.5);
      expect(r.heldOut.new.after).toBeLessThan(r.heldOut.new.before);
      // The merged weights are the fine-tuned model: its loss through the plain graph is the adapted one.
      const merged = await r.weights();
      const tensors = fromHfWeights(CFG, merged).map((v, i) => dev.tensor(v, paramSpecs(CFG)[i].shape, 'fp32'));
      const plain = await heldOutLoss(dev, CFG, tensors, corpus.heldOut, 32, 4);
      tensors.forEach((t) => t.dispose());
      expect(Math.abs(plain - r.heldOut.new.after)).toBeLessThan(1e-5);
      expect(await r.heldOutLoss(corpus.heldOut, 32, 4)).toBe(r.heldOut.new.after);
    } finally {
      r.dispose();
    }
    expect(held()).toEqual(live);
  });

  it('full: every parameter has a gradient and two moments; the base changes; LoRA starts from the same held-out losses', async () => {
    const full = await finetune(dev, BASE, corpus, { ...RUN, method: 'full' });
    const lora = await finetune(dev, BASE, corpus, { ...RUN, steps: 1 });
    try {
      expect(full.trainableParams).toBe(baseParams);
      expect(full.peakByTag.grads).toBe(4 * baseParams);
      expect(full.peakByTag.optimizer).toBe(8 * baseParams);
      expect(await full.baseWeights()).not.toEqual(new Map(BASE.weights));
      expect(full.adapters).toBeNull();
      // Both start at the base: the same held-out losses before, and those of the plain graph.
      const base = fromHfWeights(CFG, BASE.weights).map((v, i) => dev.tensor(v, paramSpecs(CFG)[i].shape, 'fp32'));
      const old = await heldOutLoss(dev, CFG, base, OLD, 32, 4);
      base.forEach((t) => t.dispose());
      expect(lora.heldOut.old.before).toBe(full.heldOut.old.before);
      expect(lora.heldOut.old.before).toBe(old);
      // The first step's loss is the base's on the same batch, whatever is trained.
      expect(lora.losses[0]).toBe(full.losses[0]);
      expect(full.medianStepMs).toBeGreaterThan(0);
    } finally {
      full.dispose();
      lora.dispose();
    }
  });

  it('full in mixed precision: bf16 weights and gradients, fp32 master weights and moments (2 + 2 + 12 bytes a parameter)', async () => {
    const mixed = await finetune(dev, BASE, corpus, { ...RUN, method: 'full', precision: 'bf16' });
    const full = await finetune(dev, BASE, corpus, { ...RUN, method: 'full' });
    try {
      expect(mixed.peakByTag.weights).toBe(2 * baseParams + ropeBytes);
      expect(mixed.peakByTag.grads).toBe(2 * baseParams);
      expect(mixed.peakByTag.optimizer).toBe(12 * baseParams);
      // The same training in fp32 arithmetic from bf16-rounded weights: close to fp32's losses, not equal to them.
      expect(mixed.losses.every(Number.isFinite)).toBe(true);
      expect(mixed.losses[mixed.losses.length - 1]).toBeLessThan(mixed.losses[0]);
      expect(Math.abs(mixed.losses[0] - full.losses[0])).toBeLessThan(2e-2);
      expect(mixed.losses).not.toEqual(full.losses);
    } finally {
      mixed.dispose();
      full.dispose();
    }
  });

  it('is deterministic from the seed; another seed gives other losses', async () => {
    const runs = [];
    for (const seed of [5, 5, 6]) runs.push(await finetune(dev, BASE, corpus, { ...RUN, heldOut: undefined, seed }));
    expect(runs[1].losses).toEqual(runs[0].losses);
    expect(runs[1].adapters!.values()).toEqual(runs[0].adapters!.values());
    expect(runs[2].losses).not.toEqual(runs[0].losses);
    runs.forEach((r) => r.dispose());
  });

  it('passes AdamW options through: a paged optimizer trains the same adapters and reports its paging', async () => {
    // States are paged out when the budget has no room for them: reserving all of it puts every one on the host.
    const budgeted = await createDevice('cpu', { budget: 2 ** 30 });
    const plain = await finetune(budgeted, BASE, corpus, { ...RUN, heldOut: undefined });
    const paged = await finetune(budgeted, BASE, corpus, { ...RUN, heldOut: undefined, adamw: { paged: true, reserveBytes: 2 ** 30 } });
    try {
      expect(plain.paging).toBeNull();
      expect(paged.paging!.total.pagedInBytes).toBeGreaterThan(0);
      expect(paged.losses).toEqual(plain.losses);
      expect(paged.adapters!.values()).toEqual(plain.adapters!.values());
    } finally {
      plain.dispose();
      paged.dispose();
      await budgeted.dispose();
    }
  });

  it('qlora: the base is NF4 with double-quantized absmax as the host code makes it, and only the adapters train', async () => {
    const q = await finetune(dev, BASE, corpus, { ...RUN, method: 'qlora', lora: { r: 4, alpha: 8, targets: ['q', 'v'] } });
    const l = await finetune(dev, BASE, corpus, { ...RUN, method: 'lora', lora: { r: 4, alpha: 8, targets: ['q', 'v'] } });
    try {
      const seen = await q.baseWeights();
      const names = quantizedNames(CFG);
      expect(names.size).toBe(7 * CFG.numLayers);
      for (const [name, w] of BASE.weights) {
        if (!names.has(name)) {
          expect(seen.get(name)).toEqual(w);
          continue;
        }
        // Hugging Face's [out, in] flattened is the layout bitsandbytes quantizes (blocks along `in`).
        const nf4 = nf4Quantize(w, { blockSize: 64 });
        const want = nf4Dequantize({ ...nf4, absmax: doubleDequantize(doubleQuantize(nf4.absmax)) });
        const got = seen.get(name)!;
        let worst = 0;
        got.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - want[i]) / (Math.abs(want[i]) + 1e-30))));
        expect(worst, name).toBeLessThanOrEqual(2 ** -23);
        expect(got).not.toEqual(w);
      }
      expect(q.trainableParams).toBe(l.trainableParams);
      expect(q.peakByTag.grads).toBe(4 * q.trainableParams);
      expect(q.peakByTag.optimizer).toBe(8 * q.trainableParams);
      // Each linear's 4 bytes a weight became NF4's codes, 8-bit absmax, scales, mean, map and levels; nothing else differs.
      const saved = [...names].reduce((n, k) => {
        const [out, inF] = hfShapes(CFG).get(k)!;
        return n + 4 * out * inF - nf4WeightBytes(inF, out, { doubleQuant: true });
      }, 0);
      expect(l.peakByTag.weights - q.peakByTag.weights).toBe(saved);
      // At B = 0 QLoRA computes the fp32 model over the NF4-rounded weights.
      const rounded = fromHfWeights(CFG, seen).map((v, i) => dev.tensor(v, paramSpecs(CFG)[i].shape, 'fp32'));
      const want = await heldOutLoss(dev, CFG, rounded, OLD, 32, 4);
      rounded.forEach((t) => t.dispose());
      expect(Math.abs(q.heldOut.old.before - want)).toBeLessThan(1e-6);
      expect(q.heldOut.old.before).not.toBe(l.heldOut.old.before);
      expect(q.losses.slice(-2).reduce((a, b) => a + b) / 2).toBeLessThan(q.losses[0]);
    } finally {
      q.dispose();
      l.dispose();
    }
  });
});

describe('on the built-in model', () => {
  it('LoRA r 8 on q and v: 28,672 trainable parameters, and two steps on the State of the Union start from a trained model', async () => {
    const base = loadBase();
    const r = await finetune(dev, base, sotu(), { method: 'lora', steps: 2, batch: 2, context: 64, lr: 3e-3, seed: 1, lora: { r: 8, alpha: 16 } });
    try {
      // 4 layers x 8 x ((256 + 256) for q + (256 + 128) for v).
      expect(r.trainableParams).toBe(4 * 8 * (512 + 384));
      expect(r.baseParams).toBe(3_214_080);
      // A trained byte model: far below the uniform ln 258 = 5.55 nats.
      expect(r.losses[0]).toBeLessThan(2.5);
      expect(r.peakByTag.optimizer).toBe(8 * 28_672);
    } finally {
      r.dispose();
    }
  }, 60_000);
});

describe('finetune refuses', () => {
  const cases: [string, Partial<FinetuneOptions>, string][] = [
    ['an unknown method', { method: 'prefix' as never }, "method must be one of full, lora, qlora, got \"prefix\""],
    ['zero steps', { steps: 0 }, 'steps must be a positive integer, got 0'],
    ['a context past the model', { context: 33 }, "context 33 is past the model's 32 positions"],
    ['lr = 0', { lr: 0 }, 'need lr > 0'],
    ['minLr above lr', { minLr: 1 }, 'need lr > 0 and 0 <= minLr <= lr, got 0.01, 1'],
    ['a bad LoRA rank', { lora: { r: 0, alpha: 1 } }, 'r must be an integer >= 1, got 0'],
    ['an unknown precision', { method: 'full', precision: 'int8' as never }, 'precision must be fp32, bf16 or fp16, got "int8"'],
    ['a precision for qlora', { method: 'qlora', precision: 'bf16' }, "'qlora' stores its base in 4 bits"],
    ['bad AdamW options (passed through)', { adamw: { betas: [1.5, 0.9] } }, 'AdamW: betas must lie in [0, 1)'],
  ];
  for (const [what, change, message] of cases) {
    it(`${what}: a typed error, nothing left allocated`, async () => {
      const live = held();
      await expect(finetune(dev, BASE, corpus, { ...RUN, ...change })).rejects.toThrow(message);
      expect(held()).toEqual(live);
    });
  }

  it('LoRA errors are LoraErrors', async () => {
    await expect(finetune(dev, BASE, corpus, { ...RUN, lora: { r: 2, alpha: 1, targets: ['lm_head' as never] } })).rejects.toThrow(LoraError);
  });
});
