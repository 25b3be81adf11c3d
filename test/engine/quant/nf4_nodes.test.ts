/**
 * addNf4Weight: the in-graph dequantization of a device NF4/FP4 weight equals the host nf4Dequantize of W^T, bit for
 * bit (fp32: level * absmax rounded once, as on the host), on onnxruntime's CPU provider and the reference backend,
 * with fp32 or double-quantized absmax, partial blocks and odd counts, bound as constants or fed as inputs; bf16 is
 * that result rounded once. Gradients
 * flow through the following MatMul to x, never to the frozen weight. Bad input leaves no tensor behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, bf16ToFp32, createDevice, fp32ToBf16, Graph, type Device, type Tensor, type Value } from '../../../engine/index.ts';
import {
  FP4, NF4, QuantizationError, addNf4Weight, codebookDequantize, codebookQuantize, disposeNf4Weight, doubleDequantize, doubleQuantize,
  nf4WeightBytes, nf4WeightTensors, quantizeNf4Weight, type Nf4Weight,
} from '../../../engine/quant/index.ts';

/** W [K, N] -> W^T [N, K] flat, the layout the codes are taken in. */
function transpose(w: Float32Array, K: number, N: number): Float32Array {
  const t = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) t[n * K + k] = w[k * N + n];
  return t;
}

/** The host's dequantized W [K, N], independent of the graph: nf4Dequantize of W^T (absmax through doubleDequantize). */
function hostDequant(w: Float32Array, K: number, N: number, o: { format: 'nf4' | 'fp4'; blockSize: number; doubleQuant: boolean; blockSize2: number }): Float32Array {
  const book = o.format === 'nf4' ? NF4 : FP4;
  const q = codebookQuantize(transpose(w, K, N), book, { blockSize: o.blockSize });
  const absmax = o.doubleQuant ? doubleDequantize(doubleQuantize(q.absmax, { blockSize2: o.blockSize2 })) : q.absmax;
  return transpose(codebookDequantize({ ...q, absmax }, book), N, K);
}

const weight = (K: number, N: number) => Float32Array.from({ length: K * N }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 13)) * 0.05);

const CASES = [
  { K: 64, N: 48, format: 'nf4', blockSize: 64, doubleQuant: false, blockSize2: 256 },
  { K: 37, N: 5, format: 'nf4', blockSize: 64, doubleQuant: false, blockSize2: 256 }, //    185 values: odd, partial block
  { K: 64, N: 48, format: 'nf4', blockSize: 64, doubleQuant: true, blockSize2: 256 }, //     48 absmax: one partial block of 256
  { K: 300, N: 7, format: 'nf4', blockSize: 64, doubleQuant: true, blockSize2: 4 }, //      33 absmax: 8 full blocks + 1
  { K: 96, N: 10, format: 'fp4', blockSize: 32, doubleQuant: true, blockSize2: 8 },
] as const;

