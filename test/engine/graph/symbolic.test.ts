/** Shape-polymorphic graphs: inputs with named dims, one session for every size, and run-time checks that name sizes. */
import { describe, expect, it } from 'vitest';
import { createDevice, Graph, ShapeError, type Device, type Tensor } from '../../../engine/index.ts';
import { mismatch } from '../../../bench/op_cases.ts';

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));

/** x [batch, seq, 8] -> a linear layer, split into 2 heads of 4, causal self-attention; the projection as a constant. */
function block(dev: Device): { g: Graph; w: Tensor } {
  const w = dev.tensor(values(8 * 8, 1), [8, 8], 'fp32', { tag: 'weights' });
  const g = new Graph('block');
  const x = g.input('x', 'fp32', ['batch', 'seq', 8]);
  const h = g.op('MatMul', [g.op('Reshape', [x], { shape: [-1, 8] })[0], g.constant('w', w)])[0];
  const heads = g.op('Transpose', [g.op('Reshape', [h], { shape: ['batch', 'seq', 2, 4] })[0]], { perm: [0, 2, 1, 3] })[0];
  g.output(h, g.op('Attention', [heads, heads, heads], { causal: true })[0]);
  return { g, w };
}

describe('shape-polymorphic graphs', () => {
  it('one session serves every batch size and length, matching the reference', async () => {
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    const a = block(cpu);
    const b = block(ref);
    expect(a.g.symbols()).toEqual(['batch', 'seq']);
    // Flattening [batch, seq, 8] to [-1, 8] leaves a product of symbols.
    expect(a.g.nodes[1].outputs[0].shape).toEqual(['batch*seq', 8]);
    const before = cpu.stats().sessionsCreated;
    for (const [batch, seq] of [[1, 1], [2, 3], [4, 7], [1, 16], [3, 2]]) {
      const x = values(batch * seq * 8, batch + seq);
      const [h, y] = await cpu.run(a.g, [cpu.tensor(x, [batch, seq, 8])]);
      const [hr, yr] = await ref.run(b.g, [ref.tensor(x, [batch, seq, 8])]);
      expect(h.shape).toEqual([batch * seq, 8]);
      expect(y.shape).toEqual([batch, 2, seq, 4]);
      expect(mismatch(h, hr)).toBeNull();
      expect(mismatch(y, yr)).toBeNull();
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
    expect(cpu.stats().sessions).toBeGreaterThanOrEqual(1);
  });

  it('decode steps: one query against a growing cache, causal, on one session', async () => {
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    const build = () => {
      const g = new Graph('decode attention');
      const q = g.input('q', 'fp32', ['batch', 4, 1, 8]);
      const k = g.input('k', 'fp32', ['batch', 2, 'total', 8]);
      const v = g.input('v', 'fp32', ['batch', 2, 'total', 8]);
      return g.output(g.op('Attention', [q, k, v], { causal: true })[0]);
    };
    const [gc, gr] = [build(), build()];
    const before = cpu.stats().sessionsCreated;
    for (let total = 1; total <= 24; total += 5) {
      const feeds = (d: Device) => [d.tensor(values(32, total), [1, 4, 1, 8]), d.tensor(values(16 * total, 2), [1, 2, total, 8]), d.tensor(values(16 * total, 3), [1, 2, total, 8])];
      const [y] = await cpu.run(gc, feeds(cpu));
      const [yr] = await ref.run(gr, feeds(ref));
      expect(mismatch(y, yr)).toBeNull();
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
  });

  it('a symbol bound to two sizes in one run is a ShapeError naming it, both sizes and where; the device keeps working', async () => {
    const dev = await createDevice('cpu');
    const g = new Graph('pair');
    const a = g.input('a', 'fp32', ['batch', 4]);
    const b = g.input('b', 'fp32', ['batch', 4]);
    g.output(g.op('Add', [a, b])[0]);
    const run = (m: number, n: number) => dev.run(g, [dev.tensor(values(m * 4, 0), [m, 4]), dev.tensor(values(n * 4, 1), [n, 4])]);
    await expect(run(2, 3)).rejects.toThrow("pair: dimension 'batch' is 2 in input 'a' axis 0 but 3 in input 'b' axis 0");
    await expect(run(2, 3)).rejects.toBeInstanceOf(ShapeError);
    const [y] = await run(3, 3);
    expect(y.shape).toEqual([3, 4]);
  });

  it('equalities inference deferred are checked at run time, naming the op, the symbols and their sizes', async () => {
    const dev = await createDevice('cpu');
    const g = new Graph('product');
    const x = g.input('x', 'fp32', ['m', 'k']);
    const w = g.input('w', 'fp32', ['n', 3]);
    g.output(g.op('MatMul', [x, w])[0]);
    expect(g.constraints).toEqual([{ op: 'MatMul', what: 'inner dimensions', a: 'k', b: 'n', }]);
    await expect(dev.run(g, [dev.tensor(values(8, 0), [2, 4]), dev.tensor(values(15, 0), [5, 3])])).rejects.toThrow(
      "MatMul: inner dimensions must be equal: 'k' = 4 vs 'n' = 5 in this run of 'product'",
    );
    const [y] = await dev.run(g, [dev.tensor(values(8, 0), [2, 4]), dev.tensor(values(12, 0), [4, 3])]);
    expect(y.shape).toEqual([2, 3]);
  });

  it('a rank or a fixed size that does not match is refused before any kernel runs', async () => {
    const dev = await createDevice('cpu');
    const g = new Graph('fixed');
    const x = g.input('x', 'fp32', ['batch', 8]);
    g.output(g.op('Add', [x, x])[0]);
    await expect(dev.run(g, [dev.tensor(values(8, 0), [8])])).rejects.toThrow("fixed: input 'x' has rank 1, the graph expects rank 2");
    await expect(dev.run(g, [dev.tensor(values(6, 0), [1, 6])])).rejects.toThrow("fixed: input 'x' axis 1 is 6, the graph expects 8");
    expect(() => g.input('y', 'fp32', ['batch*seq'])).toThrow(ShapeError);
  });

  it('bad symbolic shapes fail when the node is added: sizes that cannot match, a head count that is a symbol', () => {
    const g = new Graph('bad');
    const x = g.input('x', 'fp32', ['batch', 'heads', 'seq', 8]);
    expect(() => g.op('Attention', [x, x, x])).toThrow(/heads and head dims must be sizes/);
    const y = g.input('y', 'fp32', ['batch', 6]);
    expect(() => g.op('Reshape', [y], { shape: [-1, 4] })).toThrow(/do not divide/);
  });
});
