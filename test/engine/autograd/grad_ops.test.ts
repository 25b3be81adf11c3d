/**
 * Every differentiable op's gradient against central differences on the reference backend (grad_cases.ts), and a
 * check that no op with a gradient goes unchecked. Tolerances: gradCheck's defaults (h = 1e-3, rtol 1e-2, atol 1e-4
 * plus the loss's own rounding over 2h; engine/autograd/gradcheck.ts says why) unless a case states its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, OPS, type Device, type OpName } from '../../../engine/index.ts';
import { gradCheck, type CheckInput } from '../../../engine/autograd/gradcheck.ts';
import type { OpSpec } from '../../../engine/graph/infer.ts';
import { GRAD_CASES, NOT_CHECKABLE, floats, type GradCase } from './grad_cases.ts';

/** Runs a case: the op applied to the present inputs, absent optional ones left null. */
export function checkCase(c: GradCase, device: Device) {
  const present = c.inputs.filter((x): x is CheckInput => x !== null);
  return gradCheck(
    (g, xs) => {
      let k = 0;
      return g.op(c.op, c.inputs.map((x) => (x === null ? null : xs[k++])), c.attrs ?? {});
    },
    present,
    { ...c.opts, device },
  );
}

describe('op gradients against central differences', () => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice('reference');
  });
  afterAll(async () => {
    await dev.dispose();
  });

  it('every op with a gradient has a case', () => {
    const withGrad = (Object.keys(OPS) as OpName[]).filter((op) => (OPS[op] as OpSpec).grad && !NOT_CHECKABLE.includes(op));
    const covered = new Set(GRAD_CASES.map((c) => c.op));
    expect(withGrad.filter((op) => !covered.has(op)), 'ops with a gradient and no case in test/engine/autograd/grad_cases*.ts').toEqual([]);
  });

  for (const c of GRAD_CASES) {
    it(c.name, async () => {
      const r = await checkCase(c, dev);
      expect(r.checked).toBeGreaterThan(0);
      expect(r.ok, r.describe()).toBe(true);
    });
  }

  it('Attention causal over symbolic query and key lengths: the static graph gradients, on cpu and the reference', async () => {
    const cpu = await createDevice('cpu');
    const build = (S: number | string, T: number | string) => {
      const g = new Graph('attention');
      const q = g.input('q', 'fp32', [1, 4, S, 4]);
      const k = g.input('k', 'fp32', [1, 2, T, 4]);
      const v = g.input('v', 'fp32', [1, 2, T, 4]);
      const y = g.op('Attention', [q, k, v], { causal: true })[0];
      const loss = g.op('ReduceSum', [g.op('Mul', [y, y])[0]], { keepdims: false })[0];
      return backward(g, loss, [q, k, v]).graph;
    };
    const symbolic = build('s', 't');
    for (const [S, T] of [[2, 5], [3, 3]]) {
      const values = [floats(60 + S, [1, 4, S, 4]), floats(70 + T, [1, 2, T, 4]), floats(80 + T, [1, 2, T, 4])];
      const feeds = (d: Device) => values.map((x) => d.tensor(x.values, x.shape));
      const want = await dev.run(build(S, T), feeds(dev));
      for (const [d, tol] of [[dev, 0], [cpu, 1e-5]] as const) {
        const got = await d.run(symbolic, feeds(d));
        got.forEach((t, i) => {
          const w = want[i].toFloat32();
          const err = Math.max(...Array.from(t.toFloat32(), (x, j) => Math.abs(x - w[j])));
          expect(err, `${d.kind} output ${i} at S=${S}, T=${T}`).toBeLessThanOrEqual(tol * (1 + Math.max(...Array.from(w, Math.abs))));
        });
      }
    }
    await cpu.dispose();
  });

  it('fails a wrong gradient (Sigmoid without its 1 - y factor), naming the elements', async () => {
    const spec = OPS.Sigmoid as OpSpec;
    const right = spec.grad;
    spec.grad = ({ g, outputs: [y], dy: [d] }) => [g.op('Mul', [d, y])[0]];
    try {
      const r = await gradCheck((g, [x]) => g.op('Sigmoid', [x]), [floats(7, [6], -3, 3)], { device: dev });
      expect(r.ok).toBe(false);
      expect(r.failures.length).toBe(6);
      expect(r.describe()).toMatch(/^x0\[0\]: backward .* central difference/);
    } finally {
      spec.grad = right;
    }
  });

  it('samples large inputs: at most maxElements per input, the same ones for the same seed', async () => {
    const x = floats(8, [40, 10]);
    const a = await gradCheck((g, [v]) => g.op('Sigmoid', [v]), [x], { device: dev, maxElements: 12, seed: 3 });
    const b = await gradCheck((g, [v]) => g.op('Sigmoid', [v]), [x], { device: dev, maxElements: 12, seed: 3 });
    expect(a.checked).toBe(12);
    expect(a.ok, a.describe()).toBe(true);
    expect(a.worst).toEqual(b.worst);
  });
});
