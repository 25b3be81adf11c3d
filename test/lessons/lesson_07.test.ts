/** Lesson 07 (QLoRA) end to end through the real kernel: every code cell in order, its measurements, and both exercises. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, solutionsOf } from './lesson_run.ts';

const SOLUTIONS = solutionsOf('lessons/07-qlora.solutions.md');

interface Measured {
  worstLevelDiff: number;
  entropy: Record<'nf4' | 'fp4' | 'int4', number>;
  errNormal: Record<'nf4' | 'fp4' | 'int4', number>;
  errModel: Record<'nf4' | 'fp4' | 'int4', number>;
  lossUp: Record<'NF4' | 'FP4' | 'int4', number>;
  storage: Record<string, { bytes: number; predicted: number; asymptotic: number }>;
  dqShare: number;
  T: number;
  P: number;
  runs: Record<string, { weights: number; grads: number; optimizer: number; trainable: number; last: number; first: number; sotuBefore: number; sotuAfter: number }>;
  paged: { same: boolean; steps: number; pagedIn: number; pagedOut: number; onDeviceOptimizer: number; pagedOptimizer: number; T: number };
}

describe('lesson 07 (QLoRA) through the kernel', () => {
  const { client, value, liveChart, runAll, exercise } = lessonRun('lessons/07-qlora.md');
  let m: Measured;

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', async () => {
    await runAll();
    m = (await value(`({
      worstLevelDiff,
      entropy: { nf4: entropyBits(shares.nf4), fp4: entropyBits(shares.fp4), int4: entropyBits(shares.int4) },
      errNormal: { nf4: errNormal.nf4.rmse, fp4: errNormal.fp4.rmse, int4: errNormal.int4.rmse },
      errModel: { nf4: errModel.nf4.rmse, fp4: errModel.fp4.rmse, int4: errModel.int4.rmse },
      lossUp: { NF4: lossUp('NF4'), FP4: lossUp('FP4'), int4: lossUp('int4') },
      storage, dqShare: sqDq / sqNf4, T, P: allParams,
      runs: Object.fromEntries(Object.entries(runs).map(([k, r]) => [k, {
        weights: r.peakByTag.weights, grads: r.peakByTag.grads, optimizer: r.peakByTag.optimizer, trainable: r.trainableParams,
        first: r.losses[0], last: r.losses.at(-1), sotuBefore: r.heldOut['State of the Union']?.before ?? NaN, sotuAfter: r.heldOut['State of the Union']?.after ?? NaN,
      }])),
      paged: { same, steps: PAGED_STEPS, pagedIn: stats.pagedInBytes, pagedOut: stats.pagedOutBytes, onDeviceOptimizer: onDevice.peakByTag.optimizer, pagedOptimizer: paged.peakByTag.optimizer, T: paged.trainableParams },
    })`)) as Measured;
  }, 600_000);

  it('rebuilds the NF4 levels from normal quantiles, and NF4 uses its codes most evenly', () => {
    expect(m.worstLevelDiff).toBeLessThan(1e-6);
    expect(m.entropy.nf4).toBeGreaterThan(m.entropy.fp4);
    expect(m.entropy.nf4).toBeGreaterThan(m.entropy.int4);
    expect(m.entropy.nf4).toBeLessThanOrEqual(4);
  });

  it('NF4 loses least on normal data and on the model, and the NF4 model scores closest to fp32', () => {
    for (const err of [m.errNormal, m.errModel]) {
      expect(err.nf4).toBeLessThan(err.int4);
      expect(err.nf4).toBeLessThan(err.fp4);
    }
    expect(m.lossUp.NF4).toBeGreaterThan(0);
    expect(m.lossUp.NF4).toBeLessThan(m.lossUp.int4);
    expect(m.lossUp.NF4).toBeLessThan(m.lossUp.FP4);
  });

  it('double quantization: the tracker counts exactly the formula, 4.5 and 4.127 bits a parameter at scale, at a negligible error', () => {
    const single = m.storage['NF4'];
    const double = m.storage['NF4 + double quantization'];
    expect(single.bytes).toBe(single.predicted);
    expect(double.bytes).toBe(double.predicted);
    expect(single.asymptotic).toBe(4.5);
    expect(double.asymptotic).toBeCloseTo(4.127, 3);
    expect(double.bytes).toBeLessThan(single.bytes);
    expect(m.dqShare).toBeLessThan(0.05);
  });

  it('QLoRA keeps the base in about a fifth of LoRA\'s bytes, trains the same adapters, and memory per method matches the formulas', () => {
    const { LoRA, QLoRA } = m.runs;
    const full = m.runs['full, fp32'];
    const mixed = m.runs['full, mixed precision'];
    expect(QLoRA.trainable).toBe(LoRA.trainable);
    for (const r of [LoRA, QLoRA]) {
      expect(r.grads).toBe(4 * r.trainable);
      expect(r.optimizer).toBe(8 * r.trainable);
      // One batch's loss is noisy over 16 steps; the held-out loss on the new text is what must fall.
      expect(r.sotuAfter).toBeLessThan(r.sotuBefore);
    }
    expect(QLoRA.weights).toBeLessThan(LoRA.weights / 4);
    // The live memory chart drew the adapters' Adam moments (m and v, fp32) while they trained.
    const memory = liveChart(/^Memory on .* by tag while LoRA, then QLoRA, train$/);
    expect(Math.max(...(memory.traces.find((t) => t.name === 'optimizer')!.y as number[]))).toBe(8 * m.T);
    expect(full.grads).toBe(4 * m.P);
    expect(full.optimizer).toBe(8 * m.P);
    expect(mixed.grads).toBe(2 * m.P);
    expect(mixed.optimizer).toBe(12 * m.P);
  });

  it('the paged optimizer moves every state out and back each step, keeps none on the device, and trains the same weights', () => {
    expect(m.paged.same).toBe(true);
    // m and v of every adapter parameter, fp32 (8 bytes), in and out at each step: all of the optimizer's state.
    expect(m.paged.pagedIn).toBe(m.paged.steps * 8 * m.paged.T);
    expect(m.paged.pagedOut).toBe(m.paged.steps * 8 * m.paged.T);
    expect(m.paged.onDeviceOptimizer).toBe(8 * m.paged.T);
  });

  for (const id of ['nf4block', 'bits']) {
    it(`the ${id} exercise fails with its starter code and passes with the reference solution`, async () => {
      const { starter, solved } = await exercise(id, SOLUTIONS[id]);
      expect(starter.length).toBeGreaterThan(0);
      expect(starter[0].ok).toBe(false);
      expect(solved.length).toBeGreaterThanOrEqual(2);
      expect(solved.every((f) => f.ok)).toBe(true);
    }, 120_000);
  }
});
