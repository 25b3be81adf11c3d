/**
 * GEMM error as K grows, on real devices. Tolerances: fp16 and bf16 results computed in fp32 (cpu) or float64
 * (reference) and rounded once stay within 1.05 u of the float64 product of the rounded inputs at every K; an
 * fp16 accumulator does not.
 */
import { describe, expect, it } from 'vitest';
import { adapterInfo, createDevice, gemmError, webgpuUnavailable, type GemmErrorResult } from '../../../engine/index.ts';

const U16 = 2 ** -11;
const U_BF16 = 2 ** -8;
const pick = (r: GemmErrorResult, dtype: string, source = 'device') => r.rows.filter((x) => x.dtype === dtype && x.source === source);

describe.each(['cpu', 'reference'] as const)('gemmError on %s', (kind) => {
  let result: GemmErrorResult;

  it('runs K = 64 .. 8192 for fp32, fp16, bf16 and the simulated fp16 accumulator', async () => {
    result = await gemmError({ device: await createDevice(kind) });
    expect(result.kind).toBe(kind);
    expect(result.ks).toEqual([64, 128, 256, 512, 1024, 2048, 4096, 8192]);
    expect(result.rows).toHaveLength(8 * 4);
    expect(result.notes.length).toBeGreaterThan(0);
    if (kind === 'cpu') expect(result.notes.join('\n')).toMatch(/fp16: .*computed in fp32 and rounded/);
  });

  it('fp16 and bf16: one rounding of the result at every K, so the error does not grow with K', () => {
    for (const [dtype, u] of [['fp16', U16], ['bf16', U_BF16]] as const) {
      const rows = pick(result, dtype);
      for (const r of rows) {
        expect(r.maxRelCompute).toBeLessThanOrEqual(1.05 * u);
        // Input rounding adds less than another u; the mean sits near 0.35 u, as for rounding a single value.
        expect(r.maxRel).toBeLessThan(2 * u);
        expect(r.meanRel).toBeLessThan(0.6 * u);
      }
      expect(rows[rows.length - 1].meanRel / rows[0].meanRel).toBeLessThan(2);
    }
    for (const r of pick(result, 'fp32')) expect(r.maxRel).toBeLessThan(1e-5);
  });

  it('an fp16 accumulator\'s error grows with K: over 50x from K = 64 to 8192, past 10% at 8192', () => {
    const sim = pick(result, 'fp16', 'fp16-accumulate');
    for (let i = 1; i < sim.length; i++) expect(sim[i].meanRel).toBeGreaterThan(sim[i - 1].meanRel);
    expect(sim[sim.length - 1].meanRel / sim[0].meanRel).toBeGreaterThan(50);
    expect(sim[sim.length - 1].meanRel).toBeGreaterThan(0.1);
  });
});

describe('gemmError options', () => {
  it('takes its own sizes and dtypes, and stops on an aborted signal before any kernel', async () => {
    const dev = await createDevice('reference');
    const r = await gemmError({ device: dev, ks: [16, 32], m: 2, n: 3, dtypes: ['fp16'], simulateFp16Accumulation: false, distribution: 'signed' });
    expect(r.rows.map((x) => [x.dtype, x.source, x.k])).toEqual([['fp16', 'device', 16], ['fp16', 'device', 32]]);
    expect(r.rows.every((x) => x.normRel < 2 * U16)).toBe(true);
    await expect(gemmError({ device: dev, signal: AbortSignal.abort() })).rejects.toThrow(/aborted/i);
    await expect(gemmError({ device: dev, ks: [0] })).rejects.toThrow(/positive integer/);
    expect(dev.memory.live).toBe(0);
  });
});

const why = await webgpuUnavailable();

describe.skipIf(why !== null)(`gemmError on webgpu${why ? ' (skipped: no WebGPU adapter)' : ''}`, () => {
  it('fp16 error grows with K there: the shader accumulates in fp16', async () => {
    const r = await gemmError({ device: await createDevice('webgpu'), dtypes: ['fp16'] });
    expect(r.notes.join('\n')).toMatch(/fp16: native/);
    const dev = pick(r, 'fp16');
    expect(dev[dev.length - 1].meanRel / dev[0].meanRel).toBeGreaterThan(10);
    expect(dev[dev.length - 1].meanRel).toBeGreaterThan(10 * U16);
    // lavapipe runs onnxruntime's shader as written: one rounding per product and per partial sum, left to
    // right, exactly the simulation. A hardware GPU may fuse multiply-adds or split the sum, so only there is it exact.
    if (adapterInfo()?.software) {
      const sim = pick(r, 'fp16', 'fp16-accumulate');
      expect(dev.map((x) => x.maxRel)).toEqual(sim.map((x) => x.maxRel));
    }
  });
});
