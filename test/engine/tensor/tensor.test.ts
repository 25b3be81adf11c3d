import { describe, expect, it } from 'vitest';
import { createDevice, DeviceError, OutOfMemoryError, pack4, Tensor, matmul, ServelabError } from '../../../engine/index.ts';

describe('Tensor', () => {
  it('has an exact byte size per dtype, packed 4-bit rounding up', async () => {
    const dev = await createDevice('reference');
    const cases = [
      ['fp32', 4 * 15],
      ['fp16', 2 * 15],
      ['bf16', 2 * 15],
      ['int8', 15],
      ['uint8', 15],
      ['int32', 60],
    ] as const;
    for (const [dtype, bytes] of cases) expect(dev.empty([3, 5], dtype).bytes).toBe(bytes);
    const codes = Uint8Array.from({ length: 15 }, (_, i) => i);
    const nf4 = Tensor.adopt(dev, [3, 5], 'nf4', pack4(codes), 'weights', 'w.nf4');
    expect(nf4.bytes).toBe(8); // ceil(15 / 2)
    expect(dev.memory.liveByTag().weights).toBe(8);
  });

  it('rounds floats into fp16 and bf16 and rejects out-of-range integers', async () => {
    const dev = await createDevice('reference');
    expect(dev.tensor([1e6, 65504, 65520, 1 / 3], [4], 'fp16').toArray()).toEqual([Infinity, 65504, Infinity, 0.333251953125]);
    expect(dev.tensor([1e6], [1], 'bf16').toArray()).toEqual([999424]);
    expect(() => dev.tensor([128], [1], 'int8')).toThrow(/value 128 at index 0 is not a int8/);
    expect(() => dev.tensor([1, 2, 3], [2, 2])).toThrow(/3 values do not fill shape \[2, 2\]/);
    expect(() => dev.tensor([1], [-1])).toThrow(ServelabError);
  });

  it('gives its bytes back on dispose, and cannot be read afterwards', async () => {
    const dev = await createDevice('reference');
    const before = dev.memory.live;
    const t = dev.tensor([1, 2, 3, 4], [2, 2], 'fp32', { tag: 'weights' });
    expect(dev.memory.live - before).toBe(16);
    t.dispose();
    t.dispose();
    expect(dev.memory.live).toBe(before);
    expect(() => t.data).toThrow(DeviceError);
    await expect(matmul(t, t)).rejects.toThrow(/was disposed/);
  });

  it('an allocation over budget throws OutOfMemoryError and leaves every tensor intact', async () => {
    const dev = await createDevice('cpu', { budget: 2000 });
    const a = dev.tensor(Array.from({ length: 256 }, (_, i) => i), [16, 16], 'fp32', { tag: 'weights' });
    const snapshot = a.toArray();
    expect(() => dev.empty([1024], 'fp32', { tag: 'kv' })).toThrow(OutOfMemoryError);
    // The product's 1 KiB output would exceed the budget too: refused before the kernel runs.
    await expect(matmul(a, a)).rejects.toThrow(/out of memory on cpu: requested 1.00 KiB \(1024 B\) \(activations\) with 1.00 KiB \(1024 B\) live/);
    expect(a.toArray()).toEqual(snapshot);
    expect(dev.memory.live).toBe(1024);
    dev.memory.setBudget(null);
    const c = await matmul(a, a);
    expect(c.shape).toEqual([16, 16]);
    // Tensors: a and c; the compiled session is counted beside them under its own tag.
    expect(dev.memory.live - dev.memory.liveByTag().compiled).toBe(2048);
    expect(dev.memory.liveByTag().compiled).toBeGreaterThan(0);
  });

  it('copies between devices, each tracker counting its own copy', async () => {
    const a = await createDevice('reference', { name: 'dev-a' });
    const b = await createDevice('reference', { name: 'dev-b' });
    const t = a.tensor([1, 2, 3], [3], 'fp16', { tag: 'weights' });
    const u = b.copyFrom(t);
    expect(u.device).toBe(b);
    expect(u.toArray()).toEqual([1, 2, 3]);
    expect(a.memory.live).toBe(6);
    expect(b.memory.live).toBe(6);
    await expect(matmul(t, b.tensor([1, 2, 3], [3, 1], 'fp16'))).rejects.toThrow(/different devices \(dev-a and dev-b\)/);
  });
});

/** Collects garbage until V8's array-buffer sweeper has caught up, then reads the process's array-buffer bytes. */
async function settledArrayBuffers(): Promise<number> {
  expect(global.gc, 'tests run with --expose-gc (vitest.config.ts)').toBeTypeOf('function');
  for (let i = 0; i < 3; i++) {
    global.gc!();
    await new Promise((r) => setTimeout(r, 30));
  }
  return process.memoryUsage().arrayBuffers;
}

describe('the tracker is real memory', () => {
  it('agrees with process.memoryUsage().arrayBuffers for large allocations', async () => {
    const dev = await createDevice('cpu');
    const MiB = 1024 * 1024;
    const base = await settledArrayBuffers();
    const tracked0 = dev.memory.live;
    const ts = [dev.empty([64 * MiB], 'fp32', { tag: 'weights' }), dev.empty([96 * MiB], 'fp16', { tag: 'kv' }), dev.empty([32 * MiB], 'int8')];
    for (const t of ts) t.data.fill(1); // touch the pages: counted memory is memory in use
    const tracked = dev.memory.live - tracked0;
    const real = (await settledArrayBuffers()) - base;
    expect(tracked).toBe(256 * MiB + 192 * MiB + 32 * MiB);
    // Within 2% (other allocations of the process come and go).
    expect(Math.abs(real - tracked) / tracked).toBeLessThan(0.02);
    for (const t of ts) t.dispose();
    expect(dev.memory.live).toBe(tracked0);
  });

  it('counts kernel outputs, which onnxruntime allocates, as live bytes', async () => {
    const dev = await createDevice('cpu');
    const n = 1024;
    const a = dev.empty([n, n], 'fp32', { tag: 'weights' });
    await matmul(a, a); // compile the session first: its arena is not a tensor
    const before = await settledArrayBuffers();
    const live0 = dev.memory.live;
    const c = await matmul(a, a);
    expect(dev.memory.live - live0).toBe(n * n * 4);
    const grown = (await settledArrayBuffers()) - before;
    expect(Math.abs(grown - n * n * 4) / (n * n * 4)).toBeLessThan(0.02);
    c.dispose();
  });
});
