/**
 * Megatron tensor parallelism on worker threads (engine/parallel/tensor_parallel_train.ts) against one device running
 * the same model whole (SegmentedModel + AdamW, the same batch, lr and weight decay), with the all-reduce bytes and
 * each rank's weight bytes checked exactly against their formulas.
 *
 * The ranks compute the same functions with the row-parallel contractions (o, down) and the norms' backward split
 * into N partial sums added by the ring: fp32 reorderings only. Gradient errors are max |tp - ref| / max |ref| per
 * tensor; losses relative. Weights after AdamW steps are compared by their updates w - w0 (normwise relative) and by
 * the largest element difference in units of lr: Adam's first steps are about lr x g / (|g| + eps), so a gradient near
 * 0 (of the size of eps) can move by a fraction of lr on a rounding difference, while the update as a whole agrees.
 * Measured (deterministic run to run):
 *   built-in model, N = 2, fp32: losses 0 and 4.0e-7; gradients 9.6e-6; after 2 steps the updates 4.7e-4 normwise,
 *     the worst element 0.29 lr;
 *   tiny model, N = 4, fp32: losses 0 and 0; gradients 4.6e-7; updates 6.3e-6 normwise, worst element 7e-5 lr;
 *   tiny model, N = 2, bf16 parameters against fp32 arithmetic at the same (bf16-rounded) values: loss 0 (activations
 *     and all-reduces stay fp32, so only the reordering differs).
 * Bounds: losses 1e-5, gradients 1e-4, updates 2e-3 normwise, any weight within lr.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, ShapeError, type Device } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { AdamW } from '../../../engine/train/adamw.ts';
import { BatchSampler, mobyDick, type Batch } from '../../../engine/train/corpus.ts';
import { paramSpecs } from '../../../engine/train/lm_params.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { residentParams, SegmentedModel } from '../../../engine/train/segments.ts';
import { WorkerError } from '../../../engine/parallel/errors.ts';
import { loadJobParams, lossScale, splitBatch } from '../../../engine/parallel/job.ts';
import { tensorParallelWeightBytes, TensorParallelTrainer, type TensorParallelStep } from '../../../engine/parallel/tensor_parallel_train.ts';
import { maxRelError } from '../../helpers/rel_error.ts';
import { TINY_LLAMA } from '../../helpers/tiny_llama.ts';

const LR = 1e-3;
const WD = 0.01;
const TOL = 1e-5;
const GRAD_TOL = 1e-4;

/** Multi-head attention (4 kv heads) so that N = 4 divides every split; untied head. */
const TINY: LlamaConfig = { ...TINY_LLAMA, numKvHeads: 4, maxPositions: 16, tieWordEmbeddings: false };

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu', { threads: 1 });
});
afterAll(async () => {
  await dev.dispose();
});

const relErr = maxRelError;

