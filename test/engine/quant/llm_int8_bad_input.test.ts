/**
 * LLM.int8 on bad input: typed errors that name the mistake, or a defined result.
 *
 * - threshold < 0, NaN or not a number: QuantizationError. 0 sends every dimension to fp16; Infinity none.
 * - NaN or an infinity in x: NonFiniteError naming the element (a NaN would silently make no column an outlier).
 * - An outlier beyond fp16's 65504, or (paper) a weight beyond it: QuantizationError, since that part is fp16.
 * - x's last dimension not the weight's K, an empty x, a bias not [N], another device, a disposed weight: typed errors.
 * - A zero row: codes 0, scale 2^-126, output row exactly 0 (never NaN).
 */
import { describe, expect, it } from 'vitest';
import {
  createDevice, DeviceError, DTypeError, findOutlierDims, llmInt8Matmul, llmInt8MatmulParts, MIN_SCALE, NonFiniteError, QuantizationError,
  quantizeLlmInt8Weight, ShapeError,
} from '../../../engine/index.ts';
import { device } from './fixtures.ts';

const wValues = (K: number, N: number) => Array.from({ length: K * N }, (_, i) => Math.sin(i) * 0.1);

describe('LLM.int8: bad input', () => {
  it('a negative, NaN or non-numeric threshold is a QuantizationError', async () => {
    const dev = await device('cpu');
    const w = await quantizeLlmInt8Weight(dev.tensor(wValues(4, 2), [4, 2], 'fp32', { tag: 'weights' }));
    const x = dev.tensor([1, 2, 3, 4], [1, 4]);
    for (const threshold of [-1, -0.001, NaN, '6' as unknown as number]) {
      await expect(llmInt8Matmul(x, w, { threshold })).rejects.toThrow(QuantizationError);
    }
    await expect(llmInt8Matmul(x, w, { threshold: -1 })).rejects.toThrow('LLM.int8 threshold must be a number >= 0 (Infinity: no outliers, plain int8), got -1');
    await expect(findOutlierDims(x, -2)).rejects.toThrow(QuantizationError);
    expect((await llmInt8Matmul(x, w, { threshold: 0 })).outlierDims).toEqual([0, 1, 2, 3]);
  });

  it('an unknown variant is a QuantizationError naming the choices', async () => {
    const dev = await device('cpu');
    await expect(quantizeLlmInt8Weight(dev.tensor([1, 2], [1, 2]), { variant: 'gptq' as never })).rejects.toThrow('unknown LLM.int8 variant "gptq"; expected one of paper, bitsandbytes');
  });

  it('NaN or an infinity in x is a NonFiniteError naming the element', async () => {
    const dev = await device('cpu');
    const w = await quantizeLlmInt8Weight(dev.tensor(wValues(3, 2), [3, 2], 'fp32', { tag: 'weights' }));
    const x = dev.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    (x.data as Float32Array)[4] = NaN;
    await expect(llmInt8Matmul(x, w)).rejects.toThrow(new NonFiniteError('llmInt8Matmul', 4, [1, 1], NaN, [2, 3]));
    await expect(llmInt8Matmul(dev.tensor([1, 1e6, 0], [1, 3], 'fp16'), w)).rejects.toThrow(/element \[0, 1\] .* is Infinity/);
  });

  it('values beyond fp16 range: an outlier dimension, or a weight of the paper variant', async () => {
    const dev = await device('cpu');
    const w = await quantizeLlmInt8Weight(dev.tensor(wValues(3, 2), [3, 2], 'fp32', { tag: 'weights' }));
    await expect(llmInt8Matmul(dev.tensor([1, 70000, 2], [1, 3]), w)).rejects.toThrow(/outlier dimension 1 holds \|x\| = 70000, beyond fp16's range/);
    // Below the threshold it is no outlier and goes through int8 (Infinity: no decomposition at all). The row's scale
    // is 70000 / 127, so 1 and 2 round to code 0 and y[n] = 127 * code(W[1, n]) * (70000 / 127) * (absmax_n / 127).
    const r = await llmInt8Matmul(dev.tensor([1, 70000, 2], [1, 3]), w, { threshold: Infinity });
    expect([r.outlierDims, r.fp16Share]).toEqual([[], 0]);
    const W = wValues(3, 2).map(Math.fround);
    const expected = [0, 1].map((n) => {
      const absmax = Math.max(...[0, 1, 2].map((k) => Math.abs(W[k * 2 + n])));
      return 127 * Math.round((W[2 + n] * 127) / absmax) * (70000 / 127) * (absmax / 127);
    });
    const y = Array.from(r.y.toFloat32());
    expect(y).toHaveLength(2);
    for (let n = 0; n < 2; n++) expect(Math.abs(y[n] - expected[n]) / Math.abs(expected[n])).toBeLessThan(1e-5);
    const big = dev.tensor([1, 2, 1e5, 4], [2, 2], 'fp32', { tag: 'weights' });
    await expect(quantizeLlmInt8Weight(big)).rejects.toThrow(/w\[2\] = 100000 is beyond fp16's range/);
    // bitsandbytes keeps no fp16 copy, so a weight beyond fp16 is only int8 codes: column absmax 1e5 and 4.
    const bnb = await quantizeLlmInt8Weight(big, { variant: 'bitsandbytes' });
    expect(bnb.fp16).toBeNull();
    expect(Array.from(bnb.int8.q.toArray())).toEqual([0, 64, 127, 127]);   // round(127 / 1e5), round(63.5) = 64; 127, 127
    const scales = Array.from(bnb.int8.scale.toFloat32());
    expect(scales).toEqual([Math.fround(1e5 / 127), Math.fround(4 / 127)]);
  });

  it('shapes and devices that do not match', async () => {
    const dev = await device('cpu');
    const w = await quantizeLlmInt8Weight(dev.tensor(wValues(4, 3), [4, 3], 'fp32', { tag: 'weights' }));
    await expect(llmInt8Matmul(dev.tensor([1, 2, 3], [1, 3]), w)).rejects.toThrow(new ShapeError('llmInt8Matmul', [[1, 3], [4, 3]], "x's last dimension must be the weight's K=4"));
    await expect(llmInt8Matmul(dev.empty([0, 4]), w)).rejects.toThrow(/x is empty/);
    await expect(llmInt8Matmul(dev.tensor([1, 2, 3, 4], [1, 4]), w, { bias: dev.tensor([1, 2], [2]) })).rejects.toThrow(/the bias must be \[3\]/);
    await expect(llmInt8Matmul(dev.tensor([1, 2, 3, 4], [1, 4], 'int8'), w)).rejects.toThrow(DTypeError);
    await expect(quantizeLlmInt8Weight(dev.tensor([1, 2, 3], [3]))).rejects.toThrow(/must be 2-D \[K, N\]/);
    const other = await createDevice('reference');
    await expect(llmInt8Matmul(other.tensor([1, 2, 3, 4], [1, 4]), w)).rejects.toThrow(DeviceError);
    w.int8.q.dispose();
    await expect(llmInt8Matmul(dev.tensor([1, 2, 3, 4], [1, 4]), w)).rejects.toThrow(/was disposed/);
  });

  it('a zero row gives scale 2^-126, codes 0 and an exact 0 row, also beside outliers', async () => {
    for (const kind of ['cpu', 'reference']) {
      const dev = await device(kind);
      const w = await quantizeLlmInt8Weight(dev.tensor(wValues(4, 3), [4, 3], 'fp32', { tag: 'weights' }), { variant: 'bitsandbytes' });
      const x = dev.tensor([0, 0, 0, 0, 1, 30, -2, 0.5], [2, 4]);
      const p = await llmInt8MatmulParts(x, w);
      expect(p.outlierDims).toEqual([1]);
      expect(p.xScale.toArray()).toEqual([MIN_SCALE, Math.fround(2 / 127)]);
      expect(p.y.toArray().slice(0, 3)).toEqual([0, 0, 0]);
      expect(p.y.toArray().every(Number.isFinite)).toBe(true);
    }
  });
});
