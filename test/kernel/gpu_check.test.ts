/**
 * `servelab gpu-check` packs a folder under 60 MiB that runs on a machine without Node or network. Proven here by
 * unpacking and running it from a clean temporary folder, with lavapipe standing in for the GPU.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { webgpuUnavailable } from '../../engine/index.ts';
import { packGpuCheck } from '../../kernel/commands/gpu_check.ts';

const why = await webgpuUnavailable();

describe('gpu-check bundle', () => {
  it.skipIf(why !== null && process.env.CI !== 'true')('packs under 60 MiB and runs the op suite and GEMM benchmark from a clean folder', async () => {
    expect(why, 'the bundle is proven on a WebGPU adapter (lavapipe in CI)').toBeNull();
    const packDir = mkdtempSync(join(tmpdir(), 'servelab-pack-'));
    const clean = mkdtempSync(join(tmpdir(), 'servelab-gpu-run-'));
    try {
      const out = await packGpuCheck({ out: join(packDir, 'gpu-check') });
      const size = Number(execFileSync('du', ['-sb', out], { encoding: 'utf8' }).split('\t')[0]);
      expect(size).toBeLessThan(60 * 2 ** 20);
      cpSync(out, join(clean, 'gpu-check'), { recursive: true });
      // No project folder around it and only the system's PATH: what the bundle carries, plus the Vulkan driver and
      // its tools (lavapipe's vulkaninfo here; a GPU machine's driver brings nvidia-smi).
      const driverTools = (process.env.PATH ?? '').split(':').filter((d) => d.includes('.cache/vulkan'));
      const env = {
        PATH: [...driverTools, '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':'),
        HOME: clean,
        OUT: join(clean, 'out'),
        VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? '',
        LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH ?? '',
        MESA_SHADER_CACHE_DIR: process.env.MESA_SHADER_CACHE_DIR ?? '',
      };
      execFileSync('bash', [join(clean, 'gpu-check', 'run.sh'), '--quick'], { cwd: clean, env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 });
      const result = JSON.parse(readFileSync(join(clean, 'out', 'gpu-check-result.json'), 'utf8'));
      expect(result.webgpu.available).toBe(true);
      // The host CPU's processor-bound targets, with its peaks (the loops compiled there when it has a compiler).
      expect(result.cpu.peak.source).toMatch(/^(measured|derived)/);
      expect(result.cpu.targets.int8OverFp32).toBeGreaterThan(0);
      expect(result.cpu.targets.int4DecodeOverFp32).toBeGreaterThan(0);
      expect(result.adapter.name.length).toBeGreaterThan(0);
      expect(result.ops.failed).toBe(0);
      expect(result.ops.passed).toBeGreaterThan(40);
      expect(result.ops.placement.MatMul).toBe('webgpu');
      const formats = new Set(result.gemm.results.map((r: { dtype: string }) => r.dtype));
      expect([...formats].sort()).toEqual(['fp32', 'int4', 'int8']);
      for (const r of result.gemm.results) expect(r.gflops).toBeGreaterThan(0);
    } finally {
      rmSync(packDir, { recursive: true, force: true });
      rmSync(clean, { recursive: true, force: true });
    }
  }, 600_000);
});
