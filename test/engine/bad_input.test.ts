/** Bad input gets a typed error naming the op, shapes and dtypes; the device and every tensor stay usable. */
import { describe, expect, it } from 'vitest';
import {
  add, attention, createDevice, DeviceError, DTypeError, gather, KernelError, Graph, matmul, matmulInteger, matmulNBits, reshape, ShapeError, softmax, transpose,
  type Device,
} from '../../engine/index.ts';

async function cpuWith(a: number[], shape: number[]): Promise<{ dev: Device; t: ReturnType<Device['tensor']> }> {
  const dev = await createDevice('cpu');
  return { dev, t: dev.tensor(a, shape) };
}

describe('bad input', () => {
  it('a matmul with mismatched inner dimensions names the op and both shapes', async () => {
    const dev = await createDevice('cpu');
    const a = dev.tensor([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = dev.tensor([1, 2, 3, 4], [2, 2]);
    const err = await matmul(a, b).catch((e) => e);
    expect(err).toBeInstanceOf(ShapeError);
    expect(err.message).toBe('MatMul: inner dimensions differ (3 vs 2) (shapes [2, 3], [2, 2])');
    expect([err.op, err.shapes]).toEqual(['MatMul', [[2, 3], [2, 2]]]);
    // Nothing was corrupted and the device still runs kernels.
    expect(a.toArray()).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await matmul(b, b)).toArray()).toEqual([7, 10, 15, 22]);
  });

  it('mismatched dtypes name the op and the dtypes', async () => {
    const dev = await createDevice('cpu');
    const a = dev.tensor([1, 2], [1, 2], 'fp32');
    const b = dev.tensor([1, 2], [2, 1], 'fp16');
    const err = await matmul(a, b).catch((e) => e);
    expect(err).toBeInstanceOf(DTypeError);
    expect(err.message).toBe('MatMul: operands must share one dtype (dtypes fp32, fp16)');
    const i8 = dev.tensor([1, 2], [1, 2], 'int8');
    await expect(matmulInteger(i8, dev.tensor([1, 2], [2, 1], 'fp32'))).rejects.toThrow(/MatMulInteger: B must be one of int8\/uint8 \(dtypes fp32\)/);
    await expect(softmax(i8)).rejects.toThrow(DTypeError);
    await expect(gather(a, dev.tensor([0], [1], 'fp32'))).rejects.toThrow(/Gather: indices must be one of int32/);
  });

  it('broadcast, reshape, transpose and attention shape errors are typed', async () => {
    const { dev, t } = await cpuWith([1, 2, 3, 4, 5, 6], [2, 3]);
    await expect(add(t, dev.tensor([1, 2], [2]))).rejects.toThrow(/Add: cannot broadcast dimension 3 against 2/);
    await expect(reshape(t, [4, 2])).rejects.toThrow(/Reshape: 6 elements cannot take a shape of 8/);
    await expect(reshape(t, [-1, -1])).rejects.toThrow(/at most one dimension may be -1/);
    await expect(transpose(t, [0, 0])).rejects.toThrow(/Transpose: perm \[0,0\] is not a permutation/);
    const q = dev.empty([1, 3, 2, 4]);
    const kv = dev.empty([1, 2, 2, 4]);
    await expect(attention(q, kv, kv)).rejects.toThrow(/query heads \(3\) must be a multiple of kv heads \(2\)/);
    await expect(attention(dev.empty([1, 2, 4, 4]), kv, kv, { causal: true })).rejects.toThrow(/causal attention needs at least as many keys \(2\) as queries \(4\)/);
  });

  it('a 4-bit weight with a bad layout is refused before onnxruntime sees it', async () => {
    const dev = await createDevice('cpu');
    const a = dev.empty([1, 48]);
    const codes = dev.empty([4, 1, 16], 'uint8');
    const scales = dev.empty([4]);
    await expect(matmulNBits(a, codes, scales, { K: 48, N: 4, blockSize: 32 })).rejects.toThrow(/K=48 must be a multiple of blockSize=32/);
    await expect(matmulNBits(dev.empty([1, 32]), codes, scales, { K: 32, N: 4, blockSize: 24 })).rejects.toThrow(/blockSize must be a power of two/);
    await expect(matmulNBits(dev.empty([1, 32]), codes, dev.empty([3]), { K: 32, N: 4 })).rejects.toThrow(/scales must have shape \[4\]/);
  });

  it('packing a 4-bit tensor with odd rows or out-of-range codes is a typed error', async () => {
    const dev = await createDevice('cpu');
    expect(() => dev.packed([1, 2, 3], [3], 'nf4')).toThrow(/pack nf4: the last dimension must be even \(two 4-bit codes per byte\), got 3 \(shapes \[3\]\)/);
    expect(() => dev.packed([1, 2, 3, 4, 5, 6], [2, 3], 'int4')).toThrow(ShapeError);
    expect(() => dev.packed([0, 16], [2], 'nf4')).toThrow(/code 16 at index 1 is outside 0..15/);
    expect(() => dev.packed([-9, 0], [2], 'int4')).toThrow(/code -9 at index 0 is outside -8..7/);
    const ok = dev.packed([-8, 7, 0, 1], [2, 2], 'int4');
    expect(ok.bytes).toBe(2);
  });

  it('an unknown device names the valid ones', async () => {
    await expect(createDevice('tpu')).rejects.toThrow(DeviceError);
    await expect(createDevice('tpu')).rejects.toThrow("unknown device 'tpu'; expected one of auto, cpu, webgpu, reference");
  });

  it('operands on different devices, and graph feeds of the wrong kind, are refused', async () => {
    const a = await createDevice('cpu');
    const b = await createDevice('reference');
    await expect(add(a.tensor([1], [1]), b.tensor([1], [1]))).rejects.toThrow(/operands are on different devices/);
    const g = new Graph('step');
    const x = g.input('x', 'fp32', [2]);
    g.output(g.op('Add', [x, x])[0]);
    await expect(a.run(g, [a.tensor([1, 2, 3], [3])])).rejects.toThrow(/step: input 'x' axis 0 is 3, the graph expects 2 \(shapes \[3\], \[2\]\)/);
    await expect(a.run(g, [a.tensor([1, 2], [2], 'fp16')])).rejects.toThrow(/input 'x' is fp16, the graph expects fp32/);
    await expect(a.run(g, [b.tensor([1, 2], [2])])).rejects.toThrow(/input 'x' is on reference, the graph runs on cpu/);
    await expect(a.run(g, [])).rejects.toThrow(/graph takes 1 inputs, got 0/);
    expect(() => g.op('Nope' as never, [x])).toThrow(/unknown op 'Nope'/);
  });

  it('an out-of-range gather index is an error on every backend, not a crash', async () => {
    for (const kind of ['cpu', 'reference'] as const) {
      const dev = await createDevice(kind);
      const table = dev.tensor([1, 2, 3, 4], [2, 2]);
      const err = await gather(table, dev.tensor([5], [1], 'int32')).catch((e) => e);
      expect(err, kind).toBeInstanceOf(KernelError);
      expect(err.message, kind).toMatch(new RegExp(`^Gather on ${kind}(:\\d+)?: .*(out of range|out of data bounds)`));
      expect((await gather(table, dev.tensor([1], [1], 'int32'))).toArray()).toEqual([3, 4]);
    }
  });
});
