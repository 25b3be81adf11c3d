/** MatMul throughput per dtype: the shape of the result and the device's account of emulation (speed itself is for npm run bench). */
import { describe, expect, it } from 'vitest';
import { createDevice, dtypeNote, matmulThroughput } from '../../../engine/index.ts';

describe.each([
  ['cpu', 128, { fp32: false, fp16: true, bf16: true }],
  ['reference', 32, { fp32: false, fp16: true, bf16: true }],
] as const)('matmulThroughput on %s', (kind, size, emulated) => {
  it('times each dtype and says which are emulated', async () => {
    const dev = await createDevice(kind);
    const r = await matmulThroughput({ device: dev, m: size, k: size, n: size, runs: 3, maxRuns: 3, warmup: 1 });
    expect(r.kind).toBe(kind);
    expect(r.rows.map((x) => x.dtype)).toEqual(['fp32', 'fp16', 'bf16']);
    for (const x of r.rows) {
      expect(x.runs).toBe(3);
      expect(x.ms).toBeGreaterThan(0);
      expect(x.minMs).toBeLessThanOrEqual(x.ms);
      expect(x.gflops).toBeCloseTo((2 * size ** 3) / (x.ms * 1e6), 9);
      expect(x.emulated).toBe(emulated[x.dtype]);
      expect(x.note.length).toBeGreaterThan(0);
    }
    if (kind === 'cpu') expect(r.rows[1].note).toMatch(/^fp16: .*computed in fp32/);
    expect(dev.memory.live).toBe(0);
  });
});

describe('dtypeNote', () => {
  it('reads emulation from the device\'s notes: fp16 native on webgpu, bf16 emulated', () => {
    const webgpu = [
      'fp16: native in the GPU shaders; sums inside a kernel may be rounded to fp16 as they accumulate',
      'bf16: no onnxruntime kernel on this provider; computed in fp32 and rounded to bf16 after every op',
    ];
    expect(dtypeNote(webgpu, 'webgpu', 'fp16')).toEqual({ emulated: false, note: webgpu[0] });
    expect(dtypeNote(webgpu, 'webgpu', 'bf16')).toEqual({ emulated: true, note: webgpu[1] });
    expect(dtypeNote(webgpu, 'webgpu', 'fp32').emulated).toBe(false);
  });

  it('stops on an aborted signal', async () => {
    const dev = await createDevice('reference');
    await expect(matmulThroughput({ device: dev, m: 4, k: 4, n: 4, signal: AbortSignal.abort() })).rejects.toThrow(/aborted/i);
  });
});
