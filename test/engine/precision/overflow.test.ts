/** Overflow and underflow per format, against the lecture's example and numpy's casts (test/fixtures/generate_precision.py). */
import { describe, expect, it } from 'vitest';
import { arithmeticOverflow, floatToBits, overflowTable, roundToDtype } from '../../../engine/index.ts';
import { fixture } from './fixture.ts';

const row = (v: number) => overflowTable([v])[0];

describe('overflowTable', () => {
  it('reproduces the lecture: torch.tensor(10**6, dtype=torch.float16) is inf, float32 keeps 1000000', () => {
    const r = row(1e6);
    expect([r.fp32, r.fp16]).toEqual([1e6, Infinity]);
    expect(r.kind.fp16).toBe('inf');
    // bf16 keeps fp32's exponent: finite, with 8 significant bits.
    expect(r.bf16).toBe(999424);
    expect(r.kind.bf16).toBe('normal');
    expect(r.note).toMatch(/fp16: overflows to inf \(largest finite 65504\)/);
  });

  it('fp16 edges: 65504 is the largest, 65519 rounds down to it, 65520 (the midpoint to 2^16) goes to inf', () => {
    expect(row(65504).fp16).toBe(65504);
    expect(row(65519).fp16).toBe(65504);
    expect(row(65520).fp16).toBe(Infinity);
    expect(row(65504).bf16).toBe(65536);
  });

  it('tiny values: subnormal, or rounded to zero (underflow)', () => {
    expect(row(1e-7)).toMatchObject({ fp16: 2 ** -23, kind: { fp16: 'subnormal', bf16: 'normal' } });
    expect(row(1e-8)).toMatchObject({ fp16: 0, kind: { fp16: 'zero', bf16: 'normal' } });
    const r = row(1e-40);
    expect(r.kind).toEqual({ fp32: 'subnormal', fp16: 'zero', bf16: 'subnormal' });
    expect(r.note).toMatch(/fp16: underflows to 0/);
    expect(row(3.4e38).kind).toEqual({ fp32: 'normal', fp16: 'inf', bf16: 'inf' });
  });

  it('matches numpy for every fixture value: fp16 bit for bit, bf16 against arithmetic rounding', () => {
    const rows = overflowTable(fixture.rounding.map((f) => f.value));
    rows.forEach((r, i) => {
      const f = fixture.rounding[i];
      expect([f.value, r.fp32]).toEqual([f.value, f.fp32]);
      expect([f.value, floatToBits('fp16', r.value)]).toEqual([f.value, f.fp16_bits]);
      expect([f.value, r.fp16]).toEqual([f.value, f.fp16 ?? Infinity * Math.sign(f.value)]);
      expect([f.value, r.bf16]).toEqual([f.value, f.bf16 ?? Infinity * Math.sign(f.value)]);
    });
  });

  it('notes an exact value as exact', () => {
    expect(row(1).note).toBe('exact in all three formats');
    expect(row(-0).kind.fp16).toBe('zero');
  });
});

describe('arithmeticOverflow', () => {
  it('shows inf and NaN arising in fp16 arithmetic where fp32 and bf16 stay finite', () => {
    const byExpr = Object.fromEntries(arithmeticOverflow().map((r) => [r.expr, r]));
    expect(byExpr['300 * 300']).toMatchObject({ exact: 90000, fp32: 90000, fp16: Infinity, bf16: 90112 });
    expect(byExpr['exp(12)'].fp16).toBe(Infinity);
    expect(byExpr['exp(12)'].fp32).toBe(Math.fround(Math.exp(12)));
    expect(byExpr['300 * 300 - 300 * 300'].fp16).toBeNaN();
    expect(byExpr['300 * 300 - 300 * 300'].bf16).toBe(0);
    expect(byExpr['0.0001 * 0.0001'].fp16).toBe(0);
    expect(byExpr['1 / (0.0001 * 0.0001)'].fp16).toBe(Infinity);
    // Operands are rounded first: 59904 + 9984, then the sum, 69888 -> 69632 (not 70000 rounded once, 70144).
    const r = (x: number) => roundToDtype('bf16', x);
    expect(byExpr['60000 + 10000'].bf16).toBe(r(r(60000) + r(10000)));
    expect(byExpr['60000 + 10000'].bf16).toBe(69632);
  });
});
