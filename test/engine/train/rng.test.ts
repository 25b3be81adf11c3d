/** The training Rng against the classic stateful mulberry32 (Tommy Ettinger's published loop), and its resumability. */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../engine/train/rng.ts';

/** mulberry32 as published: a 32-bit state stepped by 0x6D2B79F5, then mixed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

describe('Rng', () => {
  it('draws the published mulberry32 sequence', () => {
    for (const seed of [0, 1, 42, -7, 2 ** 31 + 5]) {
      const r = new Rng(seed);
      const m = mulberry32(seed);
      for (let i = 0; i < 1000; i++) expect(r.nextUint32()).toBe(m());
    }
  });

  it('uniformInt stays in range and hits every value', () => {
    const r = new Rng(3);
    const seen = new Uint32Array(7);
    for (let i = 0; i < 7000; i++) seen[r.uniformInt(7)]++;
    for (const c of seen) expect(c).toBeGreaterThan(800);
    expect(() => r.uniformInt(0)).toThrow(/uniformInt/);
  });

  it('normal has mean 0 and variance 1 (20,000 draws, 4 standard errors)', () => {
    const r = new Rng(11);
    const n = 20000;
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    expect(Math.abs(s / n)).toBeLessThan(4 / Math.sqrt(n));
    // Var of z^2 is 2, so the sample variance has standard error sqrt(2 / n).
    expect(Math.abs(s2 / n - 1)).toBeLessThan(4 * Math.sqrt(2 / n));
    expect(new Rng(11).normal(5, 0.5)).toBeCloseTo(5 + 0.5 * new Rng(11).normal(), 12);
  });

  it('a saved state resumes the same stream, halfway through a Box-Muller pair included', () => {
    const a = new Rng(99);
    for (let i = 0; i < 10; i++) a.uniformInt(1000);
    a.normal(); // leaves a spare
    const saved = JSON.parse(JSON.stringify(a.state()));
    const rest = [a.normal(), a.uniform(), a.normal(), a.uniformInt(5)];
    const b = Rng.fromState(saved);
    expect([b.normal(), b.uniform(), b.normal(), b.uniformInt(5)]).toEqual(rest);
    a.restore(saved);
    expect(a.normal()).toBe(rest[0]);
  });
});
