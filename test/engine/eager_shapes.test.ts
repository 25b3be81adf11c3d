/** Which sizes an eager op's graph turns into symbols: every one it can, except 0s and 1s that broadcast. */
import { describe, expect, it } from 'vitest';
import { eagerShapes } from '../../engine/eager_shapes.ts';

describe('eagerShapes', () => {
  it('turns every size of a shape-agnostic op into a symbol of its own', () => {
    const r = eagerShapes('MatMul', [[5, 16], [16, 8]]);
    expect(r.shapes).toEqual([['s0_0', 's0_1'], ['s1_0', 's1_1']]);
    expect(r.key).toBe('[*,*]|[*,*]');
    expect(eagerShapes('MatMul', [[1, 16], [16, 8]]).key).toBe(r.key);
  });

  it('keeps a 1 that broadcasts against a larger dim, and only that one', () => {
    expect(eagerShapes('Add', [[3, 4], [1, 4]]).shapes).toEqual([['s0_0', 's0_1'], [1, 's1_1']]);
    expect(eagerShapes('Add', [[1, 4], [1, 4]]).key).toBe('[*,*]|[*,*]');
    // A lower-rank operand has nothing to broadcast against on the missing axes.
    expect(eagerShapes('Mul', [[1, 4], [4]]).key).toBe('[*,*]|[*]');
    // MatMul broadcasts its batch dims only: m = 1 is a row count, not a broadcast.
    expect(eagerShapes('MatMul', [[2, 1, 3, 4], [1, 5, 4, 6]]).shapes).toEqual([['s0_0', 1, 's0_2', 's0_3'], [1, 's1_1', 's1_2', 's1_3']]);
  });

  it('keeps sizes where the op needs them', () => {
    expect(eagerShapes('Reshape', [[2, 3]]).shapes).toEqual([[2, 3]]);
    expect(eagerShapes('QuantizeLinear', [[2, 3], [3], null]).key).toBe('[2,3]|[3]|-');
    expect(eagerShapes('ReduceMax', [[2, 0]]).shapes).toEqual([['s0_0', 0]]);
    expect(eagerShapes('MatMulNBits', [[3, 64], [8, 2, 16], [16], null]).shapes).toEqual([['s0_0', 64], [8, 2, 16], [16], null]);
    expect(eagerShapes('Attention', [[1, 4, 1, 8], [1, 2, 5, 8], [1, 2, 5, 8]]).shapes).toEqual([
      ['s0_0', 4, 's0_2', 8], ['s1_0', 2, 's1_2', 8], ['s2_0', 2, 's2_2', 8],
    ]);
  });
});
