/**
 * Gradients of the tensor ops against central finite differences, (f(x+h) - f(x-h)) / 2h, both from the
 * 'reference' backend (float64 inside each op, rounded once to fp32). The loss is sum(y * y) / 2, so dL/dy = y:
 * a gradient sent to the wrong element, or with the wrong sign or scale, shows.
 *
 * Tolerance |analytic - numeric| <= 2e-3 + 2e-3 |analytic|: the loss is rounded to fp32 (|L| < 100, so about 4e-6
 * absolute), which over 2h = 2e-2 is 2e-4; the truncation error h^2/6 |f'''| stays under 1e-4 for these inputs.
 * Piecewise-linear ops (slicing, selection, scattering) have no truncation error at all.
 */
import { describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, OPS, webgpuUnavailable, type Device, type DType, type Dim, type Value } from '../../../engine/index.ts';
import type { OpSpec } from '../../../engine/graph/infer.ts';
import { mismatch } from '../../../bench/op_cases.ts';

const H = 1e-2;
const TOL = { atol: 2e-3, rtol: 2e-3 };

interface Feed {
  dtype: DType;
  shape: number[];
  values: number[];
}
interface Spec {
  inputs: { name: string; dtype: DType; shape: Dim[] }[];
  /** y from the graph's inputs. */
  f: (g: Graph, xs: Value[]) => Value;
  feeds: Feed[];
  /** Which inputs to differentiate (float ones). */
  wrt: number[];
}

const wave = (n: number, seed: number, lo = -2, hi = 2) => Array.from({ length: n }, (_, i) => lo + ((Math.sin(i * 2.39 + seed) + 1) / 2) * (hi - lo));
const fp32 = (shape: number[], seed: number, lo = -2, hi = 2): Feed => ({ dtype: 'fp32', shape, values: wave(shape.reduce((p, d) => p * d, 1), seed, lo, hi) });
const int32 = (shape: number[], values: number[]): Feed => ({ dtype: 'int32', shape, values });

/** The forward graph with loss sum(y * y) / 2 as its output. */
function lossGraph(s: Spec): { g: Graph; xs: Value[]; loss: Value } {
  const g = new Graph('loss');
  const xs = s.inputs.map((i) => g.input(i.name, i.dtype, i.shape));
  const y = s.f(g, xs);
  const sq = g.op('Mul', [y, y])[0];
  const half = g.op('Constant', [], { value: 0.5, dtype: 'fp32' })[0];
  const sum = y.shape.length === 0 ? sq : g.op('ReduceSum', [sq], { keepdims: false })[0];
  const loss = g.op('Mul', [sum, half])[0];
  g.output(loss);
  return { g, xs, loss };
}

async function lossAt(dev: Device, g: Graph, feeds: Feed[]): Promise<number> {
  const [l] = await dev.run(g, feeds.map((f) => dev.tensor(f.values, f.shape, f.dtype)));
  return l.toFloat32()[0];
}

/** Worst |analytic - numeric| beyond tolerance per input, as messages (empty when every element agrees). */
async function gradCheck(s: Spec): Promise<string[]> {
  const dev = await createDevice('reference');
  const { g, xs, loss } = lossGraph(s);
  const bg = backward(g, loss, s.wrt.map((i) => xs[i])).graph;
  const outs = await dev.run(bg, s.feeds.map((f) => dev.tensor(f.values, f.shape, f.dtype)));
  const bad: string[] = [];
  for (const [k, i] of s.wrt.entries()) {
    const analytic = outs[1 + k].toFloat32();
    expect(outs[1 + k].shape).toEqual(s.feeds[i].shape);
    for (let j = 0; j < analytic.length; j++) {
      const at = (dx: number) => s.feeds.map((f, m) => (m === i ? { ...f, values: f.values.map((v, n) => (n === j ? v + dx : v)) } : f));
      const numeric = ((await lossAt(dev, g, at(H))) - (await lossAt(dev, g, at(-H)))) / (2 * H);
      const err = Math.abs(analytic[j] - numeric);
      if (err > TOL.atol + TOL.rtol * Math.abs(analytic[j])) bad.push(`input ${i} [${j}]: analytic ${analytic[j]}, numeric ${numeric}`);
    }
  }
  return bad;
}

const x1 = (shape: Dim[]) => [{ name: 'x', dtype: 'fp32' as DType, shape }];
const unary = (op: string, attrs = {}) => (g: Graph, [x]: Value[]) => g.op(op as never, [x], attrs)[0];

