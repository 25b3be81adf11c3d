/** Weights bound as graph constants: baked into the onnxruntime session (and prepacked), read directly by the reference. */
import { describe, expect, it } from 'vitest';
import { createDevice, Graph, pack4, type Device, type Tensor } from '../../../engine/index.ts';
import { mismatch, maxAbsError } from '../../../bench/op_cases.ts';

const K = 256;
const N = 16;
const BS = 32;

function weights(dev: Device): { codes: Tensor; scales: Tensor } {
  const nb = K / BS;
  const codes = dev.tensor(pack4(Uint8Array.from({ length: N * K }, (_, i) => (i * 7 + (i >> 5)) % 16)), [N, nb, BS / 2], 'uint8', { tag: 'weights' });
  const scales = dev.tensor(Array.from({ length: N * nb }, (_, i) => 0.01 + (i % 5) * 0.005), [N * nb], 'fp32', { tag: 'weights' });
  return { codes, scales };
}

async function linear4(dev: Device, accuracyLevel: number): Promise<Tensor> {
  const { codes, scales } = weights(dev);
  const g = new Graph('linear4');
  const x = g.input('x', 'fp32', [2, K]);
  g.output(g.op('MatMulNBits', [x, g.constant('codes', codes), g.constant('scales', scales), null], { K, N, blockSize: BS, bits: 4, accuracyLevel })[0]);
  const xs = dev.tensor(Array.from({ length: 2 * K }, (_, i) => 2 * Math.sin(i * 0.37)), [2, K]);
  const [y] = await dev.run(g, [xs]);
  // A second run reuses the compiled session and gives the same answer.
  const [y2] = await dev.run(g, [xs]);
  expect(y2.toArray()).toEqual(y.toArray());
  return y;
}

describe('graph constants', () => {
  it('a 4-bit linear with constant weights matches the reference exactly at accuracy level 0', async () => {
    const got = await linear4(await createDevice('cpu'), 0);
    const want = await linear4(await createDevice('reference'), 0);
    expect(mismatch(got, want)).toBeNull();
  });

  it('at accuracy level 4 (int8 activations) the error is that of int8-quantizing A, and not zero', async () => {
    const got = await linear4(await createDevice('cpu'), 4);
    const want = await linear4(await createDevice('reference'), 0);
    const err = maxAbsError(got, want);
    // Per block of 32, A (|A| <= 2) is rounded to 1/127 of its absmax: each term is off by at most 2/254 * |W|,
    // |W| <= 15 * 0.03; over K = 256 terms the bound is 256 * 0.0079 * 0.45 = 0.9; random signs give far less.
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(0.05);
  });

  it('a constant from another device, or a disposed one, is refused', async () => {
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    const g = new Graph('g');
    const x = g.input('x', 'fp32', [1, 2]);
    g.output(g.op('MatMul', [x, g.constant('w', ref.tensor([1, 2, 3, 4], [2, 2]))])[0]);
    await expect(cpu.run(g, [cpu.tensor([1, 1], [1, 2])])).rejects.toThrow(/constant 'w' is on reference(:\d+)?, the graph runs on cpu(:\d+)?/);
    const w = cpu.tensor([1], [1, 1]);
    w.dispose();
    expect(() => new Graph('h').constant('w', w)).toThrow(/was disposed/);
  });
});
