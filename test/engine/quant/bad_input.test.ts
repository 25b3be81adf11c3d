/** Bad input to quantization gets a typed error that names what is wrong; a zero row is a defined result, not NaN. */
import { describe, expect, it } from 'vitest';
import {
  apply, DeviceError, dequantize, DTypeError, errorStats, MIN_SCALE, NonFiniteError, QuantizationError, quantize, quantizeWeightVectorwise,
  ShapeError, vectorwiseMatmul, type Int8Weight,
} from '../../../engine/index.ts';
import { device } from './fixtures.ts';

describe('quantize: bad input', () => {
  it('a NaN or an infinity is a NonFiniteError naming its position, in every float dtype', async () => {
    const dev = await device('cpu');
    const x = dev.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    (x.data as Float32Array)[5] = NaN;
    const err = await quantize(x, { granularity: 'row' }).catch((e) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.message).toBe('quantize: element [1, 2] (flat index 5 of shape [2, 3]) is NaN; quantization needs finite values');
    expect([err.index, err.position]).toEqual([5, [1, 2]]);
    await expect(quantize(dev.tensor([0, 1e6, 2], [3], 'fp16'))).rejects.toThrow(/element \[1\] .* is Infinity/);
    const b = dev.tensor([1, -2, 3, 4], [2, 2], 'bf16');
    (b.data as Uint16Array)[2] = 0xff80; // -inf
    await expect(quantize(b, { scheme: 'zeropoint' })).rejects.toThrow(/element \[1, 0\] .* is -Infinity/);
  });

  it('a zero row (and an all-zero tensor) quantizes to codes 0 with scale 2^-126, never NaN', async () => {
    const dev = await device('reference');
    const x = dev.tensor([0, 0, 0, 7, -7, 1], [2, 3]);
    const qt = await quantize(x, { granularity: 'row' });
    expect(qt.scale.toArray()).toEqual([MIN_SCALE, Math.fround(7 / 127)]);
    expect(qt.q.toArray()).toEqual([0, 0, 0, 127, -127, 18]);
    const zeros = await quantize(dev.tensor([0, 0, 0, 0], [2, 2]), { scheme: 'zeropoint' });
    expect([zeros.scale.toArray(), zeros.zeroPoint!.toArray(), zeros.q.toArray()]).toEqual([[MIN_SCALE], [0], [0, 0, 0, 0]]);
    expect((await dequantize(zeros)).toArray()).toEqual([0, 0, 0, 0]);
  });

  it('wrong dtypes: integer input, uint8 absmax codes, an unknown code dtype', async () => {
    const dev = await device('cpu');
    const x = dev.tensor([1, 2], [2]);
    await expect(quantize(dev.tensor([1, 2], [2], 'int8'))).rejects.toThrow(new DTypeError('quantize', ['int8'], 'x must be one of fp32/fp16/bf16'));
    await expect(quantize(x, { dtype: 'uint8' })).rejects.toThrow(QuantizationError);
    await expect(quantize(x, { scheme: 'zeropoint', dtype: 'int4' as never })).rejects.toThrow(/codes must be int8 or uint8 \(dtypes int4\)/);
  });

  it('a bad scheme, granularity or block size is a typed error naming the valid choices', async () => {
    const dev = await device('cpu');
    const x = dev.tensor(Array.from({ length: 12 }, (_, i) => i), [3, 4]);
    await expect(quantize(x, { scheme: 'minmax' as never })).rejects.toThrow("unknown scheme \"minmax\"; expected one of absmax, zeropoint");
    await expect(quantize(x, { granularity: 'channel' as never })).rejects.toThrow('unknown granularity "channel"; expected one of tensor, row, column, block');
    await expect(quantize(x, { granularity: 'block' })).rejects.toThrow(/needs blockSize, a positive integer; got undefined/);
    for (const bs of [0, -2, 2.5, NaN]) await expect(quantize(x, { granularity: 'block', blockSize: bs })).rejects.toThrow(QuantizationError);
    await expect(quantize(x, { granularity: 'block', blockSize: 3 })).rejects.toThrow(new ShapeError('quantize per block', [[3, 4]], 'blockSize 3 does not divide the last dimension (4)'));
    await expect(quantize(x, { granularity: 'row', blockSize: 2 })).rejects.toThrow(/blockSize applies to granularity 'block' only/);
    await expect(quantize(dev.tensor([1, 2], [2]), { granularity: 'column' })).rejects.toThrow(/columns need a tensor of rank 2 or more/);
    await expect(quantize(dev.empty([0, 4]), { granularity: 'row' })).rejects.toThrow(/the tensor is empty/);
  });

  it('errorStats refuses tensors of different shapes', async () => {
    const dev = await device('cpu');
    expect(() => errorStats(dev.tensor([1, 2, 3, 4], [2, 2]), dev.tensor([1, 2, 3, 4], [4]))).toThrow(ShapeError);
  });
});

