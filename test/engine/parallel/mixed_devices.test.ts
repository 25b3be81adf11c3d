/**
 * One machine with a GPU and CPU workers: the same ZeRO code on a group whose rank 0 runs onnxruntime's WebGPU
 * provider and rank 1 the CPU. In CI the adapter is Mesa's lavapipe; there a missing adapter fails instead of skipping.
 */
import { describe, expect, it } from 'vitest';
import { webgpuUnavailable } from '../../../engine/index.ts';
import { ZeroTrainer } from '../../../engine/parallel/zero.ts';
import { BatchSampler, mobyDick } from '../../../engine/train/corpus.ts';

const why = await webgpuUnavailable();

async function stepOnce(device: string[]) {
  const t = await ZeroTrainer.start({ workers: 2, stage: 2, device });
  try {
    const r = await t.step(new BatchSampler(mobyDick().train, { batch: 2, context: 16, seed: 3 }).next());
    return { loss: r.loss, weights: await t.weights() };
  } finally {
    await t.close();
  }
}

if (why !== null && process.env.CI === 'true') {
  describe('a group with a webgpu worker', () => {
    it('has an adapter in CI', () => {
      throw new Error(`CI=true but WebGPU is unavailable: ${why}\nrun scripts/webgpu-deps.sh and source .cache/vulkan/env.sh before the tests`);
    });
  });
} else {
  describe.skipIf(why !== null)('a group with a webgpu worker and a cpu worker', () => {
    it('trains a ZeRO-2 step to the all-cpu weights within a bf16 rounding', async () => {
      const cpu = await stepOnce(['cpu', 'cpu']);
      const mixed = await stepOnce(['webgpu', 'cpu']);
      let maxDiff = 0;
      cpu.weights.forEach((w, i) => w.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - mixed.weights[i][j])))));
      // The GPU's kernels sum in another order; a gradient a rounding apart can move a bf16 weight by one ulp (~2^-13
      // at 0.05) or, where AdamW's step flips, by up to lr = 1e-4 more.
      expect(maxDiff).toBeLessThan(1e-4 + 2 ** -12);
      expect(Math.abs(cpu.loss - mixed.loss)).toBeLessThan(1e-3);
    }, 180_000);
  });
}
