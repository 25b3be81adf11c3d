/** Symbolic dims: canonical products, division with cancellation, binding, and deferred equalities. */
import { describe, expect, it } from 'vitest';
import { canonDim, checkInputDim, collectConstraints, dimDivide, dimProduct, resolveDim, sameDim, unifyDims, type DimConstraint } from '../../../engine/graph/dims.ts';
import { ShapeError } from '../../../engine/index.ts';

describe('symbolic dims', () => {
  it('products are canonical: sorted symbols, the integer coefficient first, sizes stay numbers', () => {
    expect(canonDim('seq*batch')).toBe('batch*seq');
    expect(canonDim('1*seq')).toBe('seq');
    expect(dimProduct(['batch', 'seq', 4096])).toBe('4096*batch*seq');
    expect(dimProduct([2, 3, 4])).toBe(24);
    expect(dimProduct(['batch', 0])).toBe(0);
    expect(sameDim('a*b', 'b*a')).toBe(true);
  });

  it('division cancels symbols and sizes, and refuses what does not divide', () => {
    expect(dimDivide('4096*batch*seq', 'batch*seq')).toBe(4096);
    expect(dimDivide('4096*batch*seq', 4096)).toBe('batch*seq');
    expect(dimDivide('4096*batch*seq', '64*batch')).toBe('64*seq');
    expect(dimDivide('batch', 'seq')).toBeNull();
    expect(dimDivide(10, 4)).toBeNull();
  });

  it('resolves under a binding and names a symbol no input bound', () => {
    const b = new Map([['batch', 3], ['seq', 5]]);
    expect(resolveDim('4*batch*seq', b)).toBe(60);
    expect(resolveDim(7, b)).toBe(7);
    expect(() => resolveDim('past', b)).toThrow(/symbol 'past' is not bound/);
  });

  it('input dims must be sizes or symbol names', () => {
    expect(checkInputDim('batch', 'x')).toBe('batch');
    expect(() => checkInputDim('batch*seq', 'x')).toThrow(ShapeError);
    expect(() => checkInputDim(-1, 'x')).toThrow(/not a non-negative integer/);
    expect(() => checkInputDim(1.5, 'x')).toThrow(ShapeError);
  });

  it('unification: sizes are checked now, symbols deferred as constraints', () => {
    const found: DimConstraint[] = [];
    collectConstraints(found, () => {
      expect(unifyDims('MatMul', 'k', 'k', 'inner')).toBe('k');
      expect(unifyDims('MatMul', 'k', 64, 'inner')).toBe(64);
      expect(unifyDims('MatMul', 'k', 'n', 'inner')).toBe('n');
      expect(() => unifyDims('MatMul', 3, 4, 'inner dimensions')).toThrow('MatMul: inner dimensions differ (3 vs 4)');
    });
    expect(found.map((c) => [c.a, c.b])).toEqual([['k', 64], ['k', 'n']]);
  });
});
