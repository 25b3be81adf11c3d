/** Granularity layouts: which values share a scale, as exact views and scale shapes (pure bookkeeping, no kernels). */
import { describe, expect, it } from 'vitest';
import { layoutFor } from '../../../engine/index.ts';

describe('layoutFor', () => {
  it('per tensor: one scale, a scalar', () => {
    expect(layoutFor([4, 6], 'tensor')).toMatchObject({ view: [1, 24], reduceAxis: 1, scaleShape: [], numScales: 1, groupSize: 24, perm: null });
  });

  it('per row: one scale per vector along the last axis, leading axes flattened', () => {
    expect(layoutFor([2, 3, 8], 'row')).toMatchObject({ view: [6, 8], reduceAxis: 1, scaleShape: [2, 3, 1], numScales: 6, groupSize: 8 });
    expect(layoutFor([5], 'row')).toMatchObject({ view: [1, 5], scaleShape: [1], numScales: 1 });
  });

  it('per column: a 2-D weight is scaled along axis 0 without a transpose; batched columns move last first', () => {
    expect(layoutFor([64, 16], 'column')).toMatchObject({ perm: null, view: [64, 16], reduceAxis: 0, scaleShape: [1, 16], numScales: 16, groupSize: 64 });
    expect(layoutFor([2, 3, 4], 'column')).toMatchObject({ perm: [0, 2, 1], view: [8, 3], reduceAxis: 1, scaleShape: [2, 1, 4], numScales: 8, groupSize: 3 });
  });

  it('per block: blocks of blockSize consecutive values along the last axis', () => {
    expect(layoutFor([3, 32], 'block', 8)).toMatchObject({ view: [12, 8], reduceAxis: 1, scaleShape: [3, 4], numScales: 12, groupSize: 8, blockSize: 8 });
  });
});