describe.each(['cpu', 'reference'])('addNf4Weight on %s', (kind) => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice(kind);
  });
  afterAll(async () => {
    await dev.dispose();
  });

  for (const c of CASES) {
    it(`${c.format} [${c.K}, ${c.N}] blocks of ${c.blockSize}${c.doubleQuant ? `, double-quantized in blocks of ${c.blockSize2}` : ''}: equal to the host dequantization`, async () => {
      const w = weight(c.K, c.N);
      const before = dev.memory.liveByTag().weights ?? 0;
      const q = quantizeNf4Weight(dev, w, [c.K, c.N], { ...c, label: 'layer.w' });
      expect((dev.memory.liveByTag().weights ?? 0) - before).toBe(nf4WeightBytes(c.K, c.N, c));
      expect(nf4WeightTensors(q).every((t) => t.tag === 'weights' && t.label.startsWith('layer.w.'))).toBe(true);
      const g = new Graph('dequant');
      const W = addNf4Weight(g, q, 'w');
      const Wb = addNf4Weight(g, q, 'wb', { dtype: 'bf16' });
      expect([W.dtype, W.shape, Wb.dtype]).toEqual(['fp32', [c.K, c.N], 'bf16']);
      g.output(W, Wb);
      const [y, yb] = await dev.run(g, []);
      const want = hostDequant(w, c.K, c.N, c);
      expect(Array.from(y.toFloat32())).toEqual(Array.from(want));
      expect(Array.from(yb.data as Uint16Array)).toEqual(Array.from(want, (v) => fp32ToBf16(v)));
      disposeNf4Weight(q);
      expect(dev.memory.liveByTag().weights ?? 0).toBe(before);
      for (const t of [y, yb]) t.dispose();
    });
  }

  it('bound as inputs (feeds), the graph holds no constant and gives the same weight', async () => {
    const c = CASES[3];
    const w = weight(c.K, c.N);
    const q = quantizeNf4Weight(dev, w, [c.K, c.N], c);
    const g = new Graph('fed');
    const feeds = new Map<Value, Tensor>();
    g.output(addNf4Weight(g, q, 'w', { feeds }));
    expect(g.constants.size).toBe(0);
    expect(g.inputs.length).toBe(nf4WeightTensors(q).length);
    expect(new Set(feeds.values())).toEqual(new Set(nf4WeightTensors(q)));
    const [y] = await dev.run(g, g.inputs.map((v) => feeds.get(v)!));
    expect(Array.from(y.toFloat32())).toEqual(Array.from(hostDequant(w, c.K, c.N, c)));
    disposeNf4Weight(q);
  });

  it('x @ W gets a gradient for x only; the 4-bit weight stays a constant', async () => {
    const [K, N] = [64, 8];
    const w = weight(K, N);
    const q = quantizeNf4Weight(dev, w, [K, N]);
    const g = new Graph('qlora forward');
    const x = g.input('x', 'fp32', [2, K]);
    const y = g.op('MatMul', [x, addNf4Weight(g, q, 'base')])[0];
    const loss = g.op('ReduceSum', [y], { keepdims: false })[0];
    const bw = backward(g, loss, [x]).graph;
    const xs = Float32Array.from({ length: 2 * K }, (_, i) => (i % 5) - 2);
    const [, dx] = await dev.run(bw, [dev.tensor(xs, [2, K])]);
    // d/dx sum(x W) = the row sums of W, the dequantized one.
    const deq = hostDequant(w, K, N, { format: 'nf4', blockSize: 64, doubleQuant: false, blockSize2: 256 });
    const rowSums = Array.from({ length: K }, (_, k) => deq.slice(k * N, (k + 1) * N).reduce((s, v) => s + v, 0));
    const got = dx.toFloat32();
    for (let k = 0; k < K; k++) expect(got[k]).toBeCloseTo(rowSums[k], 5);
    disposeNf4Weight(q);
  });

  it('bad input is refused before anything is allocated; a disposed weight cannot be added', async () => {
    const before = dev.memory.liveByTag().weights ?? 0;
    const w = weight(8, 8);
    w[20] = Infinity;
    expect(() => quantizeNf4Weight(dev, w, [8, 8])).toThrow(/block 0 holds Infinity at element/);
    expect(() => quantizeNf4Weight(dev, weight(8, 8), [8, 9])).toThrow(/72 fp32 values needed/);
    expect(() => quantizeNf4Weight(dev, weight(8, 8), [8, 8], { format: 'int3' as never })).toThrow(QuantizationError);
    expect(() => quantizeNf4Weight(dev, weight(8, 8), [8, 8], { blockSize: 5 })).toThrow(/blockSize/);
    expect(dev.memory.liveByTag().weights ?? 0).toBe(before);
    const q: Nf4Weight = quantizeNf4Weight(dev, weight(8, 8), [8, 8]);
    disposeNf4Weight(q);
    expect(() => addNf4Weight(new Graph('g'), q, 'w')).toThrow(/was disposed/);
  });
});

it('bf16 output is the fp32 dequantization rounded once', () => {
  // A check of the helper this file uses, so a wrong fp32ToBf16 cannot hide a wrong Cast.
  expect(bf16ToFp32(fp32ToBf16(1 + 2 ** -9))).toBe(1);
  expect(bf16ToFp32(fp32ToBf16(-0.3125))).toBe(-0.3125);
});
