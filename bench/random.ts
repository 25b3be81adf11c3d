/** Seeded random numbers for tests and benchmarks (mulberry32), so a failing case reproduces. */
import type { Device, MemoryTag, Tensor } from '../engine/index.ts';
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seeded permutation of 0..n-1 (Fisher-Yates). */
export function shuffled(n: number, seed: number): number[] {
  const r = rng(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

export function uniform(r: () => number, n: number, lo = -1, hi = 1): number[] {
  return Array.from({ length: n }, () => lo + (hi - lo) * r());
}

export function ints(r: () => number, n: number, lo: number, hi: number): number[] {
  return Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo + 1)));
}

/** An fp32 tensor uniform in [-1, 1), seeded; filled in place, as benchmark weights run to 16M values. */
export function randomTensor(dev: Device, shape: number[], seed: number, tag: MemoryTag = 'activations'): Tensor {
  const r = rng(seed);
  // Filled in place: no temporary copy, which the memory check would otherwise see as growth.
  const t = dev.empty(shape, 'fp32', { tag });
  const v = t.data as Float32Array;
  for (let i = 0; i < v.length; i++) v[i] = 2 * r() - 1;
  return t.touch();
}
