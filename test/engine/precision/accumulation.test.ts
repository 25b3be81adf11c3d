/**
 * Sequential sums in fp16, bf16 and fp32 against numpy (test/fixtures/generate_precision.py): bit for bit for the
 * fp16, fp32 and float64 sums (numpy's float16 add rounds correctly), exact for bf16 against arithmetic rounding.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  accumulationError, compensatedSum, floatToBits, sampleValues, sequentialSum, stagnationPoint, withSignal,
} from '../../../engine/index.ts';
import { fixture } from './fixture.ts';

describe.each(fixture.sums)('sums of 10^5 $distribution values against numpy', (f) => {
  const xs = sampleValues(f.n, f.distribution, fixture.seed);

  it('regenerates numpy\'s inputs bit for bit (sha256 of the fp32 bytes)', () => {
    expect(Array.from(xs.slice(0, 5))).toEqual(f.first_inputs);
    expect(createHash('sha256').update(new Uint8Array(xs.buffer)).digest('hex')).toBe(f.inputs_sha256);
  });

  it('fp16 sum (every partial sum fp16) equals numpy float16 accumulation bit for bit', () => {
    const s = sequentialSum(xs, 'fp16', 'fp16');
    expect(floatToBits('fp16', s)).toBe(f.fp16_bits);
    expect(s).toBe(f.fp16);
  });

  it('fp32 sum, and fp16 inputs with an fp32 accumulator, equal numpy float32 bit for bit', () => {
    expect(floatToBits('fp32', sequentialSum(xs, 'fp32', 'fp32'))).toBe(f.fp32_bits);
    expect(floatToBits('fp32', sequentialSum(xs, 'fp16', 'fp32'))).toBe(f.fp16_inputs_fp32_acc_bits);
  });

  it('bf16 sum equals the arithmetic bf16 reference exactly', () => {
    expect(sequentialSum(xs, 'bf16', 'bf16')).toBe(f.bf16);
  });

  it('float64 sum equals Python\'s left-to-right sum; the compensated sum equals math.fsum', () => {
    expect(sequentialSum(xs, 'fp32', 'fp64')).toBe(f.fp64_sequential);
    // Neumaier's sum is guaranteed within about one ulp of the exact sum; on these inputs it lands on it.
    expect(compensatedSum(xs)).toBe(f.exact);
  });

  it('accumulationError reports the same finals and when fp16 and bf16 stopped changing', () => {
    const r = accumulationError({ n: f.n, distribution: f.distribution, seed: fixture.seed });
    const by = Object.fromEntries(r.methods.map((m) => [m.method, m]));
    expect(r.reference).toBe(f.exact);
    expect([by.fp16.final, by.bf16.final, by.fp32.final, by['fp16-fp32acc'].final, by.fp64.final]).toEqual([
      f.fp16, f.bf16, f.fp32, f.fp16_inputs_fp32_acc, f.fp64_sequential,
    ]);
    expect([by.fp16.lastChange, by.bf16.lastChange]).toEqual([f.fp16_last_change, f.bf16_last_change]);
  });
});

describe('stagnation', () => {
  it('is where the ulp reaches twice the addend: 2048 for fp16 and 1, 256 for bf16, 2^24 for fp32', () => {
    expect(stagnationPoint('fp16', 1)).toBe(2048);
    expect(stagnationPoint('fp16', 0.999)).toBe(2048);
    expect(stagnationPoint('fp16', 0.5)).toBe(1024); // 1024 + 0.5 is a tie, and 1024 is even
    expect(stagnationPoint('fp16', 0.3)).toBe(1024);
    expect(stagnationPoint('fp16', 0.01)).toBe(32);
    expect(stagnationPoint('bf16', 1)).toBe(256);
    expect(stagnationPoint('fp32', 1)).toBe(2 ** 24);
    expect(stagnationPoint('fp16', 100)).toBe(Infinity); // would be 2^18, beyond 65504
    expect(() => stagnationPoint('fp16', 0)).toThrow(/non-zero/);
  });

  it('agrees with summing the addend until the sum stops moving', () => {
    for (const [d, a] of [['fp16', 1], ['fp16', 0.5], ['fp16', 0.3], ['fp16', 0.01], ['bf16', 1], ['bf16', 0.1]] as const) {
      const s = sequentialSum(new Float32Array(20_000).fill(a), d, d);
      const p = stagnationPoint(d, a);
      // The running sum enters the stalled binade at or just above P (one step of at most one ulp past it).
      expect(s).toBeGreaterThanOrEqual(p);
      expect(s).toBeLessThanOrEqual(p + 2 * a);
      expect(sequentialSum([s, a], d, d)).toBe(s);
    }
  });

  it('uniform [0, 1): fp16 ends at 2048 and bf16 at 256, where predicted; fp32 and mixed precision stay within 1e-5', () => {
    const r = accumulationError();
    const by = Object.fromEntries(r.methods.map((m) => [m.method, m]));
    expect([by.fp16.final, by.fp16.stall?.stopsGrowingAt]).toEqual([2048, 2048]);
    expect([by.bf16.final, by.bf16.stall?.stopsGrowingAt]).toEqual([256, 256]);
    expect(by.fp16.stall?.meanAddendLostAt).toBe(1024);
    expect(by.fp16.relError).toBeGreaterThan(0.95);
    expect(by.bf16.relError).toBeGreaterThan(0.99);
    expect(by['fp16-fp32acc'].relError).toBeLessThan(1e-5);
    expect(by.fp32.relError).toBeLessThan(1e-5);
    expect(by.fp32.stall).toBeNull();
    expect(by.fp64.relError).toBeLessThan(1e-14);
  });
});

describe('accumulationError series', () => {
  it('gives evenly spaced steps ending at n, one point per step, the last being the final sum', () => {
    const r = accumulationError({ n: 10_000, points: 50 });
    expect(r.steps).toHaveLength(50);
    expect([r.steps[0], r.steps[49]]).toEqual([200, 10_000]);
    for (const m of r.methods) {
      expect(m.series.sum).toHaveLength(50);
      expect(m.series.sum[49]).toBe(m.final);
      expect(m.series.relError[49]).toBe(m.relError);
    }
    // fp16's error is zero-ish while the sum is small, then grows once the sum passes 2048.
    const fp16 = r.methods.find((m) => m.method === 'fp16')!;
    expect(fp16.series.relError[0]).toBeLessThan(1e-2);
    expect(fp16.series.relError[49]).toBeGreaterThan(0.5);
  });

  it('takes given values and a subset of methods', () => {
    const r = accumulationError({ values: [1, 2, 3, 2048, 1], methods: ['fp16', 'fp32'] });
    expect(r.distribution).toBe('custom');
    // fp16: 6 + 2048 = 2054 (ulp 2), then 2054 + 1 is a tie between 2054 and 2056; 2056 has the even significand.
    expect(r.methods.map((m) => [m.method, m.final])).toEqual([['fp16', 2056], ['fp32', 2055]]);
    expect(() => accumulationError({ methods: ['fp8' as never] })).toThrow(/unknown sum method/);
  });

  it('stops on an aborted signal, its own or the enclosing scope\'s', () => {
    expect(() => accumulationError({ signal: AbortSignal.abort() })).toThrow(/aborted/i);
    expect(() => withSignal(AbortSignal.abort(), () => accumulationError())).toThrow(/aborted/i);
    expect(() => sequentialSum([1, 2], 'fp16', 'fp16', AbortSignal.abort())).toThrow(/aborted/i);
  });
});
