/**
 * Eager ops reuse one graph and one compiled session across sizes (symbolic dims), give the reference backend's
 * numbers at every size, keep a size where the op needs one (broadcast 1s, Reshape targets), and still raise the
 * op's own typed errors naming the sizes. Tolerances: exact for small-integer products (every fp32 sum exact), 1e-6
 * relative for softmax and attention in fp32 (a few roundings; 1e-5 on webgpu, whose exp may be approximate), against
 * the float64 reference rounded once.
 */
import { describe, expect, it } from 'vitest';
import { add, apply, attention, createDevice, matmul, reshape, ShapeError, softmax, webgpuUnavailable, type Device, type Tensor } from '../../engine/index.ts';

const KINDS = ['cpu', 'reference', ...((await webgpuUnavailable()) === null ? ['webgpu'] : [])];

/** Small integers, so that fp32 products and sums are exact on every backend. */
const ints = (n: number, seed: number) => Array.from({ length: n }, (_, i) => ((i * 7 + seed * 13) % 11) - 5);
const created = (dev: Device) => dev.stats().sessionsCreated;

function close(got: Tensor, want: Tensor, rel: number): void {
  expect(got.shape).toEqual(want.shape);
  const g = got.toFloat32();
  const w = want.toFloat32();
  for (let i = 0; i < w.length; i++) expect(Math.abs(g[i] - w[i])).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(w[i])));
}

describe.each(KINDS)('eager ops on %s', (kind) => {
  it('matmul at batch 1..9 compiles one session and matches the reference exactly', async () => {
    const dev = await createDevice(kind);
    const ref = await createDevice('reference');
    const w = ints(16 * 8, 1);
    const wt = dev.tensor(w, [16, 8]);
    const before = created(dev);
    for (let m = 1; m <= 9; m++) {
      const x = ints(m * 16, m);
      const y = await matmul(dev.tensor(x, [m, 16]), wt);
      const want = await matmul(ref.tensor(x, [m, 16]), ref.tensor(w, [16, 8]));
      expect(y.shape).toEqual([m, 8]);
      expect(y.toArray()).toEqual(want.toArray());
    }
    expect(created(dev) - before).toBe(1);
    // Another rank is another graph; more leading dims again reuse it.
    await matmul(dev.tensor(ints(2 * 3 * 16, 5), [2, 3, 16]), wt);
    await matmul(dev.tensor(ints(4 * 5 * 16, 6), [4, 5, 16]), wt);
    expect(created(dev) - before).toBe(2);
  });

  it('a broadcast 1 keeps its own graph; equal shapes of any size share one', async () => {
    const dev = await createDevice(kind);
    const before = created(dev);
    const row = dev.tensor([10, 20, 30, 40], [1, 4]);
    const y = await add(dev.tensor(ints(12, 2), [3, 4]), row);
    expect(y.toArray()).toEqual(ints(12, 2).map((v, i) => v + [10, 20, 30, 40][i % 4]));
    expect((await add(dev.tensor(ints(20, 3), [5, 4]), row)).shape).toEqual([5, 4]);
    expect(created(dev) - before).toBe(1);
    for (const m of [1, 2, 7]) {
      const a = ints(m * 4, m);
      expect((await add(dev.tensor(a, [m, 4]), dev.tensor(a, [m, 4]))).toArray()).toEqual(a.map((v) => 2 * v));
    }
    expect(created(dev) - before).toBe(2);
  });

  it('softmax and causal attention over growing lengths: one session each, close to the reference', async () => {
    const dev = await createDevice(kind);
    const ref = await createDevice('reference');
    const tol = kind === 'webgpu' ? 1e-5 : 1e-6;
    const before = created(dev);
    for (const [b, s] of [[1, 3], [2, 5], [3, 1]]) {
      const v = Array.from({ length: b * s * 6 }, (_, i) => Math.sin(i * 0.7));
      close(await softmax(dev.tensor(v, [b, s, 6])), await softmax(ref.tensor(v, [b, s, 6])), tol);
    }
    expect(created(dev) - before).toBe(1);
    // A decode step per length: one query against t keys, 2 query heads sharing one kv head.
    for (let t = 1; t <= 5; t++) {
      const q = Array.from({ length: 2 * 4 }, (_, i) => Math.cos(i + t));
      const kv = Array.from({ length: t * 4 }, (_, i) => Math.sin(i * 0.3 + t));
      const got = await attention(dev.tensor(q, [1, 2, 1, 4]), dev.tensor(kv, [1, 1, t, 4]), dev.tensor(kv, [1, 1, t, 4]), { causal: true });
      const want = await attention(ref.tensor(q, [1, 2, 1, 4]), ref.tensor(kv, [1, 1, t, 4]), ref.tensor(kv, [1, 1, t, 4]), { causal: true });
      close(got, want, tol);
    }
    expect(created(dev) - before).toBe(2);
  });

  it('Reshape keeps its target sizes: a graph per target', async () => {
    const dev = await createDevice(kind);
    const before = created(dev);
    expect((await reshape(dev.tensor(ints(6, 1), [2, 3]), [3, 2])).shape).toEqual([3, 2]);
    expect((await reshape(dev.tensor(ints(6, 2), [2, 3]), [3, 2])).toArray()).toEqual(ints(6, 2));
    expect((await reshape(dev.tensor(ints(8, 1), [2, 4]), [4, 2])).shape).toEqual([4, 2]);
    expect(created(dev) - before).toBe(2);
  });
});

describe('eager op errors name the sizes, though the graph is symbolic', () => {
  it('a mismatch is the op\'s ShapeError, raised before any run', async () => {
    const dev = await createDevice('cpu');
    const w = dev.tensor(ints(12, 1), [4, 3]);
    await matmul(dev.tensor(ints(8, 1), [2, 4]), w);
    const runs = dev.stats().runs;
    const err = await matmul(dev.tensor(ints(10, 1), [2, 5]), w).catch((e) => e);
    expect(err).toBeInstanceOf(ShapeError);
    expect(err.message).toBe('MatMul: inner dimensions differ (5 vs 4) (shapes [2, 5], [4, 3])');
    await expect(add(dev.tensor(ints(6, 1), [2, 3]), dev.tensor(ints(6, 1), [3, 2]))).rejects.toThrow('Add: cannot broadcast dimension 2 against 3 (shapes [2, 3], [3, 2])');
    await expect(apply('LayerNormalization', [dev.tensor(ints(6, 1), [2, 3]), dev.tensor([1, 1], [2]), null])).rejects.toThrow(ShapeError);
    expect(dev.stats().runs).toBe(runs);
  });
});
