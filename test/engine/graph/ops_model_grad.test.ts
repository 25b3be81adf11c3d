/**
 * Gradients of RotaryEmbedding and SoftmaxCrossEntropyLoss: backward() run on the reference backend against float64
 * central differences (f(x + h) - f(x - h)) / 2h of the forward kernels, element by element.
 *
 * The loss is a fixed random projection of the op's outputs, sum(y * w), so a wrong gradient cannot hide in a sum
 * that is always zero. f is evaluated by the reference kernels themselves in float64 (no fp32 rounding of the loss,
 * which at h = 1e-4 alone would be worth 1e-3), so the numeric side is exact to ~1e-11 for the linear RoPE (h = 1e-3)
 * and to h^2 |f'''| / 6 < 1e-8 for the cross entropy (h = 1e-4). The analytic side is computed in float64 and
 * rounded once to fp32: within 2^-24 relative. Tolerance: |analytic - numeric| <= 1e-7 + 2^-22 |numeric|.
 */
import { describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, type Attrs } from '../../../engine/index.ts';
import { ropeLayout, rotaryTables, type Reduction } from '../../../engine/graph/ops_model.ts';
import * as M from '../../../engine/backends/reference/model_kernels.ts';
import { rng, uniform } from '../../../bench/random.ts';

const TOL = { atol: 1e-7, rtol: 2 ** -22 };
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const f32 = (v: number[]) => Array.from(Float32Array.from(v));

function central(f: (x: Float64Array) => number, x: readonly number[], h: number): number[] {
  return x.map((_, i) => {
    const up = Float64Array.from(x);
    const down = Float64Array.from(x);
    up[i] += h;
    down[i] -= h;
    return (f(up) - f(down)) / (2 * h);
  });
}

function expectClose(analytic: ArrayLike<number>, numeric: number[], what: string): void {
  expect(analytic.length).toBe(numeric.length);
  const bad = numeric.flatMap((n, i) => (Math.abs(analytic[i] - n) <= TOL.atol + TOL.rtol * Math.abs(n) ? [] : [`[${i}] analytic ${analytic[i]}, numeric ${n}`]));
  expect(bad, what).toEqual([]);
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < b.length; i++) s += a[i] * b[i];
  return s;
};

describe('RotaryEmbedding gradient', () => {
  const cases: { name: string; shape: number[]; attrs: Attrs; caches: boolean }[] = [
    { name: '[B,H,S,D] rotate-half with caches', shape: [2, 2, 3, 8], attrs: {}, caches: true },
    { name: '[B,S,H*D] interleaved from theta', shape: [1, 3, 12], attrs: { numHeads: 2, interleaved: true }, caches: false },
  ];
  for (const c of cases) {
    it(`is the inverse rotation of dy: ${c.name}`, async () => {
      const dev = await createDevice('reference');
      const layout = ropeLayout({ shape: c.shape }, c.attrs);
      const [B, S] = layout.rank === 4 ? [c.shape[0], c.shape[2]] : [c.shape[0], c.shape[1]];
      const D = layout.headDim;
      const x = f32(uniform(rng(1), numel(c.shape), -2, 2));
      const w = f32(uniform(rng(2), numel(c.shape), -1, 1));
      const pos = Array.from({ length: B * S }, (_, i) => (i * 7) % 16);
      const t = rotaryTables(16, D);
      const [cos, sin] = [f32(Array.from(t.cos)), f32(Array.from(t.sin))];

      const g = new Graph('rope loss');
      const xv = g.input('x', 'fp32', c.shape);
      const wv = g.input('w', 'fp32', c.shape);
      const pv = g.input('pos', 'int32', [B, S]);
      const cv = c.caches ? [g.input('cos', 'fp32', [16, D / 2]), g.input('sin', 'fp32', [16, D / 2])] : [null, null];
      const [y] = g.op('RotaryEmbedding', [xv, pv, ...cv], c.attrs);
      const loss = g.op('ReduceSum', [g.op('Mul', [y, wv])[0]], { keepdims: false })[0];
      g.output(loss);
      const bg = backward(g, loss, [xv]);
      const feeds = [dev.tensor(x, c.shape), dev.tensor(w, c.shape), dev.tensor(pos, [B, S], 'int32')];
      if (c.caches) feeds.push(dev.tensor(cos, [16, D / 2]), dev.tensor(sin, [16, D / 2]));
      const [, dx] = await dev.run(bg.graph, feeds);

      const opts = { ...layout, interleaved: Boolean(c.attrs.interleaved), inverse: false, theta: 10000 };
      const p32 = Int32Array.from(pos);
      const f = (xs: Float64Array) => dot(M.rotaryEmbedding(xs, c.shape, p32, c.caches ? Float64Array.from(cos) : null, c.caches ? Float64Array.from(sin) : null, opts), w);
      expectClose(dx.toFloat32(), central(f, x, 1e-3), c.name);
    });
  }
});

