/** MatMul throughput per dtype: timings that come from the runs (checked against an independent timing) and the device's account of emulation. */
import { describe, expect, it } from 'vitest';
import { createDevice, dtypeNote, Graph, matmulThroughput, type Device } from '../../../engine/index.ts';

/** The same fp32 product timed here, without timeMs: a plain loop of `runs` runs after three warm-ups, median. */
async function plainMedianMs(dev: Device, size: number, runs: number): Promise<number> {
  const w = dev.tensor(Array.from({ length: size * size }, (_, i) => Math.sin(i)), [size, size], 'fp32', { tag: 'weights' });
  const x = dev.tensor(Array.from({ length: size * size }, (_, i) => Math.cos(i)), [size, size]);
  const g = new Graph(`plain matmul ${size}`);
  g.output(g.op('MatMul', [g.input('x', 'fp32', [size, size]), g.constant('w', w)])[0]);
  const once = async () => (await dev.run(g, [x]))[0].dispose();
  for (let i = 0; i < 3; i++) await once();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await once();
    ts.push(performance.now() - t0);
  }
  x.dispose();
  w.dispose();
  return ts.sort((a, b) => a - b)[runs >> 1];
}

describe.each([
  ['cpu', 128, { fp32: false, fp16: true, bf16: true }],
  ['reference', 32, { fp32: false, fp16: true, bf16: true }],
] as const)('matmulThroughput on %s', (kind, size, emulated) => {
  it('times each dtype from real runs, and says which are emulated', async () => {
    const dev = await createDevice(kind);
    const runs = 7;
    // Timed first, so that the reference backend's kernels are already compiled by the JIT for both timings.
    const plain = await plainMedianMs(dev, size, runs);
    const t0 = performance.now();
    const r = await matmulThroughput({ device: dev, m: size, k: size, n: size, runs, maxRuns: runs, warmup: 2 });
    const wallMs = performance.now() - t0;
    expect(r.kind).toBe(kind);
    expect(r.rows.map((x) => x.dtype)).toEqual(['fp32', 'fp16', 'bf16']);
    for (const x of r.rows) {
      // ms is the median of the timed runs and minMs their minimum; GFLOP/s is 2 m k n over that median.
      const sorted = [...x.timing.samplesMs].sort((a, b) => a - b);
      expect([x.runs, sorted.length]).toEqual([runs, runs]);
      expect([x.ms, x.minMs]).toEqual([sorted[runs >> 1], sorted[0]]);
      expect(x.gflops / ((2 * size ** 3) / (x.ms * 1e6))).toBeCloseTo(1, 12);
      expect(x.emulated).toBe(emulated[x.dtype]);
      expect(x.note.startsWith(`${x.dtype}:`) || x.note.startsWith(`${kind}:`)).toBe(true);
    }
    // The timed runs happened inside the call, one after another: together they cannot exceed its wall time.
    const timed = r.rows.reduce((s, x) => s + x.timing.samplesMs.reduce((a, v) => a + v, 0), 0);
    expect(timed).toBeLessThanOrEqual(wallMs);
    // An independent timing of the same fp32 product agrees within a factor of 4 (a shared machine is noisy: 0.47-1.14
    // in five runs here), while a time in the wrong unit, a total of the 7 runs or a cached result is off by more.
    const fp32 = r.rows[0];
    expect(fp32.ms / plain).toBeGreaterThan(1 / 4);
    expect(fp32.ms / plain).toBeLessThan(4);
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
