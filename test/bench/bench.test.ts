/** `servelab bench --json` prints the report the README documents; targets are judged from the measured numbers. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { checkTargets, type BenchReport } from '../../bench/run.ts';

describe('servelab bench', () => {
  it('prints the documented JSON from a real (quick) run', () => {
    const out = execFileSync('node', ['bin/servelab.js', 'bench', '--quick', '--json', '--device', 'cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
    const rep = JSON.parse(out) as BenchReport;
    expect(typeof rep.machine.cpu).toBe('string');
    expect(rep.machine.cores).toBeGreaterThan(0);
    expect(rep.machine.peakGflops).toBeGreaterThan(1);
    expect(rep.machine.peakSource).toMatch(/^(measured|derived)/);
    expect(rep.results.length).toBe(6);
    for (const r of rep.results) {
      expect(Object.keys(r)).toEqual(expect.arrayContaining(['op', 'dtype', 'm', 'k', 'n', 'backend', 'gflops', 'ms']));
      expect(r.backend).toBe('cpu');
      expect(r.ms).toBeGreaterThan(0);
      // Throughput is work over measured time, not a separate number.
      expect(r.gflops).toBeCloseTo((2 * r.m * r.k * r.n) / r.ms / 1e6, 6);
    }
    expect(rep.results.map((r) => r.dtype).sort()).toEqual(['fp32', 'fp32', 'int4', 'int4', 'int8', 'int8']);
    expect(rep.overhead.engineUs).toBeGreaterThan(0);
    expect(rep.overhead.rawUs).toBeGreaterThan(0);
    expect(rep.targets.map((t) => t.name)).toContain('4-bit decode GEMV 1x4096x4096 at least 5x faster than fp32');
  }, 300_000);

  it('names the gap of a missed target', () => {
    const rep = {
      machine: { cpu: 'x', cores: 2, simd: [], peakGflops: 400, peakSource: 'measured' },
      results: [
        { op: 'MatMul', dtype: 'fp32', m: 2048, k: 2048, n: 2048, backend: 'cpu', gflops: 200, ms: 86, runs: 5, variant: '' },
        { op: 'I', dtype: 'int8', m: 2048, k: 2048, n: 2048, backend: 'cpu', gflops: 300, ms: 57, runs: 5, variant: '' },
        { op: 'MatMul', dtype: 'fp32', m: 1, k: 4096, n: 4096, backend: 'cpu', gflops: 17, ms: 2, runs: 5, variant: '' },
        { op: 'N', dtype: 'int4', m: 1, k: 4096, n: 4096, backend: 'cpu', gflops: 170, ms: 0.2, runs: 5, variant: '' },
      ],
      overhead: { engineUs: 25, rawUs: 10, tiny: { what: 't', engineUs: 25, rawUs: 10 }, gemm1024: { what: 'g', engineUs: 1050, rawUs: 1000 } },
    } as unknown as BenchReport;
    const t = Object.fromEntries(checkTargets(rep).map((x) => [x.name, x]));
    expect(t['fp32 GEMM 2048 reaches 60% of peak']).toMatchObject({ met: false, gap: '40 GFLOP/s short' });
    expect(t['int8 GEMM 2048 at least 2x fp32']).toMatchObject({ met: false, measured: '1.50x', gap: '0.50x short' });
    expect(t['4-bit decode GEMV 1x4096x4096 at least 5x faster than fp32'].met).toBe(true);
    expect(t['engine overhead at GEMM 1024 within 10% of raw onnxruntime'].met).toBe(true);
    expect(t['engine overhead on a tiny op within 10 us'].met).toBe(false);
  });
});