const CASES: Record<string, Spec> = {
  Exp: { inputs: x1([3, 4]), f: unary('Exp'), feeds: [fp32([3, 4], 1, -1.5, 1.5)], wrt: [0] },
  Log: { inputs: x1([10]), f: unary('Log'), feeds: [fp32([10], 2, 0.5, 3)], wrt: [0] },
  Sqrt: { inputs: x1([10]), f: unary('Sqrt'), feeds: [fp32([10], 3, 0.5, 4)], wrt: [0] },
  Neg: { inputs: x1([2, 5]), f: unary('Neg'), feeds: [fp32([2, 5], 4)], wrt: [0] },
  'ReduceMean axis 1': { inputs: x1([3, 4, 2]), f: unary('ReduceMean', { axes: [1], keepdims: false }), feeds: [fp32([3, 4, 2], 5)], wrt: [0] },
  'ReduceMean over a symbolic axis': { inputs: x1([2, 'seq']), f: unary('ReduceMean', { axes: [-1], keepdims: true }), feeds: [fp32([2, 5], 6)], wrt: [0] },
  'ReduceMean every axis, symbolic': { inputs: x1(['n', 3]), f: unary('ReduceMean', { keepdims: false }), feeds: [fp32([4, 3], 7)], wrt: [0] },
  'Where with broadcasting': {
    inputs: [{ name: 'c', dtype: 'bool', shape: [3, 1] }, { name: 'a', dtype: 'fp32', shape: [3, 4] }, { name: 'b', dtype: 'fp32', shape: [4] }],
    f: (g, [c, a, b]) => g.op('Where', [c, a, b])[0],
    feeds: [{ dtype: 'bool', shape: [3, 1], values: [1, 0, 1] }, fp32([3, 4], 8), fp32([4], 9)],
    wrt: [1, 2],
  },
  'Range offset (fp32)': {
    inputs: [{ name: 'o', dtype: 'fp32', shape: [] }],
    f: (g, [o]) => g.op('Range', [o], { length: 5, start: -1, delta: 0.5, dtype: 'fp32' })[0],
    feeds: [{ dtype: 'fp32', shape: [], values: [0.3] }],
    wrt: [0],
  },
  'Slice two axes': { inputs: x1([4, 5]), f: unary('Slice', { starts: [1, -4], ends: [3, 2 ** 31 - 1], axes: [0, 1] }), feeds: [fp32([4, 5], 10)], wrt: [0] },
  'Slice step 2': { inputs: x1([3, 7]), f: unary('Slice', { starts: [1], ends: [7], axes: [1], steps: [2] }), feeds: [fp32([3, 7], 11)], wrt: [0] },
  'Slice step -2 on axis 0': { inputs: x1([6, 2]), f: unary('Slice', { starts: [-1], ends: [-(2 ** 31)], axes: [0], steps: [-2] }), feeds: [fp32([6, 2], 12)], wrt: [0] },
  'Slice of a symbolic axis (the last token)': { inputs: x1([2, 'seq', 3]), f: unary('Slice', { starts: [-1], ends: [2 ** 31 - 1], axes: [1] }), feeds: [fp32([2, 4, 3], 13)], wrt: [0] },
  'Slice to a symbolic end': {
    inputs: [{ name: 'x', dtype: 'fp32', shape: [6, 2] }, { name: 'y', dtype: 'fp32', shape: ['n', 2] }],
    f: (g, [x, y]) => g.op('Mul', [g.op('Slice', [x], { starts: [1], ends: ['n+1'], axes: [0] })[0], y])[0],
    feeds: [fp32([6, 2], 14), fp32([3, 2], 15)],
    wrt: [0, 1],
  },
  'Concat three': {
    inputs: [{ name: 'a', dtype: 'fp32', shape: [2, 1] }, { name: 'b', dtype: 'fp32', shape: [2, 3] }, { name: 'c', dtype: 'fp32', shape: [2, 2] }],
    f: (g, xs) => g.op('Concat', xs, { axis: 1 })[0],
    feeds: [fp32([2, 1], 16), fp32([2, 3], 17), fp32([2, 2], 18)],
    wrt: [0, 1, 2],
  },
  'Concat of a cache and new tokens (symbolic)': {
    inputs: [{ name: 'past', dtype: 'fp32', shape: [1, 'past', 2] }, { name: 'new', dtype: 'fp32', shape: [1, 'seq', 2] }],
    f: (g, xs) => g.op('Exp', [g.op('Concat', xs, { axis: 1 })[0]])[0],
    feeds: [fp32([1, 3, 2], 19, -1, 1), fp32([1, 2, 2], 20, -1, 1)],
    wrt: [0, 1],
  },
  'Split, one piece unused': {
    inputs: x1([5, 2]),
    f: (g, [x]) => {
      const [a, , c] = g.op('Split', [x], { axis: 0, sizes: [1, 2, 2] });
      return g.op('Mul', [a, c])[0];
    },
    feeds: [fp32([5, 2], 21)],
    wrt: [0],
  },
  'TopK values': { inputs: x1([3, 6]), f: unary('TopK', { k: 2, axis: -1 }), feeds: [{ dtype: 'fp32', shape: [3, 6], values: [1, 5, 2, 8, 3, 0, -1, -4, 6, 2, 9, 3, 7, 1, -2, 4, 0, 5] }], wrt: [0] },
  'TopK smallest along axis 0': { inputs: x1([4, 2]), f: unary('TopK', { k: 2, axis: 0, largest: false }), feeds: [{ dtype: 'fp32', shape: [4, 2], values: [3, -1, 0.5, 4, -2, 2, 1, 0] }], wrt: [0] },
  'TopK over a symbolic batch': { inputs: x1(['b', 5]), f: unary('TopK', { k: 2 }), feeds: [{ dtype: 'fp32', shape: [3, 5], values: [4, -1, 2, 9, 0, 1, 3, -5, 7, 2, 8, 6, -3, 0, 5] }], wrt: [0] },
  GatherND: {
    inputs: [{ name: 'x', dtype: 'fp32', shape: [3, 4] }, { name: 'i', dtype: 'int32', shape: [3, 1] }],
    f: (g, [x, i]) => g.op('GatherND', [x, i])[0],
    // Row 2 is read twice: its gradient is the sum of both reads.
    feeds: [fp32([3, 4], 22), int32([3, 1], [2, 0, 2])],
    wrt: [0],
  },
  'ScatterND none': {
    inputs: [{ name: 'x', dtype: 'fp32', shape: [4, 3] }, { name: 'i', dtype: 'int32', shape: [2, 1] }, { name: 'u', dtype: 'fp32', shape: [2, 3] }],
    f: (g, [x, i, u]) => g.op('ScatterND', [x, i, u])[0],
    feeds: [fp32([4, 3], 23), int32([2, 1], [3, 1]), fp32([2, 3], 24)],
    wrt: [0, 2],
  },
  'ScatterND add, repeated index': {
    inputs: [{ name: 'x', dtype: 'fp32', shape: [4, 2] }, { name: 'i', dtype: 'int32', shape: [3, 1] }, { name: 'u', dtype: 'fp32', shape: [3, 2] }],
    f: (g, [x, i, u]) => g.op('ScatterND', [x, i, u], { reduction: 'add' })[0],
    feeds: [fp32([4, 2], 25), int32([3, 1], [0, 2, 0]), fp32([3, 2], 26)],
    wrt: [0, 2],
  },
};