describe('SoftmaxCrossEntropyLoss gradient', () => {
  const cases: { name: string; shape: number[]; labels: number[]; reduction: Reduction; logProb: boolean }[] = [
    { name: 'mean, one label ignored', shape: [4, 5], labels: [3, -100, 0, 4], reduction: 'mean', logProb: false },
    { name: 'sum over [B, S, C]', shape: [2, 2, 5], labels: [1, 2, 0, -100], reduction: 'sum', logProb: false },
    { name: 'none, weighted per row', shape: [3, 4], labels: [0, 3, -100], reduction: 'none', logProb: false },
    { name: 'mean, log probabilities in the loss too', shape: [3, 6], labels: [5, -100, 1], reduction: 'mean', logProb: true },
  ];
  for (const c of cases) {
    it(`is (softmax - onehot) * dy / count, exactly: ${c.name}`, async () => {
      const dev = await createDevice('reference');
      const C = c.shape[c.shape.length - 1];
      const rowsShape = c.shape.slice(0, -1);
      const x = f32(uniform(rng(3), numel(c.shape), -3, 3));
      const wRows = f32(uniform(rng(4), numel(rowsShape), -1, 1));
      const wLogProb = f32(uniform(rng(5), numel(c.shape), -1, 1));

      const g = new Graph('ce loss');
      const xv = g.input('logits', 'fp32', c.shape);
      const lv = g.input('labels', 'int32', rowsShape);
      const [l, lp] = g.op('SoftmaxCrossEntropyLoss', [xv, lv], { reduction: c.reduction });
      const wr = g.input('wRows', 'fp32', rowsShape);
      const wl = g.input('wLogProb', 'fp32', c.shape);
      let loss = c.reduction === 'none' ? g.op('ReduceSum', [g.op('Mul', [l, wr])[0]], { keepdims: false })[0] : l;
      if (c.logProb) loss = g.op('Add', [loss, g.op('ReduceSum', [g.op('Mul', [lp, wl])[0]], { keepdims: false })[0]])[0];
      g.output(loss);
      const bg = backward(g, loss, [xv]);
      const [, dx] = await dev.run(bg.graph, [dev.tensor(x, c.shape), dev.tensor(c.labels, rowsShape, 'int32'), dev.tensor(wRows, rowsShape), dev.tensor(wLogProb, c.shape)]);

      const labels = Int32Array.from(c.labels);
      const f = (xs: Float64Array) => {
        const r = M.softmaxCrossEntropy(xs, labels, C, c.reduction, -100);
        return (c.reduction === 'none' ? dot(r.loss, wRows) : r.loss[0]) + (c.logProb ? dot(r.logProb, wLogProb) : 0);
      };
      const numeric = central(f, x, 1e-4);
      expectClose(dx.toFloat32(), numeric, c.name);
      // An ignored row gets no gradient from the loss.
      const ignored = c.labels.indexOf(-100);
      if (!c.logProb) expect(Array.from(dx.toFloat32().slice(ignored * C, (ignored + 1) * C))).toEqual(new Array(C).fill(0));
    });
  }
});
