/**
 * Where a tensor's bytes are, on devices whose kernels work in host memory (cpu, reference): everything is a host
 * tensor, the asynchronous reads that device tensors need work here too, and nothing is counted as a transfer.
 * (Device-resident tensors on webgpu: test/engine/device/residency.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { createDevice, DeviceError, Graph, ServelabError } from '../../../engine/index.ts';

describe.each(['cpu', 'reference'] as const)('tensor location on %s', (kind) => {
  it('is host, reads copies of its bytes, and counts no transfer', async () => {
    const dev = await createDevice(kind);
    const t = dev.tensor([1.5, -2, 65504, 1 / 3], [2, 2], 'fp16', { tag: 'kv', label: 'k' });
    expect(t.location).toBe('host');
    expect(t.deviceBuffer).toBeNull();
    const raw = await t.read();
    expect(raw).toBeInstanceOf(Uint16Array);
    expect(Array.from(raw)).toEqual([0x3e00, 0xc000, 0x7bff, 0x3555]);
    raw[0] = 0; // a copy: the tensor keeps its values
    expect(t.toArray()[0]).toBe(1.5);
    expect(Array.from(await t.values())).toEqual(t.toArray());

    const h = await t.toHost();
    expect([h.location, h.tag, h.label, h.bytes, h === t]).toEqual(['host', 'kv', 'k', 8, false]);
    const d = await dev.toDevice(t, { tag: 'weights' });
    expect([d.location, d.tag, d.dtype]).toEqual(['host', 'weights', 'fp16']);
    t.dispose();
    expect(h.toArray()).toEqual([1.5, -2, 65504, 0.333251953125]);
    expect(d.toArray()).toEqual(h.toArray());

    const g = new Graph('twice');
    const x = g.input('x', 'fp16', ['n', 2]);
    g.output(g.op('Add', [x, x])[0], x);
    const [y, same] = await dev.run(g, [d], { keep: 'device' });
    expect([y.location, same.location]).toEqual(['host', 'host']);
    expect(y.toArray()).toEqual([3, -4, Infinity, 0.66650390625]);
    const [z] = await dev.run(g, [y], { keep: ['host', 'device'] });
    expect(z.toArray()).toEqual([6, -8, Infinity, 1.3330078125]);
    const s = dev.stats();
    expect([s.hostToDeviceBytes, s.deviceToHostBytes]).toEqual([0, 0]);
  });

  it('refuses a disposed tensor, one of another device and a bad keep, then goes on working', async () => {
    const dev = await createDevice(kind, { name: `${kind}-loc` });
    const other = await createDevice(kind, { name: `${kind}-other` });
    const t = dev.tensor([1, 2], [2]);
    const g = new Graph('id');
    g.output(g.op('Add', [g.input('x', 'fp32', [2]), g.input('y', 'fp32', [2])])[0]);
    await expect(other.toDevice(t)).rejects.toThrow(new RegExp(`toDevice: tensor #${t.id} fp32\\[2\\] on ${kind}-loc is on ${kind}-loc, not ${kind}-other`));
    await expect(dev.run(g, [t, t], { keep: ['host', 'host'] as never })).rejects.toThrow(/keep names 2 locations for 1 outputs/);
    await expect(dev.run(g, [t, t], { keep: 'gpu' as never })).rejects.toThrow(ServelabError);
    const u = dev.tensor([3, 4], [2]);
    u.dispose();
    await expect(u.read()).rejects.toThrow(new RegExp(`tensor #${u.id} fp32\\[2\\] on ${kind}-loc was disposed`));
    await expect(u.values()).rejects.toThrow(DeviceError);
    await expect(u.toHost()).rejects.toThrow(DeviceError);
    await expect(dev.toDevice(u)).rejects.toThrow(/toDevice: .* was disposed/);
    await expect(dev.run(g, [t, u])).rejects.toThrow(new RegExp(`input 'y' \\(tensor #${u.id} .*\\) was disposed`));
    expect((await dev.run(g, [t, t]))[0].toArray()).toEqual([2, 4]);
  });

  it('assign swaps bytes in place and follows the tracker', async () => {
    const dev = await createDevice(kind);
    const p = dev.tensor([1, 2, 3], [3], 'bf16', { tag: 'weights' });
    const live = dev.memory.live;
    const v = p.version;
    p.assign(dev.tensor([4, 5, 6], [3], 'bf16'));
    expect([p.toArray(), p.location, p.bytes, p.version, dev.memory.live]).toEqual([[4, 5, 6], 'host', 6, v + 1, live]);
  });
});
