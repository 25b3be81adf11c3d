/**
 * The benchmark's decoder block: its symbolic graph gives, at every batch and length, the numbers of a graph built
 * for that exact shape and of the reference backend (fp32 throughout: within 1e-5 of the largest output magnitude,
 * a few hundred fp32 roundings apart), in one session.
 */
import { describe, expect, it } from 'vitest';
import { createDevice, type Device, type Tensor } from '../../engine/index.ts';
import { makeBlock } from '../../bench/block.ts';

const input = (dev: Device, b: number, s: number, h: number) => dev.tensor(Array.from({ length: b * s * h }, (_, i) => Math.sin(i * 0.61)), [b, s, h]);

function close(got: Tensor, want: Tensor): void {
  expect(got.shape).toEqual(want.shape);
  const g = got.toFloat32();
  const w = want.toFloat32();
  const scale = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let i = 0; i < w.length; i++) expect(Math.abs(g[i] - w[i])).toBeLessThanOrEqual(1e-5 * scale);
}

describe('decoder block', () => {
  it('symbolic, exact-shape and reference agree at three shapes; the symbolic graph compiles once', async () => {
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    const config = { hidden: 32, heads: 4, mlp: ['fp32', 'fp32'] as ['fp32', 'fp32'] };
    const [bc, br] = [await makeBlock(cpu, config), await makeBlock(ref, config)];
    const poly = bc.build('batch', 'seq');
    const polyRef = br.build('batch', 'seq');
    await cpu.run(poly, [input(cpu, 1, 1, 32)]);
    const before = cpu.stats().sessionsCreated;
    for (const [b, s] of [[1, 1], [2, 5], [3, 2]]) {
      const [y] = await cpu.run(poly, [input(cpu, b, s, 32)]);
      const [exact] = await cpu.run(bc.build(b, s), [input(cpu, b, s, 32)]);
      const [want] = await ref.run(polyRef, [input(ref, b, s, 32)]);
      close(y, exact);
      close(y, want);
    }
    // Three exact-shape graphs, and nothing more for the symbolic one.
    expect(cpu.stats().sessionsCreated - before).toBe(3);
    bc.dispose();
    br.dispose();
  });
});
