/**
 * Training a tiny byte-level Llama on cpu (engine/train/trainer.ts): determinism from the seed, a resumed run equal
 * to the uninterrupted one, learning on a repetitive text, held-out loss against float64 cross entropy over
 * referenceLogits, and the learning-rate schedule by hand.
 *
 * Tolerances: repeated and resumed runs are bit-identical (same kernels, same inputs, same order: compared with
 * toEqual on the fp32 losses and parameters). heldOutLoss (the training graph) and evaluate() of the saved-and-loaded
 * fp32 model (the serving graph) agree with each other and with the float64 reference to 1e-6 nats: means of 256
 * token losses of ~4 nats, each from fp32 logits (measured 1.4e-8 and 2.1e-8, untied and tied).
 * The 30-step run goes from 5.54 nats (ln 258) to about 1.55; the bound is half the first step's loss.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_LLAMA } from '../model/tiny_config.ts';
import { createDevice, type Device, type Tensor } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { loadModel, saveModel } from '../../../engine/model/checkpoint.ts';
import { evaluate } from '../../../engine/model/evaluate.ts';
import { referenceLogits } from '../../../engine/model/reference.ts';
import { evalBatches, makeCorpus } from '../../../engine/train/corpus.ts';
import { toHfWeights } from '../../../engine/train/lm_params.ts';
import { heldOutLoss, learningRate, train, type TrainRecipe } from '../../../engine/train/trainer.ts';

/** The tiny shape over bytes (256 and the two special tokens), with a context of 32. */
const MODEL: LlamaConfig = { ...TINY_LLAMA, vocabSize: 258, maxPositions: 32 };
const RECIPE: TrainRecipe = { model: MODEL, batch: 4, context: 32, steps: 6, lr: 1e-2, minLr: 1e-3, warmup: 2, weightDecay: 0.1, seed: 42 };

/** A repetitive text: a few sentences, over and over, so that a tiny model learns it in a few dozen steps. */
const TEXT = 'the cat sat on the mat. the dog ran to the log. a bird in the hand. '.repeat(80);
const corpus = makeCorpus(new TextEncoder().encode(TEXT));

let dev: Device;
let tmp: string;
beforeAll(async () => {
  dev = await createDevice('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'servelab-lm-train-'));
});
afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await dev.dispose();
});

const dispose = (ps: Tensor[]) => ps.forEach((p) => p.dispose());

describe('train', () => {
  let reference: { losses: number[]; params: Float32Array[] };
  beforeAll(async () => {
    const r = await train(dev, RECIPE, corpus);
    reference = { losses: r.state.losses, params: r.params.map((p) => p.toFloat32()) };
    dispose(r.params);
    expect(r.partial).toBe(false);
  });

  it('two runs from the same seed give identical losses and parameters', async () => {
    expect(reference.losses).toHaveLength(6);
    // The first step sees an untrained model: about ln 258 = 5.55 nats per byte.
    expect(Math.abs(reference.losses[0] - Math.log(258))).toBeLessThan(0.2);
    const r = await train(dev, RECIPE, corpus);
    expect(r.state.losses).toEqual(reference.losses);
    r.params.forEach((p, i) => expect(p.toFloat32()).toEqual(reference.params[i]));
    dispose(r.params);
  });

  it('another seed gives other losses (the control)', async () => {
    const r = await train(dev, { ...RECIPE, seed: 43 }, corpus);
    expect(r.state.losses).not.toEqual(reference.losses);
    dispose(r.params);
  });

  it('stopped after 3 steps and resumed from its checkpoint: the same 6 losses and parameters, exactly', async () => {
    const dir = join(tmp, 'resume');
    const first = await train(dev, RECIPE, corpus, { checkpointDir: dir, stopAfter: 3 });
    expect(first.partial).toBe(true);
    expect(first.state.step).toBe(3);
    expect(first.state.losses).toEqual(reference.losses.slice(0, 3));
    dispose(first.params);
    const steps: number[] = [];
    const rest = await train(dev, RECIPE, corpus, { checkpointDir: dir, resume: true, onStep: (log) => steps.push(log.step) });
    expect(steps).toEqual([4, 5, 6]); // it resumed: steps 1-3 were not run again
    expect(rest.partial).toBe(false);
    expect(rest.state.losses).toEqual(reference.losses);
    rest.params.forEach((p, i) => expect(p.toFloat32()).toEqual(reference.params[i]));
    dispose(rest.params);
  });

  it('resuming with another recipe is refused, naming the checkpoint file', async () => {
    const dir = join(tmp, 'other-recipe');
    dispose((await train(dev, RECIPE, corpus, { checkpointDir: dir, stopAfter: 2 })).params);
    await expect(train(dev, { ...RECIPE, lr: 2e-2 }, corpus, { checkpointDir: dir, resume: true })).rejects.toThrow(`${join(dir, 'checkpoint.json')} was written by another recipe`);
  });

  it('the loss falls over 30 steps on the repetitive text: the last 5 steps average under half the first', async () => {
    const r = await train(dev, { ...RECIPE, steps: 30, warmup: 3 }, corpus);
    dispose(r.params);
    const losses = r.state.losses;
    expect(losses).toHaveLength(30);
    const tail = losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
    expect(tail).toBeLessThan(losses[0] / 2);
  });
});

