/** Sums and differences of symbolic dims: canonical forms, arithmetic, binding, and run-time sizes in ONNX. */
import { describe, expect, it } from 'vitest';
import { canonDim, dimDivide, dimProduct, dimSub, dimSum, dimTerms, resolveDim, sameDim, symbolsOf } from '../../../engine/graph/dims.ts';
import { createDevice, Graph, ShapeError } from '../../../engine/index.ts';

describe('sums of symbolic dims', () => {
  it('are canonical: like terms combined, terms ordered by symbols, the constant last, sizes stay numbers', () => {
    expect(dimSum(['past', 'seq'])).toBe('past+seq');
    expect(dimSum(['seq', 'past'])).toBe('past+seq');
    expect(dimSum(['past', 1])).toBe('past+1');
    expect(dimSum(['seq', 'seq', 2])).toBe('2*seq+2');
    expect(dimSum([3, 4])).toBe(7);
    expect(canonDim('seq + past - 1')).toBe('past+seq-1');
    expect(canonDim('1+seq*batch')).toBe('batch*seq+1');
    expect(canonDim('seq-seq')).toBe(0);
    expect(canonDim('-2+seq')).toBe('seq-2');
    expect(sameDim('past+seq', 'seq+past')).toBe(true);
    expect(sameDim('past+seq', 'past*seq')).toBe(false);
    expect(symbolsOf(['past+seq', 'batch*seq'])).toEqual(['past', 'seq', 'batch', 'seq']);
    expect(dimTerms('4*past-seq+3')).toEqual([{ coef: 4, syms: ['past'] }, { coef: -1, syms: ['seq'] }, { coef: 3, syms: [] }]);
    expect(() => canonDim('past+')).toThrow(ShapeError);
    expect(() => canonDim('past+(seq)')).toThrow(/neither a size nor a symbol name/);
  });

  it('subtract, multiply out and divide', () => {
    expect(dimSub('past+seq', 'past')).toBe('seq');
    expect(dimSub('past+seq', 'past+seq')).toBe(0);
    expect(dimSub('seq', 1)).toBe('seq-1');
    expect(dimSub(2, 'n')).toBe('-n+2');
    expect(dimProduct(['batch', 'past+seq', 4])).toBe('4*batch*past+4*batch*seq');
    expect(dimProduct(['past+1', 'past+1'])).toBe('2*past+past*past+1');
    // Reshape [batch, past+seq, 4] -> [batch, -1] needs the element count divided by the known dims.
    expect(dimDivide('4*batch*past+4*batch*seq', 'batch')).toBe('4*past+4*seq');
    expect(dimDivide('4*batch*past+4*batch*seq', '4*batch')).toBe('past+seq');
    expect(dimDivide('4*batch*past+4*batch*seq', 'past+seq')).toBe('4*batch');
    expect(dimDivide('2*past+seq', 2)).toBeNull();
    expect(dimDivide('past+seq', 'past+1')).toBeNull();
    expect(dimDivide(0, 'past+seq')).toBe(0);
    expect(dimDivide('past+seq', 0)).toBeNull();
  });

  it('resolve under a binding, and a negative size is refused with the sizes that made it', () => {
    const b = new Map([['past', 5], ['seq', 3]]);
    expect(resolveDim('past+seq', b)).toBe(8);
    expect(resolveDim('past+seq-1', b)).toBe(7);
    expect(resolveDim('2*past*seq-seq', b)).toBe(27);
    expect(() => resolveDim('seq-past', b)).toThrow(/dimension 'seq-past' is -2 in this run \(past = 5, seq = 3\)/);
  });

  it('are read at run time inside an ONNX graph: one cpu session, sizes from the feeds', async () => {
    // Reshape [past+seq, 2] -> [past+seq-1+1, 2] assembles its target from Shape nodes, Add, Sub and constants.
    const g = new Graph('sums');
    const a = g.input('a', 'fp32', ['past', 2]);
    const b = g.input('b', 'fp32', ['seq', 2]);
    const joined = g.op('Concat', [a, b], { axis: 0 })[0];
    const y = g.op('Reshape', [joined], { shape: [2, 'past+seq'] })[0];
    const z = g.op('Expand', [g.op('Slice', [y], { starts: [0], ends: [1] })[0]], { shape: ['2*past+seq-past-1+2', 'past+seq'] })[0];
    g.output(y, z);
    expect(z.shape).toEqual(['past+seq+1', 'past+seq']);
    const cpu = await createDevice('cpu');
    const before = cpu.stats().sessionsCreated;
    for (const [past, seq] of [[1, 1], [4, 3]]) {
      const [ry, rz] = await cpu.run(g, [cpu.tensor(Array.from({ length: 2 * past }, (_, i) => i), [past, 2]), cpu.tensor(Array.from({ length: 2 * seq }, (_, i) => 100 + i), [seq, 2])]);
      const n = past + seq;
      expect(ry.shape).toEqual([2, n]);
      expect(rz.shape).toEqual([n + 1, n]);
      const flat = [...Array.from({ length: 2 * past }, (_, i) => i), ...Array.from({ length: 2 * seq }, (_, i) => 100 + i)];
      expect(ry.toArray()).toEqual(flat);
      expect(rz.toArray()).toEqual(Array.from({ length: n + 1 }, () => flat.slice(0, n)).flat());
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
  });
});
