/**
 * backward() as a graph transform: the outputs it promises, and a typed GradientError (naming the op and the value)
 * wherever a gradient is asked for that does not exist.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, GradientError, type Device } from '../../../engine/index.ts';

describe('backward', () => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice('reference');
  });
  afterAll(async () => {
    await dev.dispose();
  });

  it('outputs [loss, ...keep, ...grads]: d/dw sum(x w) = x summed over rows, d/dx = w broadcast', async () => {
    const g = new Graph('linear');
    const x = g.input('x', 'fp32', [2, 3]);
    const w = g.input('w', 'fp32', [3, 1]);
    const y = g.op('MatMul', [x, w])[0];
    const loss = g.op('ReduceSum', [y], { keepdims: false })[0];
    const bw = backward(g, loss, [w, x], { keep: [y] }).graph;
    expect(bw.outputs.map((v) => v.shape)).toEqual([[], [2, 1], [3, 1], [2, 3]]);
    const xs = [1, 2, 3, 4, 5, 6];
    const ws = [0.5, -1, 2];
    const out = await dev.run(bw, [dev.tensor(xs, [2, 3]), dev.tensor(ws, [3, 1])]);
    expect(out.map((t) => t.toArray())).toEqual([[13.5], [4.5, 9], [5, 7, 9], [0.5, -1, 2, 0.5, -1, 2]]);
  });

  it('adds the gradients of a value used twice (d/dx x*x = 2x)', async () => {
    const g = new Graph('square');
    const x = g.input('x', 'fp32', [3]);
    const loss = g.op('ReduceSum', [g.op('Mul', [x, x])[0]], { keepdims: false })[0];
    const [, dx] = await dev.run(backward(g, loss, [x]).graph, [dev.tensor([1, -2, 0.25], [3])]);
    expect(dx.toArray()).toEqual([2, -4, 0.5]);
  });

  it('takes gradients with respect to constants too', async () => {
    const g = new Graph('const');
    const x = g.input('x', 'fp32', [2]);
    const c = g.constant('c', dev.tensor([3, 4], [2]));
    const loss = g.op('ReduceSum', [g.op('Mul', [x, c])[0]], { keepdims: false })[0];
    const [, dc] = await dev.run(backward(g, loss, [c]).graph, [dev.tensor([5, 6], [2])]);
    expect(dc.toArray()).toEqual([5, 6]);
  });

  const sum = (g: Graph, v: ReturnType<Graph['input']>) => g.op('ReduceSum', [v], { keepdims: false })[0];

  it('refuses a loss that is not a scalar, not a float, or not of the graph', () => {
    const g = new Graph('bad');
    const x = g.input('x', 'fp32', [3]);
    expect(() => backward(g, x, [x])).toThrow(GradientError);
    expect(() => backward(g, x, [x])).toThrow(/must be a scalar.*\[3\]/);
    const other = new Graph('other');
    const y = sum(other, other.input('y', 'fp32', [3]));
    expect(() => backward(g, y, [x])).toThrow(/'reducesum_0_0' is not a value of graph 'bad'/);
  });

  it('refuses params that are not leaves, not floats, or not reaching the loss', () => {
    const g = new Graph('bad params');
    const x = g.input('x', 'fp32', [3]);
    const unused = g.input('unused', 'fp32', [3]);
    const idx = g.input('idx', 'int32', [2]);
    const picked = g.op('Gather', [x, idx])[0];
    const loss = sum(g, picked);
    expect(() => backward(g, loss, [picked])).toThrow(/'gather_0_0' is not an input or a constant/);
    expect(() => backward(g, loss, [idx])).toThrow(/'idx' is int32; only float values have gradients/);
    expect(() => backward(g, loss, [unused])).toThrow(/does not depend on 'unused'/);
    for (const p of [picked, idx, unused]) expect(() => backward(g, loss, [p])).toThrow(GradientError);
  });

  it('quantization is not differentiable: QuantizeLinear cuts the path (int8 codes), naming the op and the value', () => {
    const g = new Graph('fake quant');
    const x = g.input('x', 'fp32', [2, 4]);
    const scale = g.input('scale', 'fp32', []);
    const zp = g.input('zp', 'int8', []);
    const q = g.op('QuantizeLinear', [x, scale, zp])[0];
    const dq = g.op('DequantizeLinear', [q, scale, zp])[0];
    const loss = sum(g, dq);
    expect(() => backward(g, loss, [x])).toThrow(GradientError);
    expect(() => backward(g, loss, [x])).toThrow(/'x' reaches the loss only through QuantizeLinear, whose output 'quantizelinear_0_0' is int8/);
    // The scale reaches the loss through DequantizeLinear's float input, and DequantizeLinear has no gradient.
    expect(() => backward(g, loss, [scale])).toThrow(/DequantizeLinear has no gradient, and 'scale' reaches the loss through it/);
  });

  it('an index is an integer too: a param reaching the loss only through ArgMax gets a GradientError naming ArgMax', () => {
    const g = new Graph('argmax');
    const x = g.input('x', 'fp32', [3, 4]);
    const table = g.input('table', 'fp32', [4, 2]);
    const idx = g.op('ArgMax', [x], { axis: 1, keepdims: false })[0];
    const loss = sum(g, g.op('Gather', [table, idx])[0]);
    expect(() => backward(g, loss, [x])).toThrow(/'x' reaches the loss only through ArgMax, whose output 'argmax_0_0' is int32/);
    expect(backward(g, loss, [table]).graph.outputs.map((v) => v.shape)).toEqual([[], [4, 2]]);
  });

  it('an op without a gradient on a float path names the param it would carry (DynamicQuantizeLinear, MatMulNBits)', () => {
    const g = new Graph('dynamic');
    const x = g.input('x', 'fp32', [2, 32]);
    const [codes, scale, zp] = g.op('DynamicQuantizeLinear', [x]);
    const loss = sum(g, g.op('DequantizeLinear', [codes, scale, zp])[0]);
    expect(() => backward(g, loss, [x])).toThrow(/DequantizeLinear has no gradient, and 'x' \(by way of its input 'dynamicquantizelinear_0_1'\) reaches the loss/);

    const h = new Graph('nbits');
    const a = h.input('a', 'fp32', [1, 32]);
    const w = h.op('Mul', [a, a])[0];
    const packed = h.input('b', 'uint8', [4, 1, 16]);
    const scales = h.input('scales', 'fp32', [4]);
    const y = h.op('MatMulNBits', [w, packed, scales, null], { K: 32, N: 4, blockSize: 32, bits: 4 })[0];
    expect(() => backward(h, sum(h, y), [a])).toThrow(/MatMulNBits has no gradient, and 'a' \(by way of its input 'mul_0_0'\)/);
  });
});
