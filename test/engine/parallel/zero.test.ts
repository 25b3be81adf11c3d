// Data parallelism and ZeRO 1-3 on two worker threads training the built-in model: the same weights bit for bit,
// each worker's model states equal to the paper's formulas, and the communication volume per step.
import { describe, expect, it } from 'vitest';
import { ZeroTrainer } from '../../../engine/parallel/zero.ts';
import { WorkerError } from '../../../engine/parallel/errors.ts';
import { shardRange } from '../../../engine/parallel/shard.ts';
import { BatchSampler, mobyDick } from '../../../engine/train/corpus.ts';
import { loadJobParams } from '../../../engine/parallel/job.ts';

const corpus = mobyDick();
const batches = () => {
  const s = new BatchSampler(corpus.train, { batch: 4, context: 32, seed: 7 });
  return [s.next(), s.next()];
};
/** The rotary tables each worker's segments hold as constants (tag 'weights'): 2 x 256 x 32 fp32. */
const ROTARY = 2 * 256 * 32 * 4;
const { values } = loadJobParams();
const finalNorm = values[values.length - 1].length;

async function train(workers: number, stage: 0 | 1 | 2 | 3) {
  const t = await ZeroTrainer.start({ workers, stage });
  try {
    const steps = [];
    for (const b of batches()) steps.push(await t.step(b));
    return { steps, weights: await t.weights(), params: t.params, predicted: t.predicted() };
  } finally {
    await t.close();
  }
}

describe('ZeRO on 2 workers', () => {
  it('stages 1-3 give data parallelism\'s weights bit for bit, and hold the paper\'s model states', async () => {
    const runs: Awaited<ReturnType<typeof train>>[] = [];
    for (const stage of [0, 1, 2, 3] as const) runs.push(await train(2, stage));
    const psi = runs[0].params;
    expect(psi).toBe(values.reduce((n, v) => n + v.length, 0));
    for (const r of runs.slice(1)) {
      r.weights.forEach((w, i) => expect(w).toEqual(runs[0].weights[i]));
      expect(r.steps.map((s) => s.loss)).toEqual(runs[0].steps.map((s) => s.loss));
    }
    runs.forEach((r, stage) => {
      for (const s of r.steps) {
        s.workers.forEach((w, rank) => {
          // What this rank's shards hold exactly (the paper's Psi / N, give or take an element per parameter).
          const own = values.reduce((n, v) => n + shardRange(v.length, 2, rank).end - shardRange(v.length, 2, rank).start, 0);
          expect(w.states.optimizer).toBe(stage === 0 ? 12 * psi : 12 * own);
          expect(w.states.grads).toBe(stage <= 1 ? 2 * psi : 2 * own);
          expect(w.states.weights - ROTARY).toBe(stage <= 2 ? 2 * psi : 2 * own);
          expect(Math.abs(w.states.optimizer - r.predicted.optimizer)).toBeLessThanOrEqual(12 * values.length);
        });
        // Communication: 2 Psi elements (3 Psi at stage 3) x (N - 1) / N sent per worker. At stage 3 the head runs
        // once (its VJP gives the loss), so the final norm is gathered once, not twice, and the tied embedding a
        // third time, for the head.
        const extra = stage < 3 ? 0 : (values[0].length - finalNorm) / 2;
        expect(s.commElements).toBe(s.predictedComm.ring + extra);
        expect(s.workers[0].sent).toEqual(stage === 0 ? { allReduce: 2 * psi } : stage < 3 ? { reduceScatter: psi, allGather: psi } : { reduceScatter: psi, allGather: 2 * psi + 2 * extra });
      }
    });
  }, 120_000);

  it('two workers on half the batch each reach one worker\'s weights within bf16 rounding', async () => {
    const one = await train(1, 0);
    const two = await train(2, 2);
    let maxDiff = 0;
    one.weights.forEach((w, i) => w.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - two.weights[i][j])))));
    // Each worker rounds its gradient to bf16 before the sum; one worker rounds the whole batch's once. After two
    // AdamW steps of lr 1e-4 the weights differ by at most about a step (plus a bf16 ulp of a weight ~0.1: 2^-11).
    expect(maxDiff).toBeLessThan(2 * 1e-4 + 2 ** -10);
    expect(Math.abs(one.steps[0].loss - two.steps[0].loss)).toBeLessThan(1e-3);
  }, 120_000);

  it('bad input: stage, precision, more workers than sequences, a budget that cannot hold a worker\'s share', async () => {
    await expect(ZeroTrainer.start({ workers: 2, stage: 4 as 3 })).rejects.toThrow(/stage must be 0, 1, 2 or 3/);
    await expect(ZeroTrainer.start({ workers: 2, stage: 1, precision: 'fp32' })).rejects.toThrow(/mixed-precision/);
    const t = await ZeroTrainer.start({ workers: 3, stage: 1 });
    try {
      const s = new BatchSampler(corpus.train, { batch: 2, context: 16, seed: 1 });
      await expect(t.step(s.next())).rejects.toThrow(/2 sequences cannot be split among 3 workers/);
    } finally {
      await t.close();
    }
    const err = await ZeroTrainer.start({ workers: 2, stage: 3, budget: 4 * 2 ** 20 }).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerError);
    expect((err as Error).message).toMatch(/OutOfMemoryError/);
  }, 120_000);
});
