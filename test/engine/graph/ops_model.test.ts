/**
 * The model ops' shape inference and typed errors, and RotaryEmbedding and SoftmaxCrossEntropyLoss against
 * independent formulas: RoPE as complex multiplication (Su et al. 2021, eq. 13) and as Hugging Face's
 * x cos + rotate_half(x) sin, its relative-position property, and cross entropy in closed form.
 *
 * Tolerances: fp32 results are compared with float64 formulas at atol 1e-6 (inputs of magnitude <= 2, a handful of
 * fp32 roundings); the reference backend rounds once, so it is held to 2^-23 relative.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apply, createDevice, DTypeError, Graph, ShapeError, type Device, type Tensor } from '../../../engine/index.ts';
import { rotaryInvFreq, rotaryTables } from '../../../engine/graph/ops_model.ts';
import { rng, uniform } from '../../../bench/random.ts';

let cpu: Device;
let ref: Device;
beforeAll(async () => {
  cpu = await createDevice('cpu');
  ref = await createDevice('reference');
});
afterAll(async () => {
  await cpu.dispose();
  await ref.dispose();
});

const close = (got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol = 0) => {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= atol + rtol * Math.abs(want[i]))) throw new Error(`element ${i}: got ${got[i]}, want ${want[i]} (atol ${atol}, rtol ${rtol})`);
  }
};

async function rope(dev: Device, x: number[], shape: number[], pos: number[], attrs: Record<string, number | boolean> = {}, withCaches = false): Promise<Float32Array> {
  const D = shape.length === 4 ? shape[3] : shape[2] / (attrs.numHeads as number);
  const [B, S] = shape.length === 4 ? [shape[0], shape[2]] : [shape[0], shape[1]];
  const ins: (Tensor | null)[] = [dev.tensor(x, shape), dev.tensor(pos, [B, S], 'int32'), null, null];
  if (withCaches) {
    const t = rotaryTables(64, D, (attrs.theta as number) ?? 10000);
    ins[2] = dev.tensor(t.cos, [64, D / 2]);
    ins[3] = dev.tensor(t.sin, [64, D / 2]);
  }
  const [y] = await apply('RotaryEmbedding', ins, attrs);
  return y.toFloat32();
}

describe('RotaryEmbedding', () => {
  const D = 8;
  const f = rotaryInvFreq(D);
  const x = uniform(rng(1), 2 * 3 * D, -2, 2); // [B=1, S=2 or H=.., ...]

  it('interleaved is complex multiplication of each pair by e^(i pos theta_k) (the paper)', async () => {
    // x [1, 1, 6, 8]: six tokens of one head.
    const pos = [0, 1, 5, 17, 40, 63];
    const want: number[] = [];
    pos.forEach((p, t) => {
      for (let k = 0; k < D / 2; k++) {
        const [re, im] = [x[t * D + 2 * k], x[t * D + 2 * k + 1]];
        const [c, s] = [Math.cos(p * f[k]), Math.sin(p * f[k])];
        want.push(re * c - im * s, re * s + im * c);
      }
    });
    for (const dev of [ref, cpu]) {
      for (const caches of [false, true]) close(await rope(dev, x, [1, 1, 6, D], pos, { interleaved: true }, caches), want, dev === ref ? 1e-6 : 2e-6);
    }
  });

  it("rotate-half is Hugging Face Llama's x * cos + rotate_half(x) * sin with the frequencies repeated", async () => {
    // x [1, 2, 3*8] as [B, S, H*D] with three heads; one position per token.
    const pos = [7, 30];
    const want: number[] = [];
    for (let t = 0; t < 2; t++) {
      const emb = [...f, ...f].map((v) => v * pos[t]);
      for (let h = 0; h < 3; h++) {
        const v = x.slice((t * 3 + h) * D, (t * 3 + h + 1) * D);
        const rot = [...v.slice(D / 2).map((a) => -a), ...v.slice(0, D / 2)];
        for (let d = 0; d < D; d++) want.push(v[d] * Math.cos(emb[d]) + rot[d] * Math.sin(emb[d]));
      }
    }
    for (const dev of [ref, cpu]) {
      for (const caches of [false, true]) close(await rope(dev, x, [1, 2, 3 * D], pos, { numHeads: 3 }, caches), want, 2e-6);
    }
  });

  it('keeps norms, and q . k depends only on the distance between positions', async () => {
    const q = uniform(rng(2), D, -1, 1);
    const k = uniform(rng(3), D, -1, 1);
    const at = async (v: number[], p: number) => Array.from(await rope(cpu, v, [1, 1, 1, D], [p]));
    const dot = (a: number[], b: number[]) => a.reduce((s, ai, i) => s + ai * b[i], 0);
    const norm = (a: number[]) => Math.sqrt(dot(a, a));
    expect(norm(await at(q, 37))).toBeCloseTo(norm(q), 6);
    const d1 = dot(await at(q, 10), await at(k, 3));
    const d2 = dot(await at(q, 50), await at(k, 43));
    const d3 = dot(await at(q, 7), await at(k, 0));
    expect(Math.abs(d1 - d2)).toBeLessThan(1e-5);
    expect(Math.abs(d1 - d3)).toBeLessThan(1e-5);
    // A different distance gives a different score (else the test could not fail).
    expect(Math.abs(d1 - dot(await at(q, 10), await at(k, 4)))).toBeGreaterThan(1e-3);
  });

  it('inverse undoes the rotation', async () => {
    const pos = [3, 9, 11];
    const x0 = x.slice(0, 3 * D);
    const y = Array.from(await rope(cpu, x0, [1, 1, 3, D], pos));
    close(await rope(cpu, y, [1, 1, 3, D], pos, { inverse: true }), x0, 2e-6);
  });

  it('infers symbolic shapes and checks batch and seq against positionIds at run time', async () => {
    const g = new Graph('rope');
    const xs = g.input('x', 'fp32', ['batch', 4, 'seq', 16]);
    const ps = g.input('pos', 'int32', ['batch', 'len']);
    const [y] = g.op('RotaryEmbedding', [xs, ps]);
    expect(y.shape).toEqual(['batch', 4, 'seq', 16]);
    g.output(y);
    await expect(cpu.run(g, [cpu.tensor(new Array(2 * 4 * 3 * 16).fill(1), [2, 4, 3, 16]), cpu.tensor([0, 1, 2, 3, 4, 5, 6, 7], [2, 4], 'int32')])).rejects.toThrow(/'seq' = 3 vs 'len' = 4/);
  });

  it('refuses bad operands with typed errors', () => {
    const g = new Graph('bad');
    const x4 = g.input('x', 'fp32', [1, 2, 3, 8]);
    const pos = g.input('pos', 'int32', [1, 3]);
    expect(() => g.op('RotaryEmbedding', [g.input('odd', 'fp32', [1, 2, 3, 7]), pos])).toThrow(ShapeError);
    expect(() => g.op('RotaryEmbedding', [x4, g.input('p32', 'fp32', [1, 3])])).toThrow(DTypeError);
    expect(() => g.op('RotaryEmbedding', [x4, g.input('p1', 'int32', [3])])).toThrow(/positionIds must be \[batch, seq\]/);
    expect(() => g.op('RotaryEmbedding', [g.input('x3', 'fp32', [1, 3, 16]), pos])).toThrow(/numHeads/);
    expect(() => g.op('RotaryEmbedding', [x4, pos, g.input('cos', 'fp32', [16, 4]), null])).toThrow(/both/);
    expect(() => g.op('RotaryEmbedding', [x4, pos, g.input('c', 'fp32', [16, 8]), g.input('s', 'fp32', [16, 8])])).toThrow(/half the head dim/);
    expect(() => g.op('RotaryEmbedding', [x4, pos, g.input('c16', 'fp16', [16, 4]), g.input('s16', 'fp16', [16, 4])])).toThrow(DTypeError);
  });

  it('a position outside the caches stops the run on every backend', async () => {
    for (const dev of [ref, cpu]) {
      const t = rotaryTables(4, 8);
      const ins = [dev.tensor(x.slice(0, 16), [1, 1, 2, 8]), dev.tensor([1, 4], [1, 2], 'int32'), dev.tensor(t.cos, [4, 4]), dev.tensor(t.sin, [4, 4])];
      await expect(apply('RotaryEmbedding', ins)).rejects.toThrow(/outside the (cos\/sin )?caches/);
      ins[1] = dev.tensor([1, -1], [1, 2], 'int32');
      await expect(apply('RotaryEmbedding', ins)).rejects.toThrow(/outside the (cos\/sin )?caches/);
    }
  });
});

describe('SoftmaxCrossEntropyLoss', () => {
  const loss = async (dev: Device, logits: number[], shape: number[], labels: number[], attrs = {}) => {
    const outs = await apply('SoftmaxCrossEntropyLoss', [dev.tensor(logits, shape), dev.tensor(labels, shape.slice(0, -1), 'int32')], attrs);
    return outs.map((t) => t.toFloat32());
  };

  it('is ln C for uniform logits and -ln p for a known softmax', async () => {
    for (const dev of [ref, cpu]) {
      const [l] = await loss(dev, new Array(2 * 7).fill(0.5), [2, 7], [3, 6]);
      close(l, [Math.log(7)], 0, 2 ** -23);
      // softmax([0, ln 3]) = [1/4, 3/4]
      const [l2, lp] = await loss(dev, [0, Math.log(3), 0, Math.log(3)], [2, 2], [1, 0], { reduction: 'none' });
      close(l2, [-Math.log(3 / 4), -Math.log(1 / 4)], 1e-7, 2 ** -22);
      close(lp, [Math.log(1 / 4), Math.log(3 / 4), Math.log(1 / 4), Math.log(3 / 4)], 1e-7, 2 ** -22);
    }
  });

  it('mean divides by the labels not ignored; sum does not; none keeps the leading dims', async () => {
    const logits = uniform(rng(5), 2 * 3 * 5, -3, 3);
    const labels = [4, -100, 0, 2, -100, 1];
    const row = (r: number) => {
      const v = logits.slice(r * 5, r * 5 + 5);
      const m = Math.max(...v);
      return m + Math.log(v.reduce((s, a) => s + Math.exp(a - m), 0)) - v[labels[r]];
    };
    const rows = labels.map((l, r) => (l === -100 ? 0 : row(r)));
    const total = rows.reduce((a, b) => a + b, 0);
    for (const dev of [ref, cpu]) {
      close((await loss(dev, logits, [2, 3, 5], labels))[0], [total / 4], 1e-6);
      close((await loss(dev, logits, [2, 3, 5], labels, { reduction: 'sum' }))[0], [total], 1e-6);
      const none = await apply('SoftmaxCrossEntropyLoss', [dev.tensor(logits, [2, 3, 5]), dev.tensor(labels, [2, 3], 'int32')], { reduction: 'none' });
      expect(none[0].shape).toEqual([2, 3]);
      close(none[0].toFloat32(), rows, 1e-6);
    }
  });

  it('a label that is neither a class nor ignoreIndex stops the run on every backend', async () => {
    for (const dev of [ref, cpu]) {
      for (const bad of [5, -1]) await expect(loss(dev, new Array(10).fill(0), [2, 5], [0, bad])).rejects.toThrow(/neither a class/);
    }
  });

  it('infers shapes and refuses bad operands with typed errors', () => {
    const g = new Graph('ce');
    const logits = g.input('logits', 'fp32', ['batch', 'seq', 100]);
    const labels = g.input('labels', 'int32', ['batch', 'seq']);
    const [l, lp] = g.op('SoftmaxCrossEntropyLoss', [logits, labels]);
    expect([l.shape, lp.shape]).toEqual([[], ['batch', 'seq', 100]]);
    expect(g.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: 'none' })[0].shape).toEqual(['batch', 'seq']);
    expect(() => g.op('SoftmaxCrossEntropyLoss', [logits, g.input('l2', 'int32', ['batch'])])).toThrow(ShapeError);
    expect(() => g.op('SoftmaxCrossEntropyLoss', [logits, g.input('lf', 'fp32', ['batch', 'seq'])])).toThrow(DTypeError);
    expect(() => g.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: 'avg' })).toThrow(/reduction must be/);
    expect(() => g.op('SoftmaxCrossEntropyLoss', [g.input('l1', 'fp32', [100]), g.input('y', 'int32', [])])).toThrow(/at least one leading dim/);
    expect(() => g.op('SoftmaxCrossEntropyLossGrad', [null, logits, labels, null])).toThrow(/needs dLoss, dLogProb or both/);
    expect(() => g.op('SoftmaxCrossEntropyLossGrad', [g.input('d', 'fp32', ['batch']), logits, labels, null])).toThrow(/loss's shape/);
  });
});
