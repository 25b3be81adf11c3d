/**
 * Buffer donation: feeds given up to a run are disposed by it, and GroupQueryAttention writes the new rows of a
 * donated KV cache into the cache's own buffer. Results are checked against the same run without donation (exact:
 * the same kernel on the same values), and the buffer identity against the feed's storage.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, DeviceError, Graph, ServelabError, type Device, type Tensor } from '../../../engine/index.ts';

const Hq = 4;
const Hkv = 2;
const D = 8;
const T = 16;

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

function decodeGraph(): Graph {
  const g = new Graph('decode attention');
  const ins = [
    g.input('q', 'fp32', ['batch', 1, Hq * D]),
    g.input('k', 'fp32', ['batch', 1, Hkv * D]),
    g.input('v', 'fp32', ['batch', 1, Hkv * D]),
    g.input('pastKey', 'fp32', ['batch', Hkv, 'maxSeq', D]),
    g.input('pastValue', 'fp32', ['batch', Hkv, 'maxSeq', D]),
    g.input('pastLengths', 'int32', ['batch']),
  ];
  return g.output(...g.op('GroupQueryAttention', ins, { numHeads: Hq, kvNumHeads: Hkv }));
}

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));

function feeds(B: number, lens: number[]): Tensor[] {
  return [
    dev.tensor(values(B * Hq * D, 1), [B, 1, Hq * D]),
    dev.tensor(values(B * Hkv * D, 2), [B, 1, Hkv * D]),
    dev.tensor(values(B * Hkv * D, 3), [B, 1, Hkv * D]),
    dev.tensor(values(B * Hkv * T * D, 4), [B, Hkv, T, D], 'fp32', { tag: 'kv' }),
    dev.tensor(values(B * Hkv * T * D, 5), [B, Hkv, T, D], 'fp32', { tag: 'kv' }),
    dev.tensor(lens, [B], 'int32'),
  ];
}

describe('buffer donation', () => {
  it('a donated KV cache is updated in its own buffer, with the results of the run that copies it', async () => {
    const g = decodeGraph();
    const lens = [3, 0, 15];
    const plain = await dev.run(g, feeds(3, lens));
    // Donation is compiled into the session (the lowering writes into the input): build it before counting bytes.
    for (const t of await dev.run(g, feeds(3, lens), { donate: [3, 4] })) t.dispose();
    const fs = feeds(3, lens);
    const [keyBuf, valueBuf] = [fs[3].data, fs[4].data];
    const live = dev.memory.live;
    const out = await dev.run(g, fs, { donate: [3, 4] });
    expect(fs[3].disposed && fs[4].disposed).toBe(true);
    expect(out[1].data).toBe(keyBuf);
    expect(out[2].data).toBe(valueBuf);
    out.forEach((t, i) => expect(Array.from(t.toFloat32()), `output ${i}`).toEqual(Array.from(plain[i].toFloat32())));
    // The caches are counted once: only the attention output is new.
    expect(dev.memory.live - live).toBe(out[0].bytes);
    expect(out[1].tag).toBe('activations');
  });

  it('a donated feed that no output can reuse is disposed, and the results are those of a plain run', async () => {
    const g = new Graph('add');
    g.output(g.op('Add', [g.input('a', 'fp32', [4]), g.input('b', 'fp32', [4])])[0]);
    const a = dev.tensor([1, 2, 3, 4], [4]);
    const b = dev.tensor([10, 20, 30, 40], [4]);
    const [y] = await dev.run(g, [a, b], { donate: [0] });
    expect(y.toArray()).toEqual([11, 22, 33, 44]);
    expect(a.disposed).toBe(true);
    expect(b.disposed).toBe(false);
    expect(() => a.data).toThrow(DeviceError);
  });

  it('refuses an index out of range and a donated feed that is fed twice, leaving every feed alive', async () => {
    const g = decodeGraph();
    const fs = feeds(1, [2]);
    await expect(dev.run(g, fs, { donate: [6] })).rejects.toThrow(/donate names feed 6; the graph takes 6/);
    const twice = [...fs.slice(0, 4), fs[3], fs[5]];
    await expect(dev.run(g, twice, { donate: [3] })).rejects.toThrow(ServelabError);
    expect(fs.every((t) => !t.disposed)).toBe(true);
  });

  it('a run that fails on a check keeps its donated feeds', async () => {
    const g = decodeGraph();
    const fs = feeds(1, [T]); // the cache is full: no room for the new token
    await expect(dev.run(g, fs, { donate: [3, 4] })).rejects.toThrow(/exceed the cache length/);
    expect(fs[3].disposed || fs[4].disposed).toBe(false);
    expect(Array.from(fs[3].toFloat32().slice(0, 4))).toEqual(values(4, 4).map((x) => Math.fround(x)));
  });
});
