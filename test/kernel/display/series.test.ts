import { describe, expect, it } from 'vitest';
import { BoundedSeries } from '../../../kernel/display/series.ts';

/** The reference: raw samples grouped by a stride, each group's mean (or last) at its last sample's time. */
function reference(n: number, stride: number, merge: 'mean' | 'last') {
  const t: number[] = [];
  const v: number[] = [];
  for (let start = 0; start < n; start += stride) {
    const group = Array.from({ length: Math.min(stride, n - start) }, (_, k) => start + k);
    t.push(group[group.length - 1]);
    v.push(merge === 'mean' ? group.reduce((a, b) => a + b, 0) / group.length : group[group.length - 1]);
  }
  return { t, v };
}

describe('BoundedSeries', () => {
  it('keeps every sample up to maxPoints', () => {
    const s = new BoundedSeries(8, 'mean');
    for (let i = 0; i < 8; i++) s.add(i, i * i);
    expect(s.points()).toEqual({ t: [0, 1, 2, 3, 4, 5, 6, 7], v: [0, 1, 4, 9, 16, 25, 36, 49] });
    expect(s.samplesPerPoint).toBe(1);
  });

  for (const merge of ['mean', 'last'] as const) {
    for (const n of [9, 17, 100, 1000, 4097]) {
      it(`${merge}, ${n} samples into at most 8 points: equal buckets, as if grouped from the start`, () => {
        const s = new BoundedSeries(8, merge);
        for (let i = 0; i < n; i++) s.add(i, i);
        const p = s.points();
        expect(p).toEqual(reference(n, s.samplesPerPoint, merge));
        expect(p.t.length).toBeLessThanOrEqual(9); // 8 kept plus the bucket still filling
        expect(p.t.length).toBeGreaterThanOrEqual(4);
        expect(s.count).toBe(n);
        expect(s.last).toBe(n - 1);
        expect(s.mean).toBe((n - 1) / 2);
      });
    }
  }

  it('maxPoints below 2 is refused', () => {
    expect(() => new BoundedSeries(1, 'mean')).toThrow(/maxPoints/);
  });
});
