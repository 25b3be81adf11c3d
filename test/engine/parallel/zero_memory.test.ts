/**
 * ZeRO's model-state memory and communication (Rajbhandari et al. 2020) against the paper: Figure 1's 7.5B-parameter
 * model on 64 devices with K = 12 (120 GB, 31.4 GB, 16.6 GB, 1.9 GB per device), the lecture's savings (73.8%, 86.2%,
 * 98.4%: one minus the paper's rounded figures over 120 GB), the 4x and 8x reductions of section 5 as N grows, and the
 * 2Ψ / 3Ψ communication volumes of section 7.
 */
import { describe, expect, it } from 'vitest';
import { zeroCommElements, zeroMemoryBytes, zeroSavings, type ZeroStage } from '../../../engine/parallel/zero_memory.ts';
import { mixedPrecisionAdam } from '../../../engine/train/memory_formula.ts';
import { ServelabError } from '../../../engine/errors.ts';

const GB = 1e9;
const STAGES: ZeroStage[] = [0, 1, 2, 3];
const round1 = (x: number) => Math.round(x * 10) / 10;

describe('ZeRO model-state memory', () => {
  const fig1 = STAGES.map((stage) => zeroMemoryBytes({ params: 7.5e9, workers: 64, stage }));

  it("Figure 1: 7.5B parameters, N = 64, K = 12: 120, 31.4, 16.6 and 1.9 GB per device", () => {
    expect(fig1.map((m) => m.total / GB)).toEqual([120, 31.40625, 16.640625, 1.875]);
    expect(fig1.map((m) => round1(m.total / GB))).toEqual([120, 31.4, 16.6, 1.9]);
  });

  it('by tag: each stage shards one more of optimizer state, gradients, weights', () => {
    expect(fig1.map(({ weights, grads, optimizer }) => [weights, grads, optimizer].map((b) => b / GB))).toEqual([
      [15, 15, 90],
      [15, 15, 1.40625],
      [15, 0.234375, 1.40625],
      [0.234375, 0.234375, 1.40625],
    ]);
    expect(fig1[2].formula).toBe('ZeRO stage 2 (Pos+g): 2Ψ + (2 + K)Ψ/N bytes, K = 12, N = 64; activations excluded');
  });

  it('stage 0 is mixed-precision Adam, tag for tag', () => {
    const base = mixedPrecisionAdam(3_200_000);
    const z = zeroMemoryBytes({ params: 3_200_000, workers: 4, stage: 0 });
    expect([z.weights, z.grads, z.optimizer, z.total]).toEqual([base.weights, base.grads, base.optimizer, base.total]);
  });

  it("the lecture's savings 73.8%, 86.2%, 98.4% are one minus the paper's rounded figures over 120 GB; exact: 73.8%, 86.1%, 98.4%", () => {
    const lecture = fig1.slice(1).map((m) => round1(100 * (1 - round1(m.total / GB) / 120)));
    expect(lecture).toEqual([73.8, 86.2, 98.4]);
    const exact = ([1, 2, 3] as const).map((s) => zeroSavings(s, 64));
    expect(exact).toEqual([0.73828125, 0.861328125, 0.984375]);
    expect(exact.map((x) => round1(100 * x))).toEqual([73.8, 86.1, 98.4]);
    expect(zeroSavings(0, 64)).toBe(0);
    expect(fig1.map((m) => 1 - m.total / fig1[0].total)).toEqual([0, ...exact]);
  });

  it('section 5: Pos cuts memory 4x and Pos+g 8x as N grows; Pos+g+p by N', () => {
    const N = 2 ** 40;
    expect(1 / (1 - zeroSavings(1, N))).toBeCloseTo(4, 9);
    expect(1 / (1 - zeroSavings(2, N))).toBeCloseTo(8, 9);
    expect(1 / (1 - zeroSavings(3, 64))).toBe(64);
    expect(STAGES.map((s) => zeroSavings(s, 1))).toEqual([0, 0, 0, 0]);
  });

  it('K other than 12, e.g. 8 bytes of fp32 m and v without a master', () => {
    expect(zeroMemoryBytes({ params: 1000, workers: 4, stage: 1, k: 8 })).toMatchObject({ weights: 2000, grads: 2000, optimizer: 2000, total: 6000 });
    expect(zeroSavings(1, 4, 8)).toBe(0.5);
  });

  it('bad input is a ServelabError naming the argument', () => {
    const ok = { params: 1000, workers: 4, stage: 1 as ZeroStage };
    expect(() => zeroMemoryBytes({ ...ok, params: 1.5 })).toThrow(/params must be a non-negative integer/);
    expect(() => zeroMemoryBytes({ ...ok, params: -1 })).toThrow(ServelabError);
    expect(() => zeroMemoryBytes({ ...ok, workers: 0 })).toThrow(/workers must be an integer >= 1/);
    expect(() => zeroMemoryBytes({ ...ok, workers: 2.5 })).toThrow(ServelabError);
    expect(() => zeroMemoryBytes({ ...ok, stage: 4 as ZeroStage })).toThrow(/stage must be 0, 1, 2 or 3/);
    expect(() => zeroMemoryBytes({ ...ok, k: -1 })).toThrow(/k \(optimizer bytes per parameter\)/);
    expect(() => zeroSavings(1, 0)).toThrow(ServelabError);
    expect(() => zeroSavings(5 as ZeroStage, 4)).toThrow(ServelabError);
    expect(() => zeroCommElements({ params: 10, stage: 3, workers: 0 })).toThrow(ServelabError);
    expect(() => zeroCommElements({ params: 1e20, stage: 3 })).toThrow(ServelabError);
  });
});

describe('ZeRO communication per step', () => {
  it('section 7: 2Ψ for data parallel, Pos and Pos+g; 3Ψ for Pos+g+p (1.5x)', () => {
    const P = 7.5e9;
    expect(STAGES.map((stage) => zeroCommElements({ params: P, stage }).paper)).toEqual([2 * P, 2 * P, 2 * P, 3 * P]);
    expect(zeroCommElements({ params: P, stage: 2 }).ring).toBeNull();
    expect(zeroCommElements({ params: P, stage: 3 }).collectives.map((c) => c.name)).toEqual(['all-gather', 'all-gather', 'reduce-scatter']);
    expect(zeroCommElements({ params: P, stage: 1 }).collectives.map((c) => `${c.name} ${c.of}`)).toEqual(['reduce-scatter gradients', 'all-gather updated weights']);
  });

  it('a ring sends (N - 1)/N of it from each device', () => {
    expect(zeroCommElements({ params: 1000, stage: 0, workers: 4 })).toMatchObject({ paper: 2000, ring: 1500, formula: '2Ψ elements; ring: 2Ψ(N - 1)/N sent per device, N = 4' });
    expect(zeroCommElements({ params: 1000, stage: 3, workers: 4 })).toMatchObject({ paper: 3000, ring: 2250 });
    expect(zeroCommElements({ params: 1000, stage: 3, workers: 1 }).ring).toBe(0);
  });
});
