/**
 * A Linear's graph takes every batch size: x is ['m', K] (or ['d0', 'd1', K]), so one compiled session serves a
 * 2048 x 2048 layer at batch 1..16 in every format, with the numbers of a graph compiled for the exact shape.
 *
 * Tolerances (normwise relative error of a row against x @ W in float64, K = 2048, W ~ N(0, 1/K), x uniform in
 * [-1, 1]): fp32 1e-6, fp16 2e-3 (x, W and y rounded at 2^-11), bf16 1e-2 (2^-8), int8 and llm.int8 3e-2 (one step
 * of absmax / 127 per value), int4 0.15 (one step of absmax / 7 per weight). Symbolic against exact-shape sessions:
 * 1e-6 of the output's largest magnitude (the same kernels; only a fused kernel's summation order may differ).
 */
import { describe, expect, it } from 'vitest';
import { createDevice, Graph, Linear, webgpuUnavailable, type Device, type LinearFormat, type Tensor } from '../../../engine/index.ts';

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uniform = (n: number, seed: number, half = 1) => {
  const r = mulberry(seed);
  return Float32Array.from({ length: n }, () => (2 * r() - 1) * half);
};

const TOLERANCE: Record<LinearFormat, number> = { fp32: 1e-6, fp16: 2e-3, bf16: 1e-2, 'int8-tensor': 0.1, int8: 3e-2, 'llm.int8': 3e-2, int4: 0.15, nf4: 0.12, fp4: 0.16 };

/** ||y_row - x_row W|| / ||x_row W|| in float64. */
function rowError(y: Float32Array, x: Float32Array, w: Float32Array, row: number, K: number, N: number): number {
  let e = 0;
  let r = 0;
  for (let j = 0; j < N; j++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x[row * K + k] * w[k * N + j];
    e += (y[row * N + j] - s) ** 2;
    r += s * s;
  }
  return Math.sqrt(e / r);
}

describe('a 2048 x 2048 Linear on cpu', () => {
  const K = 2048;
  const w = uniform(K * K, 1, Math.sqrt(3 / K));
  const dev = createDevice('cpu');

  for (const format of ['fp32', 'fp16', 'bf16', 'int8', 'llm.int8', 'int4'] as const) {
    it(`${format}: batch 1..16 runs one session, each batch as accurate as the format`, async () => {
      const d = await dev;
      const source = d.tensor(w, [K, K], 'fp32', { tag: 'weights' });
      const lin = await Linear.fromWeights(d, source, { format, label: `big.${format}`, ...(format === 'int4' ? { accuracyLevel: 4 as const } : {}) });
      source.dispose();
      const before = d.stats().sessionsCreated;
      for (let m = 1; m <= 16; m++) {
        const xv = uniform(m * K, 100 + m);
        const y = await lin.forward(d.tensor(xv, [m, K]));
        expect(y.shape).toEqual([m, K]);
        if (m === 1 || m === 16) {
          const yv = y.toFloat32();
          for (const row of [0, m - 1]) expect(rowError(yv, xv, w, row, K, K)).toBeLessThan(TOLERANCE[format]);
        }
        y.dispose();
      }
      expect(d.stats().sessionsCreated - before).toBe(1);
      lin.dispose();
    }, 60_000);
  }

  it('rank 3 is one more graph, whatever its two leading dims', async () => {
    const d = await dev;
    const source = d.tensor(w, [K, K], 'fp32', { tag: 'weights' });
    const lin = await Linear.fromWeights(d, source, { format: 'fp32' });
    source.dispose();
    const before = d.stats();
    for (const [b, s] of [[2, 8], [4, 3], [1, 1]]) {
      const y = await lin.forward(d.tensor(uniform(b * s * K, b + s), [b, s, K]));
      expect(y.shape).toEqual([b, s, K]);
    }
    const after = d.stats();
    expect([after.sessionsCreated - before.sessionsCreated, after.graphs - before.graphs]).toEqual([1, 1]);
    lin.dispose();
  }, 60_000);
});

const KINDS = ['cpu', 'reference', ...((await webgpuUnavailable()) === null ? ['webgpu'] : [])];

async function exactShape(dev: Device, lin: Linear, x: Tensor): Promise<Tensor> {
  const g = new Graph('exact');
  g.output(lin.addTo(g, g.input('x', x.dtype, x.shape)));
  return (await dev.run(g, [x]))[0];
}

describe.each(KINDS)('symbolic Linear graphs against exact-shape ones on %s', (kind) => {
  for (const format of ['fp32', 'fp16', 'int8', 'int4'] as const) {
    it(format, async () => {
      const dev = await createDevice(kind);
      const K = 64;
      const N = 48;
      const lin = await Linear.fromWeights(dev, dev.tensor(uniform(K * N, 2, 0.2), [K, N], 'fp32', { tag: 'weights' }), { format, bias: uniform(N, 3) });
      for (const shape of [[1, K], [3, K], [15, K], [2, 5, K], [K]]) {
        const x = dev.tensor(uniform(shape.reduce((p, d) => p * d, 1), shape.length), shape, format === 'fp16' ? 'fp16' : 'fp32');
        const got = (await lin.forward(x)).toFloat32();
        const want = (await exactShape(dev, lin, x)).toFloat32();
        const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(1e-6 * scale);
      }
    });
  }
});
