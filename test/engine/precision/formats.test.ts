/** Format facts and ULPs: published values, numpy's finfo and np.spacing (test/fixtures/generate_precision.py). */
import { describe, expect, it } from 'vitest';
import { FLOAT_FORMATS, formatFacts, formatTable, nextRepresentable, ulpAt, ulpSeries, bitsToFloat, floatToBits } from '../../../engine/index.ts';
import { fixture } from './fixture.ts';

describe('formatFacts', () => {
  it('gives the published facts, read off the bit patterns', () => {
    const h = formatFacts('fp16');
    expect([h.bits, h.exponentBits, h.mantissaBits]).toEqual([16, 5, 10]);
    expect(h.maxFinite).toBe(65504);
    expect(h.smallestNormal).toBe(2 ** -14);
    expect(h.smallestSubnormal).toBe(2 ** -24);
    expect(h.epsilon).toBe(2 ** -10);
    expect(h.unitRoundoff).toBe(2 ** -11);
    expect(h.decimalDigits).toBeCloseTo(3.311, 3);

    const b = formatFacts('bf16');
    expect([b.bits, b.exponentBits, b.mantissaBits]).toEqual([16, 8, 7]);
    expect(b.maxFinite).toBe((2 - 2 ** -7) * 2 ** 127); // 3.3895313892515355e38
    expect(b.smallestNormal).toBe(2 ** -126);
    expect(b.smallestSubnormal).toBe(2 ** -133);
    expect(b.epsilon).toBe(2 ** -7);
    expect(b.unitRoundoff).toBe(2 ** -8);
    expect(b.decimalDigits).toBeCloseTo(2.408, 3);

    const f = formatFacts('fp32');
    expect([f.bits, f.exponentBits, f.mantissaBits]).toEqual([32, 8, 23]);
    expect(f.maxFinite).toBe(3.4028234663852886e38);
    expect(f.smallestNormal).toBe(2 ** -126);
    expect(f.smallestSubnormal).toBe(2 ** -149);
    expect(f.epsilon).toBe(2 ** -23);
    expect(f.decimalDigits).toBeCloseTo(7.225, 3);
  });

  it.each(['fp16', 'fp32'] as const)('%s equals numpy finfo exactly', (d) => {
    const np = fixture.finfo[d];
    const f = formatFacts(d);
    expect([f.maxFinite, f.smallestNormal, f.smallestSubnormal, f.epsilon, f.exponentBits, f.mantissaBits]).toEqual([
      np.max, np.smallest_normal, np.smallest_subnormal, np.eps, np.nexp, np.nmant,
    ]);
  });

  it('agrees with the dtype layer, which derives the same numbers from the field widths alone', () => {
    for (const f of formatTable()) {
      const info = FLOAT_FORMATS[f.dtype];
      expect([f.maxFinite, f.smallestNormal, f.smallestSubnormal, f.epsilon]).toEqual([
        info.maxFinite, info.smallestNormal, info.smallestSubnormal, info.epsilon,
      ]);
    }
  });

  it('bf16 keeps fp32\'s exponent: the same smallest normal, a largest value within 0.4%', () => {
    const [f, b] = [formatFacts('fp32'), formatFacts('bf16')];
    expect(b.smallestNormal).toBe(f.smallestNormal);
    expect(b.maxFinite / f.maxFinite).toBeCloseTo(0.9961, 4);
    expect(formatFacts('fp16').rangeDecades).toBeCloseTo(12.04, 2);
  });
});

describe('ulpAt', () => {
  it.each(['fp16', 'fp32'] as const)('%s equals np.spacing at every fixture magnitude', (d) => {
    for (const [x, spacing] of fixture.ulp[d]) expect([x, ulpAt(d, x)]).toEqual([x, spacing]);
  });

  it('bf16 equals the arithmetic spacing 2^(exponent - 7)', () => {
    for (const [x, spacing] of fixture.ulp.bf16) expect([x, ulpAt('bf16', x)]).toEqual([x, spacing]);
  });

  it('at the largest finite value is the gap below (numpy says inf); past it, inf; NaN stays NaN; sign ignored', () => {
    expect(ulpAt('fp16', 65504)).toBe(32);
    expect(ulpAt('bf16', formatFacts('bf16').maxFinite)).toBe(2 ** 120);
    expect(ulpAt('fp16', 1e6)).toBe(Infinity);
    expect(ulpAt('fp16', NaN)).toBeNaN();
    expect(ulpAt('fp16', -1000)).toBe(ulpAt('fp16', 1000));
    expect(ulpAt('fp16', 2048)).toBe(2); // from 2048 on, fp16 cannot hold odd integers
    expect(ulpAt('bf16', 256)).toBe(2);
    expect(ulpAt('fp32', 2 ** 24)).toBe(2);
  });

  it('nextRepresentable steps the bit pattern: the largest finite value steps to inf', () => {
    expect(nextRepresentable('fp16', 1)).toBe(1 + 2 ** -10);
    expect(nextRepresentable('fp16', 65504)).toBe(Infinity);
    expect(nextRepresentable('fp16', 0)).toBe(2 ** -24);
    expect(() => nextRepresentable('fp16', 0.1)).toThrow(/not a non-negative finite fp16 value/);
    expect(bitsToFloat('fp32', floatToBits('fp32', 0.1))).toBe(Math.fround(0.1));
  });
});

describe('ulpSeries', () => {
  it('spans the format log-spaced; ulp / x stays between eps / 2 and eps in the normal range', () => {
    const s = ulpSeries('fp16');
    expect(s.x).toHaveLength(200);
    expect([s.x[0], s.x[199]]).toEqual([2 ** -24, 65504]);
    const { epsilon, smallestNormal } = formatFacts('fp16');
    for (let i = 0; i < s.x.length; i++) {
      if (i > 0) expect(s.ulp[i]).toBeGreaterThanOrEqual(s.ulp[i - 1]);
      if (s.x[i] < smallestNormal) expect(s.ulp[i]).toBe(2 ** -24);
      else {
        expect(s.relative[i]).toBeGreaterThan(epsilon / 2 - 1e-12);
        expect(s.relative[i]).toBeLessThanOrEqual(epsilon * (1 + 1e-3));
      }
    }
  });

  it('takes a range and a point count, and rejects an empty range', () => {
    const s = ulpSeries('bf16', 1, 1e6, 7);
    expect(s.x).toHaveLength(7);
    expect(s.ulp[0]).toBe(2 ** -7);
    expect(s.ulp[6]).toBe(ulpAt('bf16', 1e6));
    expect(() => ulpSeries('fp16', 10, 1)).toThrow(/0 < from < to/);
  });
});
