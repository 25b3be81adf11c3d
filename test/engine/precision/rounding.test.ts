/** Rounding error distributions against numpy (test/fixtures/generate_precision.py) and the unit roundoff. */
import { describe, expect, it } from 'vitest';
import { relativeRoundingError, roundingErrors, withSignal } from '../../../engine/index.ts';
import { fixture } from './fixture.ts';

describe('relativeRoundingError', () => {
  it('equals numpy\'s (fl(x) - x) / x exactly for every finite fixture value', () => {
    for (const f of fixture.rounding) {
      if (f.fp16_rel_error !== null) expect([f.value, relativeRoundingError('fp16', f.fp32)]).toEqual([f.value, f.fp16_rel_error]);
      if (f.bf16_rel_error !== null) expect([f.value, relativeRoundingError('bf16', f.fp32)]).toEqual([f.value, f.bf16_rel_error]);
    }
  });
});

describe('roundingErrors', () => {
  const r = roundingErrors();
  const [h, b] = r.formats;

  it('never exceeds the unit roundoff 2^-11 (fp16) and 2^-8 (bf16), and comes close to it', () => {
    expect([h.dtype, h.unitRoundoff, b.dtype, b.unitRoundoff]).toEqual(['fp16', 2 ** -11, 'bf16', 2 ** -8]);
    for (const f of r.formats) {
      expect(f.maxOverU).toBeLessThanOrEqual(1);
      expect(f.maxOverU).toBeGreaterThan(0.99);
    }
  });

  it('mean and rms |error| within 2% of the model (0.361 u and 0.425 u for log-uniform values)', () => {
    expect(h.predicted.mean / h.unitRoundoff).toBeCloseTo(0.3607, 4);
    expect(h.predicted.rms / h.unitRoundoff).toBeCloseTo(0.4247, 4);
    for (const f of r.formats) {
      expect(Math.abs(f.mean / f.predicted.mean - 1)).toBeLessThan(0.02);
      expect(Math.abs(f.rms / f.predicted.rms - 1)).toBeLessThan(0.02);
    }
  });

  it('histograms the signed error in units of u over [-1, 1], every sample counted', () => {
    for (const f of r.formats) {
      expect(f.histogram.edges).toHaveLength(41);
      expect(f.histogram.outside).toBe(0);
      expect(f.histogram.counts.reduce((s, c) => s + c, 0)).toBe(r.n);
    }
  });

  it('matches numpy\'s statistics for 10^5 linear-uniform values in [1, 1000): max exact, mean and rms to 1e-12', () => {
    const np = fixture.rounding_sample;
    const mine = roundingErrors({ n: np.n, lo: np.lo, hi: np.hi, spacing: 'linear' });
    for (const f of mine.formats) {
      const ref = np[f.dtype as 'fp16' | 'bf16'];
      expect(f.max).toBe(ref.max);
      // numpy sums pairwise, this sums left to right: the last bits may differ.
      expect(f.mean / ref.mean - 1).toBeCloseTo(0, 12);
      expect(f.rms / ref.rms - 1).toBeCloseTo(0, 12);
    }
  });

  it('stops on an aborted signal, its own or the enclosing scope\'s', () => {
    expect(() => roundingErrors({ signal: AbortSignal.abort() })).toThrow(/aborted/i);
    expect(() => withSignal(AbortSignal.abort(), () => roundingErrors())).toThrow(/aborted/i);
  });
});
