/** The device's compile cache: sessions counted under 'compiled', bounded by bytes and budget, stale after a write. */
import { describe, expect, it } from 'vitest';
import { createDevice, DeviceError, Graph, OutOfMemoryError, type Device, type Tensor } from '../../../engine/index.ts';

function linear(w: Tensor, name = 'linear'): Graph {
  const g = new Graph(name);
  const x = g.input('x', 'fp32', ['batch', w.shape[0]]);
  return g.output(g.op('MatMul', [x, g.constant('w', w)])[0]);
}

const big = (dev: Device, n: number, seed = 1) => dev.tensor(Float32Array.from({ length: n * n }, (_, i) => Math.cos(i * seed)), [n, n], 'fp32', { tag: 'weights' });

describe.each(['cpu', 'reference'] as const)('compile cache on %s', (kind) => {
  it('a constant rewritten after a run is seen by the next run', async () => {
    const dev = await createDevice(kind);
    const w = dev.tensor([1, 0, 0, 1], [2, 2], 'fp32', { tag: 'weights' });
    const g = linear(w);
    const x = dev.tensor([1, 2], [1, 2]);
    expect((await dev.run(g, [x]))[0].toArray()).toEqual([1, 2]);
    expect(w.version).toBe(0);
    w.write([2, 0, 0, 2]);
    expect(w.version).toBe(1);
    expect((await dev.run(g, [x]))[0].toArray()).toEqual([2, 4]);
    // assign takes another tensor's storage: a new version again, and the source is gone.
    const src = dev.tensor([0, 1, 1, 0], [2, 2]);
    w.assign(src);
    expect([w.version, src.disposed]).toEqual([2, true]);
    expect((await dev.run(g, [x]))[0].toArray()).toEqual([2, 1]);
    // In-place changes through `data` are seen once touched.
    (w.data as Float32Array)[0] = 5;
    w.touch();
    expect((await dev.run(g, [x]))[0].toArray()).toEqual([7, 1]);
  });

  it('a write to a disposed tensor, or a bad write, is a typed error and changes nothing', async () => {
    const dev = await createDevice(kind);
    const t = dev.tensor([1, 2, 3], [3], 'int8');
    expect(() => t.write([1, 2])).toThrow(/write: 2 values for tensor #\d+ int8\[3\]/);
    expect(() => t.write([1, 2, 300])).toThrow(/value 300 at index 2 is not a int8/);
    expect([t.toArray(), t.version]).toEqual([[1, 2, 3], 0]);
    t.dispose();
    expect(() => t.write([1, 2, 3])).toThrow(DeviceError);
    expect(() => t.write([1, 2, 3])).toThrow(/was disposed/);
  });
});

describe('compile cache on cpu', () => {
  it('counts each session under compiled, at least its constants, and frees it when released', async () => {
    const dev = await createDevice('cpu');
    const w = big(dev, 512);
    await dev.run(linear(w), [dev.tensor(new Float32Array(512), [1, 512])]);
    const s = dev.stats();
    expect(s.sessions).toBe(1);
    expect(s.sessionBytes).toBe(dev.memory.liveByTag().compiled);
    // The session holds its own copy of the 1 MiB weight (prepacked), and little else for a GEMV.
    expect(s.sessionBytes).toBeGreaterThanOrEqual(w.bytes);
    expect(s.sessionBytes).toBeLessThan(4 * w.bytes + 8 * 2 ** 20);
    expect(dev.memory.snapshot().byTag.compiled).toBe(s.sessionBytes);
    dev.releaseCompiled();
    expect([dev.stats().sessions, dev.memory.liveByTag().compiled]).toEqual([0, 0]);
  });

  it('disposing a constant releases every session built from it', async () => {
    const dev = await createDevice('cpu');
    const w = big(dev, 256);
    await dev.run(linear(w, 'a'), [dev.tensor(new Float32Array(512), [2, 256])]);
    // The same structure under another name shares the session; another structure gets its own.
    await dev.run(linear(w, 'b'), [dev.tensor(new Float32Array(256), [1, 256])]);
    expect(dev.stats().sessions).toBe(1);
    const g = new Graph('c');
    g.output(g.op('MatMul', [g.input('x', 'fp32', [1, 256]), g.constant('w', w)])[0]);
    await dev.run(g, [dev.tensor(new Float32Array(256), [1, 256])]);
    expect(dev.stats().sessions).toBe(2);
    w.dispose();
    expect([dev.stats().sessions, dev.memory.liveByTag().compiled, dev.stats().sessionsReleased]).toEqual([0, 0, 2]);
    await expect(dev.run(linear(big(dev, 2)), [dev.tensor([1, 2], [1, 2])])).resolves.toHaveLength(1);
  });

  it('bounded by bytes: the least recently used sessions go first', async () => {
    // Each session holds at least its 1 MiB constant, so four cannot stay within 3 MiB.
    const dev = await createDevice('cpu', { compileCacheBytes: 3 * 2 ** 20 });
    const ws = [1, 2, 3, 4].map((s) => big(dev, 512, s)); // 1 MiB each
    const gs = ws.map((w, i) => linear(w, `layer${i}`));
    const x = dev.tensor(new Float32Array(512), [1, 512]);
    for (const g of gs) await dev.run(g, [x]);
    await dev.run(gs[0], [x]); // layer0 becomes the most recent
    const created = dev.stats().sessionsCreated;
    const bytes = dev.stats().sessionBytes;
    // Within the bound, unless one session alone (the one just run, never dropped under its caller) is larger.
    if (dev.stats().sessions > 1) expect(bytes).toBeLessThanOrEqual(3 * 2 ** 20);
    expect(dev.stats().sessionsReleased).toBeGreaterThan(0);
    // layer0 survived as most recently used: running it again compiles nothing.
    await dev.run(gs[0], [x]);
    expect(dev.stats().sessionsCreated).toBe(created);
  });

  it('a lower bound applies at once, the least recently used session going first', async () => {
    const dev = await createDevice('cpu');
    const gs = [1, 2, 3].map((s) => linear(big(dev, 256, s), `layer${s}`));
    const x = dev.tensor(new Float32Array(256), [1, 256]);
    for (const g of gs) await dev.run(g, [x]);
    await dev.run(gs[0], [x]); // order now: layer2, layer3, layer1
    const { sessions, sessionBytes, sessionsCreated } = dev.stats();
    expect(sessions).toBe(3);
    dev.setCompileCacheBytes(sessionBytes - 1);
    expect(dev.stats().sessions).toBe(2);
    await dev.run(gs[0], [x]);
    await dev.run(gs[2], [x]);
    expect(dev.stats().sessionsCreated).toBe(sessionsCreated);
    await dev.run(gs[1], [x]); // layer2 was the one released
    expect(dev.stats().sessionsCreated).toBe(sessionsCreated + 1);
    dev.setCompileCacheBytes(0);
    expect([dev.stats().sessions, dev.memory.liveByTag().compiled]).toEqual([0, 0]);
    expect(() => dev.setCompileCacheBytes(-1)).toThrow(/non-negative number of bytes/);
  });

  it('a session that cannot fit the budget is an OutOfMemoryError; nothing leaks and the device keeps working', async () => {
    const dev = await createDevice('cpu');
    const w = big(dev, 1024, 3); // 4 MiB, and the session needs its own copy
    dev.memory.setBudget(dev.memory.live + 2 ** 20);
    const x = dev.tensor(new Float32Array(1024), [1, 1024]);
    const err = await dev.run(linear(w), [x]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect((err as OutOfMemoryError).tag).toMatch(/^compiled \(session linear/);
    expect([dev.stats().sessions, dev.memory.liveByTag().compiled]).toEqual([0, 0]);
    const small = dev.tensor([1, 0, 0, 1], [2, 2], 'fp32', { tag: 'weights' });
    expect((await dev.run(linear(small, 'small'), [dev.tensor([3, 4], [1, 2])]))[0].toArray()).toEqual([3, 4]);
  });

  it('two devices of one process compile one at a time, so neither counts the other\'s session', async () => {
    const devs = [await createDevice('cpu'), await createDevice('cpu')];
    // Each session's memory is the process's growth while it is built: intervals that overlapped would count twice.
    const intervals: { dev: number; start: number; end: number }[] = [];
    devs.forEach((dev, i) => {
      const compile = dev.backend.compile.bind(dev.backend);
      dev.backend.compile = async (...a) => {
        const start = performance.now();
        try {
          return await compile(...a);
        } finally {
          intervals.push({ dev: i, start, end: performance.now() });
        }
      };
    });
    const ws = devs.map((dev, i) => big(dev, 256, i + 1));
    await Promise.all(devs.flatMap((dev, i) => [1, 2, 3].map((b) => dev.run(linear(ws[i], `l${i}`), [dev.tensor(new Float32Array(b * 256), [b, 256])]))));
    expect(intervals.filter((v) => v.dev === 0).length).toBe(1);
    expect(intervals.filter((v) => v.dev === 1).length).toBe(1);
    const [a, b] = intervals.sort((p, q) => p.start - q.start);
    expect(b.start).toBeGreaterThanOrEqual(a.end);
    for (const dev of devs) expect(dev.stats().sessionBytes).toBe(dev.memory.liveByTag().compiled);
  });
});