describe('vector-wise matmul: bad input', () => {
  const weight = async (kind = 'cpu') => {
    const dev = await device(kind);
    return quantizeWeightVectorwise(dev.tensor(Array.from({ length: 12 }, (_, i) => i - 6), [4, 3], 'fp32', { tag: 'weights' }));
  };

  it('shapes that do not meet, a weight that is not vector-wise, a disposed weight', async () => {
    const dev = await device('cpu');
    const wq = await weight();
    await expect(vectorwiseMatmul(dev.tensor([1, 2, 3, 4, 5], [1, 5]), wq)).rejects.toThrow(new ShapeError('vectorwiseMatmul', [[1, 5], [4, 3]], "x's last dimension must be the weight's K=4"));
    await expect(quantizeWeightVectorwise(dev.empty([2, 2, 2]))).rejects.toThrow(/the weight must be 2-D \[K, N\]/);
    const perRow = (await quantize(dev.tensor(Array.from({ length: 12 }, (_, i) => i), [4, 3]), { granularity: 'row' })) as Int8Weight;
    await expect(vectorwiseMatmul(dev.tensor([1, 2, 3, 4], [1, 4]), perRow)).rejects.toThrow(QuantizationError);
    await expect(vectorwiseMatmul(dev.tensor([1, 2, 3, 4], [1, 4], 'int8'), wq)).rejects.toThrow(DTypeError);
    const x = dev.tensor([1, NaN, 3, 4], [1, 4]);
    await expect(vectorwiseMatmul(x, wq)).rejects.toThrow(NonFiniteError);
    await vectorwiseMatmul(dev.tensor([1, 2, 3, 4], [1, 4]), wq); // compiles and caches the session
    wq.q.dispose();
    await expect(vectorwiseMatmul(dev.tensor([1, 2, 3, 4], [1, 4]), wq)).rejects.toThrow(new DeviceError("vectorwiseMatmul: the weight 'w' was disposed"));
  });

  it('x on another device than the weight', async () => {
    const ref = await device('reference');
    await expect(vectorwiseMatmul(ref.tensor([1, 2, 3, 4], [1, 4]), await weight('cpu'))).rejects.toThrow(/x is on reference(:\d+)?, the weight on cpu(:\d+)?/);
  });

  it('a zero row of x gives a zero row of y, not NaN', async () => {
    const dev = await device('cpu');
    const y = await vectorwiseMatmul(dev.tensor([0, 0, 0, 0, 1, 2, 3, 4], [2, 4]), await weight());
    const v = y.toArray();
    expect(v.slice(0, 3)).toEqual([0, 0, 0]);
    expect(v.every(Number.isFinite)).toBe(true);
  });
});

describe('quantization ops: typed errors at graph build time', () => {
  it('ReduceMax, Clip, QuantizeLinear and DequantizeLinear check axes, bounds, shapes and dtypes', async () => {
    const dev = await device('cpu');
    const x = dev.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    const s3 = dev.tensor([1, 1, 1], [3]);
    await expect(apply('ReduceMax', [x], { axes: [1, -1] })).rejects.toThrow(/axes \[1,-1\] name an axis twice/);
    await expect(apply('ReduceMax', [x], { axes: [2] })).rejects.toThrow(/axis 2 out of range for rank 2/);
    await expect(apply('ReduceMax', [x], { axes: [] })).rejects.toThrow(/non-empty list/);
    await expect(apply('ReduceMax', [dev.empty([2, 0])], { axes: [1] })).rejects.toThrow(/axis 1 has length 0/);
    await expect(apply('Clip', [x], { min: 2, max: 1 })).rejects.toThrow(/Clip: min 2 is above max 1/);
    await expect(apply('Round', [dev.tensor([1], [1], 'int8')])).rejects.toThrow(DTypeError);
    await expect(apply('QuantizeLinear', [x, dev.tensor([1, 1], [2]), null], { axis: 1 })).rejects.toThrow("QuantizeLinear: x's length along axis 1 and a per-axis scale's length differ (3 vs 2) (shapes [2, 3], [2])");
    await expect(apply('QuantizeLinear', [x, dev.tensor([1], [], 'int32'), null])).rejects.toThrow(/scale must be one of fp32/);
    await expect(apply('QuantizeLinear', [x, s3, dev.tensor([0, 0], [2], 'int8')], { axis: 1 })).rejects.toThrow(/the zero point must have the scale's shape/);
    await expect(apply('QuantizeLinear', [x, s3, dev.tensor([0, 0, 0], [3], 'uint8')], { axis: 1, outputDtype: 'int8' })).rejects.toThrow(/zero point must be one of int8/);
    await expect(apply('QuantizeLinear', [x, s3, null], { axis: 1, blockSize: 3 })).rejects.toThrow(/blocked scales are not supported/);
    await expect(apply('DequantizeLinear', [x, s3, null], { axis: 1 })).rejects.toThrow(/DequantizeLinear: x must be one of int8\/uint8 \(dtypes fp32\)/);
  });
});