describe('heldOutLoss and evaluate', () => {
  for (const tied of [false, true]) {
    it(`${tied ? 'tied' : 'untied'} head: the training graph's held-out loss equals evaluate() of the saved fp32 checkpoint and float64 cross entropy (1e-6)`, async () => {
      const model = { ...MODEL, tieWordEmbeddings: tied };
      const recipe = { ...RECIPE, model };
      const { params } = await train(dev, recipe, corpus);
      const C = recipe.context;
      const data = corpus.heldOut;
      try {
        const trained = await heldOutLoss(dev, model, params, data, C, 4);

        // Float64 cross entropy over the same windows, from the same weights in Hugging Face layout.
        const weights = toHfWeights(model, params);
        let total = 0;
        let count = 0;
        for (const b of evalBatches(data, C, 4)) {
          for (let r = 0; r < b.tokens.length / C; r++) {
            const z = referenceLogits(model, weights, Array.from(b.tokens.subarray(r * C, (r + 1) * C)));
            for (let t = 0; t < C; t++) {
              const row = z.subarray(t * model.vocabSize, (t + 1) * model.vocabSize);
              const max = Math.max(...row);
              const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
              total += lse - row[b.labels[r * C + t]];
              count++;
            }
          }
        }
        expect(count).toBe(Math.floor((data.length - 1) / C) * C);
        const want = total / count;
        expect(Math.abs(trained - want)).toBeLessThanOrEqual(1e-6);

        const dir = join(tmp, `saved-${tied}`);
        saveModel(dir, model, weights, { dtype: 'fp32' });
        const served = await loadModel(dir, { device: dev });
        try {
          const q = await evaluate(served, data, { context: C, batch: 4 });
          expect(q.tokens).toBe(count);
          expect(Math.abs(q.nats - want)).toBeLessThanOrEqual(1e-6);
          expect(Math.abs(q.nats - trained)).toBeLessThanOrEqual(1e-6);
          expect(q.bitsPerByte).toBeCloseTo(q.nats / Math.LN2, 12);
        } finally {
          served.dispose();
        }
      } finally {
        dispose(params);
      }
    });
  }
});

describe('learningRate', () => {
  const r = { ...RECIPE, lr: 1e-2, minLr: 1e-3, warmup: 4, steps: 20 };

  it('warms up linearly from lr / warmup to lr at the last warmup step', () => {
    expect(learningRate(r, 0)).toBeCloseTo(1e-2 / 4, 15);
    expect(learningRate(r, 1)).toBeCloseTo(2e-2 / 4, 15);
    expect(learningRate(r, 3)).toBeCloseTo(1e-2, 15);
  });

  it('decays by a cosine from lr at the end of warmup to minLr at step `steps`, and stays there', () => {
    expect(learningRate(r, 4)).toBeCloseTo(1e-2, 15);
    // Halfway through the decay, cos(pi / 2) = 0: the mean of lr and minLr.
    expect(learningRate(r, 12)).toBeCloseTo((1e-2 + 1e-3) / 2, 15);
    // A quarter of the way: minLr + (lr - minLr) (1 + cos(pi / 4)) / 2.
    expect(learningRate(r, 8)).toBeCloseTo(1e-3 + 9e-3 * (1 + Math.SQRT1_2) / 2, 15);
    expect(learningRate(r, 20)).toBeCloseTo(1e-3, 15);
    expect(learningRate(r, 100)).toBeCloseTo(1e-3, 15);
    for (let t = 4; t < 20; t++) expect(learningRate(r, t + 1)).toBeLessThan(learningRate(r, t));
  });
});
