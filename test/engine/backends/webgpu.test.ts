/**
 * The op suite on onnxruntime's WebGPU provider. In CI the adapter is Mesa's lavapipe (scripts/webgpu-deps.sh,
 * then `. .cache/vulkan/env.sh` before node starts); there, a missing adapter fails instead of skipping.
 */
import { describe, expect, it } from 'vitest';
import { createDevice, dynamicQuantizeLinear, matmul, matmulInteger, webgpuUnavailable } from '../../../engine/index.ts';
import { adapterInfo } from '../../../engine/device/adapter.ts';
import { opSuite } from './op_suite.ts';

const why = await webgpuUnavailable();

if (why !== null && process.env.CI === 'true') {
  describe('webgpu backend', () => {
    it('has an adapter in CI', () => {
      throw new Error(`CI=true but WebGPU is unavailable: ${why}\nrun scripts/webgpu-deps.sh and source .cache/vulkan/env.sh before the tests`);
    });
  });
} else {
  describe.skipIf(why !== null)(`webgpu backend against the reference${why ? ` (skipped: ${why.slice(0, 120)})` : ''}`, () => {
    opSuite('webgpu');

    it('reports which kernels ran on the GPU and which fell back to the CPU', async () => {
      const dev = await createDevice('webgpu');
      const a = dev.tensor([1, 2, 3, 4], [2, 2]);
      await matmul(a, a);
      const q = await dynamicQuantizeLinear(a);
      await matmulInteger(q.y, q.y);
      const p = dev.placement();
      expect(p.MatMul).toBe('webgpu');
      // onnxruntime's WebGPU provider has no integer GEMM: visible, not hidden.
      expect(p.MatMulInteger).toBe('cpu');
      expect(p.DynamicQuantizeLinear).toBe('cpu');
    });

    it('names its adapter', () => {
      const info = adapterInfo();
      expect(info, 'vulkaninfo or nvidia-smi describes the adapter').not.toBeNull();
      expect(info!.name.length).toBeGreaterThan(0);
      expect(info!.backend).toMatch(/^Vulkan/);
    });
  });
}