const noGpu = await webgpuUnavailable();

describe('tensor op gradients against central finite differences (reference backend)', () => {
  for (const [name, spec] of Object.entries(CASES)) {
    it(name, async () => expect(await gradCheck(spec)).toEqual([]));
  }

  // onnxruntime runs the backward graphs too: on cpu always, on webgpu where an adapter exists.
  for (const kind of ['cpu', 'webgpu'] as const) {
    it.skipIf(kind === 'webgpu' && noGpu !== null)(`every backward graph runs on ${kind} as on the reference`, async () => {
      const dev = await createDevice(kind);
      const ref = await createDevice('reference');
      for (const [name, spec] of Object.entries(CASES)) {
        const { g, xs, loss } = lossGraph(spec);
        const bg = backward(g, loss, spec.wrt.map((i) => xs[i])).graph;
        const run = (d: Device) => d.run(bg, spec.feeds.map((f) => d.tensor(f.values, f.shape, f.dtype)));
        const [got, want] = [await run(dev), await run(ref)];
        got.forEach((t, i) => expect(mismatch(t, want[i]), `${name}, output ${i}`).toBeNull());
      }
    });
  }

  it('notices a wrong gradient', async () => {
    // Exp's gradient without the factor exp(x): the harness must report every element.
    const spec = OPS.Exp as { grad?: OpSpec['grad'] };
    const right = spec.grad;
    spec.grad = ({ dy }) => [dy[0]];
    try {
      expect((await gradCheck(CASES.Exp)).length).toBe(12);
    } finally {
      spec.grad = right;
    }
  });
});