/** Elements that differ (a plain loop: toEqual on millions of elements is slow). */
function mismatches(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/** One device, the whole batch: per batch the loss and gradients, then an AdamW step; the final weights. */
async function reference(cfg: LlamaConfig, values: Float32Array[], batches: Batch[]) {
  const specs = paramSpecs(cfg);
  const model = new SegmentedModel(dev, cfg, { precision: 'fp32' });
  const params = values.map((v, i) => dev.tensor(v, specs[i].shape, 'fp32', { tag: 'weights' }));
  const opt = new AdamW(dev, params, { lr: LR, weightDecay: WD });
  const losses: number[] = [];
  const grads: Float32Array[][] = [];
  for (const b of batches) {
    const g: Float32Array[] = specs.map((s) => new Float32Array(s.shape.reduce((x, y) => x * y, 1)));
    const loss = await model.step(splitBatch(b, 1)[0], lossScale(b), residentParams(params, (seg, ts) => {
      seg.params.forEach((i, k) => {
        const v = ts[k].toFloat32();
        for (let j = 0; j < v.length; j++) g[i][j] += v[j];
        ts[k].dispose();
      });
    }));
    const gt = g.map((v, i) => dev.tensor(v, specs[i].shape, 'fp32', { tag: 'grads' }));
    await opt.step(gt);
    gt.forEach((t) => t.dispose());
    losses.push(loss);
    grads.push(g);
  }
  const weights = params.map((p) => p.toFloat32());
  opt.dispose();
  params.forEach((p) => p.dispose());
  model.dispose();
  return { losses, grads, weights };
}

function randomBatch(cfg: LlamaConfig, batch: number, context: number, seed: number): Batch {
  const r = new Rng(seed);
  const draw = () => Int32Array.from({ length: batch * context }, () => r.uniformInt(cfg.vocabSize));
  return { tokens: draw(), labels: draw(), batch, context };
}

/**
 * Weights after AdamW steps, against one device's from the same start w0: the updates w - w0 agree normwise within
 * 2e-3 relative, and no weight differs by as much as lr (Adam moves an element about lr per step at most).
 */
function checkWeights(got: Float32Array[], want: Float32Array[], w0: Float32Array[]) {
  let worst = 0;
  got.forEach((w, i) => {
    let n = 0;
    let d = 0;
    for (let j = 0; j < w.length; j++) {
      const e = w[j] - want[i][j];
      n += (want[i][j] - w0[i][j]) ** 2;
      d += e * e;
      worst = Math.max(worst, Math.abs(e));
    }
    expect(Math.sqrt(d / n)).toBeLessThan(2e-3);
  });
  expect(worst).toBeLessThan(LR);
}

/** Exact all-reduce bytes: ring bytes per rank 2 (N - 1) / N x bytes, N dividing every count here. */
function checkComm(s: TensorParallelStep, cfg: LlamaConfig, N: number) {
  const perAllReduce = s.predicted.ringBytesPerRank / 4; // four b s h all-reduces per layer
  expect(s.predicted.elements * 4 * 4).toBe(s.predicted.bytes);
  for (const c of s.comm) {
    expect(c.forward).toEqual(Array(cfg.numLayers).fill(2 * perAllReduce));
    expect(c.backward).toEqual(Array(cfg.numLayers).fill(2 * perAllReduce));
    expect(c.forward[0] + c.backward[0]).toBe(s.predicted.ringBytesPerRank);
    // The norms: one all-reduce of 2 L hidden fp32 values.
    expect(c.norms).toBe((2 * (N - 1) * 2 * cfg.numLayers * cfg.hiddenSize * 4) / N);
    expect(c.calls).toEqual({ forward: 2 * cfg.numLayers, backward: 2 * cfg.numLayers, norms: 1 });
  }
}

describe('tensor parallelism, the built-in model on 2 workers (fp32)', () => {
  let tp: TensorParallelTrainer;
  const { cfg, values } = loadJobParams();
  const sampler = new BatchSampler(mobyDick().train, { batch: 2, context: 32, seed: 5 });
  const batches = [sampler.next(), sampler.next()];
  let ref: Awaited<ReturnType<typeof reference>>;
  beforeAll(async () => {
    [tp, ref] = await Promise.all([TensorParallelTrainer.start({ workers: 2, precision: 'fp32', lr: LR, weightDecay: WD }), reference(cfg, values, batches)]);
  }, 60_000);
  afterAll(() => tp?.close());

  it('gathers back the checkpoint; loss and gradients equal one device\'s', async () => {
    (await tp.weights()).forEach((w, i) => expect(mismatches(w, values[i])).toBe(0));
    expect(Math.abs((await tp.loss(batches[0])) - ref.losses[0]) / ref.losses[0]).toBeLessThan(TOL);
    const grads = await tp.gradients(batches[0]);
    const errs = grads.map((g, i) => relErr(g, ref.grads[0][i]));
    expect(Math.max(...errs)).toBeLessThan(GRAD_TOL);
  }, 30_000);

  it('two steps: losses and weights equal one device\'s; all-reduce bytes and weight bytes as predicted', async () => {
    const s1 = await tp.step(batches[0]);
    const s2 = await tp.step(batches[1]);
    expect(Math.abs(s1.loss - ref.losses[0]) / ref.losses[0]).toBeLessThan(TOL);
    expect(Math.abs(s2.loss - ref.losses[1]) / ref.losses[1]).toBeLessThan(TOL);
    checkWeights(await tp.weights(), ref.weights, values);
    checkComm(s2, cfg, 2);
    expect(s2.predicted.ringBytesPerRank).toBe(2 * 32 * 256 * 4 * 4); // (2 (N-1)/N = 1) x 4 all-reduces of b s h fp32
    const w = tensorParallelWeightBytes(cfg, 2, 'fp32');
    const rope = 2 * cfg.maxPositions * (cfg.headDim / 2) * 4;
    const numel = values.reduce((n, v) => n + v.length, 0);
    const replicated = values[0].length + cfg.hiddenSize * (2 * cfg.numLayers + 1);
    expect(w.replicated).toBe(4 * replicated);
    expect(w.sharded).toBe((4 * (numel - replicated)) / 2);
    for (const m of s2.memory) {
      expect(m.byTag.weights).toBe(w.perRank + rope);
      expect(m.byTag.optimizer).toBe(2 * w.perRank); // fp32: m and v
      expect(m.byTag.grads).toBe(0);
      expect(m.byTag.activations).toBe(0);
      // Every block's input kept until its VJP: 2 L + 1 activations of b s h fp32.
      expect(m.peakByTag.activations).toBeGreaterThanOrEqual((2 * cfg.numLayers + 1) * 2 * 32 * 256 * 4);
    }
    expect(s2.stepMs).toBeGreaterThan(0);
  }, 30_000);
});

describe('tensor parallelism, a tiny model', () => {
  it('4 workers (fp32): gradients and two steps equal one device\'s; all-reduce bytes exact', async () => {
    const tp = await TensorParallelTrainer.start({ workers: 4, precision: 'fp32', config: TINY, seed: 3, lr: LR, weightDecay: WD, threads: 1 });
    try {
      const batches = [randomBatch(TINY, 3, 8, 1), randomBatch(TINY, 3, 8, 2)];
      const w0 = await tp.weights();
      const ref = await reference(TINY, w0, batches);
      const grads = await tp.gradients(batches[0]);
      expect(Math.max(...grads.map((g, i) => relErr(g, ref.grads[0][i])))).toBeLessThan(GRAD_TOL);
      const steps = [await tp.step(batches[0]), await tp.step(batches[1])];
      steps.forEach((s, k) => expect(Math.abs(s.loss - ref.losses[k]) / ref.losses[k]).toBeLessThan(TOL));
      checkWeights(await tp.weights(), ref.weights, w0);
      checkComm(steps[1], TINY, 4);
      expect(steps[1].predicted.ringBytesPerRank).toBe(1.5 * 4 * 3 * 8 * 32 * 4);
    } finally {
      await tp.close();
    }
  }, 60_000);

  it('2 workers in bf16: 2-byte weights, 12 bytes of AdamW state per parameter, the loss near fp32\'s', async () => {
    const tp = await TensorParallelTrainer.start({ workers: 2, precision: 'bf16', config: TINY, seed: 3, lr: LR, weightDecay: WD, threads: 1 });
    try {
      const b = randomBatch(TINY, 2, 8, 4);
      const ref = await reference(TINY, await tp.weights(), [b]);
      const s = await tp.step(b);
      // The reference holds the same bf16-rounded values in fp32: only the arithmetic's order differs.
      expect(Math.abs(s.loss - ref.losses[0]) / ref.losses[0]).toBeLessThan(TOL);
      const w = tensorParallelWeightBytes(TINY, 2, 'bf16');
      const rope = 2 * TINY.maxPositions * (TINY.headDim / 2) * 4;
      for (const m of s.memory) {
        expect(m.byTag.weights).toBe(w.perRank + rope);
        expect(m.byTag.optimizer).toBe(6 * w.perRank); // fp32 master, m, v: 12 bytes per 2-byte param
      }
      checkComm(s, TINY, 2);
    } finally {
      await tp.close();
    }
  }, 60_000);
});

describe('tensor parallelism refuses and fails cleanly', () => {
  it('an N that does not divide the heads, kv heads or MLP width: ShapeError before any worker starts', async () => {
    const t0 = performance.now();
    await expect(TensorParallelTrainer.start({ workers: 3 })).rejects.toThrow(ShapeError);
    await expect(TensorParallelTrainer.start({ workers: 3 })).rejects.toThrow(/3 ranks do not divide numHeads \(query heads\) = 4/);
    await expect(TensorParallelTrainer.start({ workers: 4 })).rejects.toThrow(/4 ranks do not divide numKvHeads \(key\/value heads\) = 2/);
    await expect(TensorParallelTrainer.start({ workers: 4, config: { ...TINY, intermediateSize: 50 } })).rejects.toThrow(/intermediateSize \(the MLP width\) = 50/);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a rank that runs out of memory mid-step stops the group with a WorkerError; no hang', async () => {
    const w = tensorParallelWeightBytes(TINY, 2, 'fp32').perRank;
    const rope = 2 * TINY.maxPositions * (TINY.headDim / 2) * 4;
    // Room for the weights and AdamW's state, not for a step's activations and gradients.
    const tp = await TensorParallelTrainer.start({ workers: 2, precision: 'fp32', config: TINY, budget: 3 * w + rope + 1024, threads: 1 });
    const t0 = performance.now();
    const err = await tp.step(randomBatch(TINY, 4, 16, 9)).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerError);
    expect((err as Error).message).toMatch(/OutOfMemory|out of memory|budget/i);
    expect(performance.now() - t0).toBeLessThan(10_000);
    await expect(tp.loss(randomBatch(TINY, 1, 4, 1))).rejects.toThrow(WorkerError);
    await tp.close();
  }, 60_000);
});
