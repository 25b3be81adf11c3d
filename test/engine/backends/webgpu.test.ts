/**
 * The op suite on onnxruntime's WebGPU provider. In CI the adapter is Mesa's lavapipe (scripts/webgpu-deps.sh,
 * then `. .cache/vulkan/env.sh` before node starts); there, a missing adapter fails instead of skipping.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createDevice, dynamicQuantizeLinear, Graph, matmul, matmulInteger, webgpuUnavailable } from '../../../engine/index.ts';
import { OrtBackend } from '../../../engine/backends/ort.ts';
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

    it('leaves no profile file behind, for a session released before it ran as for one that ran', async () => {
      // Each WebGPU session profiles its first run to learn where its kernels ran; the profile is a temporary file.
      const mine = () => readdirSync(tmpdir()).filter((n) => n.startsWith(`servelab-ort-${process.pid}-`));
      const before = mine().length;
      const dev = await createDevice('webgpu');
      const g = new Graph('profiled');
      const a = g.input('a', 'fp32', [2]);
      g.output(g.op('Add', [a, a])[0]);
      const exe = await (dev.backend as OrtBackend).compile(g);
      expect(mine().length).toBe(before + 1);
      await exe.release();
      expect(mine().length).toBe(before);
      const x = dev.tensor([1, 2], [2]);
      (await dev.run(g, [x]))[0].dispose();
      expect(mine().length).toBe(before);
      await dev.dispose();
      expect(mine().length).toBe(before);
    });

    it('names its adapter', () => {
      const info = adapterInfo();
      expect(info, 'vulkaninfo or nvidia-smi describes the adapter').not.toBeNull();
      expect(info!.name.length).toBeGreaterThan(0);
      expect(info!.backend).toMatch(/^Vulkan/);
    });
  });
}
