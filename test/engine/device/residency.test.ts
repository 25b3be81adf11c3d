/**
 * Tensors that stay on the GPU (onnxruntime's WebGPU provider, Mesa's lavapipe in CI): outputs kept in GPU buffers
 * feed the next run without a copy, bytes come back only when read, and every crossing is counted exactly. Results
 * are checked against the reference backend; fp32 to 1e-6 relative (the GPU may fuse or reorder a sum), fp16 and
 * bf16 results of single exact-input ops bit for bit.
 */
import { describe, expect, it } from 'vitest';
import { createDevice, DeviceError, DTypeError, Graph, ServelabError, webgpuUnavailable, type Tensor } from '../../../engine/index.ts';

const why = await webgpuUnavailable();

/** The chain x -> a = x @ w -> b = a + a -> c = b * a, one graph per step. */
function chain(w: Tensor): Graph[] {
  const g1 = new Graph('step1');
  g1.output(g1.op('MatMul', [g1.input('x', 'fp32', ['n', 3]), g1.constant('w', w)])[0]);
  const g2 = new Graph('step2');
  const a2 = g2.input('a', 'fp32', ['n', 4]);
  g2.output(g2.op('Add', [a2, a2])[0]);
  const g3 = new Graph('step3');
  g3.output(g3.op('Mul', [g3.input('b', 'fp32', ['n', 4]), g3.input('a', 'fp32', ['n', 4])])[0]);
  return [g1, g2, g3];
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, rel: number): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(want[i])));
}

const X = [0.5, -1.25, 2, 3, 0.75, -0.5];
const W = Array.from({ length: 12 }, (_, i) => (i - 5) / 4);

if (why !== null && process.env.CI === 'true') {
  describe('device residency on webgpu', () => {
    it('has an adapter in CI', () => {
      throw new Error(`CI=true but WebGPU is unavailable: ${why}\nrun scripts/webgpu-deps.sh and source .cache/vulkan/env.sh before the tests`);
    });
  });
} else {
  describe.skipIf(why !== null)(`device residency on webgpu${why ? ` (skipped: ${why.slice(0, 120)})` : ''}`, () => {
    it('chains three runs on the GPU: only the first feed goes up and only the final read comes down', async () => {
      const ref = await createDevice('reference');
      const [r1, r2, r3] = chain(ref.tensor(W, [3, 4], 'fp32', { tag: 'weights' }));
      const rx = ref.tensor(X, [2, 3]);
      const [ra] = await ref.run(r1, [rx]);
      const [rb] = await ref.run(r2, [ra]);
      const [rc] = await ref.run(r3, [rb, ra]);

      const dev = await createDevice('webgpu');
      const [g1, g2, g3] = chain(dev.tensor(W, [3, 4], 'fp32', { tag: 'weights' }));
      const x = dev.tensor(X, [2, 3]);
      const s0 = dev.stats();
      const [a] = await dev.run(g1, [x], { keep: 'device' });
      const [b] = await dev.run(g2, [a], { keep: 'device' });
      const [c] = await dev.run(g3, [b, a], { keep: 'device' });
      for (const t of [a, b, c]) expect(t.location).toBe('device');
      expect(x.location).toBe('host');
      const s1 = dev.stats();
      expect(s1.hostToDeviceBytes - s0.hostToDeviceBytes).toBe(2 * 3 * 4);
      expect(s1.deviceToHostBytes - s0.deviceToHostBytes).toBe(0);
      expect(s1.runs - s0.runs).toBe(3);

      const got = await c.values();
      expectClose(got, rc.toFloat32(), 1e-6);
      const s2 = dev.stats();
      expect(s2.deviceToHostBytes - s1.deviceToHostBytes).toBe(2 * 4 * 4);
      expect(s2.hostToDeviceBytes).toBe(s1.hostToDeviceBytes);
      // Reading copies: the tensor is still on the device, and a second read is a second crossing.
      expect(c.location).toBe('device');
      expectClose(await c.read(), rc.toFloat32(), 1e-6);
      expect(dev.stats().deviceToHostBytes - s2.deviceToHostBytes).toBe(32);
      const h = await b.toHost();
      expect(h.location).toBe('host');
      expectClose(h.toFloat32(), rb.toFloat32(), 1e-6);
      expect([h.tag, h.label, h.bytes]).toEqual([b.tag, b.label, 32]);
    });

    it('feeds a device-resident cache back every step; the step is compiled once and each step sends only its token', async () => {
      const T = 5;
      const d = 4;
      const steps = 6;
      const dev = await createDevice('webgpu');
      // kv' = kv * decay + x (a state updated in place, as a KV cache is) and scores = x @ kv'^T back to the host.
      const g = new Graph('cache step');
      const kv = g.input('kv', 'fp32', ['T', d]);
      const x = g.input('x', 'fp32', [1, d]);
      const next = g.op('Add', [g.op('Mul', [kv, g.constant('decay', dev.tensor([0.5], [1]))])[0], x])[0];
      const kt = g.op('Transpose', [next], { perm: [1, 0] })[0];
      g.output(next, g.op('MatMul', [x, kt])[0]);

      const init = Array.from({ length: T * d }, (_, i) => Math.sin(i));
      const host = dev.tensor(init, [T, d], 'fp32', { tag: 'kv' });
      const s0 = dev.stats();
      let cache = await dev.toDevice(host);
      expect([cache.location, cache.tag, cache.bytes]).toEqual(['device', 'kv', T * d * 4]);
      host.dispose();

      const want = Float64Array.from(init);
      for (let s = 0; s < steps; s++) {
        const tok = Array.from({ length: d }, (_, j) => (s + 1) * 0.25 - j * 0.125);
        for (let i = 0; i < T * d; i++) want[i] = want[i] * 0.5 + tok[i % d];
        const [kvNext, scores] = await dev.run(g, [cache, dev.tensor(tok, [1, d])], { keep: ['device', 'host'], tag: 'kv' });
        expect([kvNext.location, scores.location]).toEqual(['device', 'host']);
        const wantScores = Array.from({ length: T }, (_, t) => tok.reduce((acc, v, j) => acc + v * want[t * d + j], 0));
        expectClose(scores.toFloat32(), wantScores, 1e-5);
        cache.dispose();
        cache = kvNext;
      }
      expectClose(await cache.values(), want, 1e-5);
      const s1 = dev.stats();
      expect(s1.sessionsCreated - s0.sessionsCreated).toBe(1);
      // Up: the initial cache and one token per step. Down: the scores of each step, and the final read.
      expect(s1.hostToDeviceBytes - s0.hostToDeviceBytes).toBe(T * d * 4 + steps * d * 4);
      expect(s1.deviceToHostBytes - s0.deviceToHostBytes).toBe(steps * T * 4 + T * d * 4);
    });

    it('reads back every dtype it can hold, bit for bit, counting what crosses', async () => {
      const dev = await createDevice('webgpu');
      const cases = [
        ['fp32', [1.5, -2.25, 1e-20, 3.4e38], 4],
        ['fp16', [1.5, -2.25, 65504, 6e-8], 2],
        ['bf16', [1.5, -2.25, 3e38, 1e-30], 4], // carried as fp32 on the GPU
        ['uint8', [0, 1, 200, 255], 1],
        ['int32', [-(2 ** 31), -7, 70000, 2 ** 31 - 1], 4],
        ['bool', [1, 0, 0, 1], 1],
      ] as const;
      for (const [dtype, vals, bytesEach] of cases) {
        const t = dev.tensor(vals, [2, 2], dtype);
        const live0 = dev.memory.live;
        const s0 = dev.stats();
        const g = await dev.toDevice(t);
        expect([g.location, g.bytes, dev.memory.live - live0], dtype).toEqual(['device', 4 * bytesEach, 4 * bytesEach]);
        expect(Array.from(await g.read()), dtype).toEqual(Array.from(t.data));
        expect((await g.read()).constructor, dtype).toBe(t.data.constructor);
        expect(Array.from(await g.values()), dtype).toEqual(Array.from(t.toFloat32()));
        const s1 = dev.stats();
        expect([s1.hostToDeviceBytes - s0.hostToDeviceBytes, s1.deviceToHostBytes - s0.deviceToHostBytes], dtype).toEqual([4 * bytesEach, 3 * 4 * bytesEach]);
        g.dispose();
        expect(dev.memory.live, dtype).toBe(live0);
      }
      // onnxruntime-node 1.30 cannot wrap an int8 GPU buffer: an explicit upload is refused, a kept output comes home.
      const q = dev.tensor([-128, 127, 0, 5], [4], 'int8');
      await expect(dev.toDevice(q)).rejects.toThrow(DTypeError);
      const gq = new Graph('int8 out');
      const xi = gq.input('x', 'fp32', [4]);
      gq.output(gq.input('q', 'int8', [4]), gq.op('Add', [xi, xi])[0]);
      const [qi, f] = await dev.run(gq, [dev.tensor([1, -2, 3, 100], [4]), q], { keep: 'device' });
      expect([qi.location, f.location]).toEqual(['host', 'device']);
      expect(Array.from(qi.data)).toEqual([-128, 127, 0, 5]);
      expect(Array.from(await f.values())).toEqual([2, -4, 6, 200]);
    });

    it('keeps fp16 and bf16 run outputs on the GPU, equal to the reference bit for bit', async () => {
      const ref = await createDevice('reference');
      const dev = await createDevice('webgpu');
      for (const dtype of ['fp16', 'bf16'] as const) {
        const mk = () => {
          const g = new Graph(`${dtype} add`);
          const a = g.input('a', dtype, [2, 3]);
          const b = g.input('b', dtype, [2, 3]);
          g.output(g.op('Add', [a, b])[0]);
          return g;
        };
        const A = [1.5, -2.25, 3.125, 100, 0.1, -7];
        const B = [0.75, 4, -1.5, 0.3, 0.2, 1e-3];
        const [want] = await ref.run(mk(), [ref.tensor(A, [2, 3], dtype), ref.tensor(B, [2, 3], dtype)]);
        const [y] = await dev.run(mk(), [dev.tensor(A, [2, 3], dtype), dev.tensor(B, [2, 3], dtype)], { keep: 'device' });
        expect(y.location).toBe('device');
        expect(y.bytes, dtype).toBe(dtype === 'fp16' ? 12 : 24);
        // Fed back as it is, then read.
        const [z] = await dev.run(mk(), [y, y], { keep: 'host' });
        const [wantZ] = await ref.run(mk(), [want, want]);
        expect(Array.from(await y.read()), dtype).toEqual(Array.from(want.data));
        expect(Array.from(z.data), dtype).toEqual(Array.from(wantZ.data));
      }
    });

    it('dispose gives the bytes back, even while a run that reads the tensor is pending', async () => {
      const dev = await createDevice('webgpu');
      const g = new Graph('double');
      const x = g.input('x', 'fp32', ['n']);
      g.output(g.op('Add', [x, x])[0]);
      const tensorsLive = () => dev.memory.live - dev.memory.liveByTag().compiled;
      const live0 = tensorsLive();
      const src = dev.tensor([1, 2, 3], [3]);
      const a = await dev.toDevice(src);
      expect(tensorsLive() - live0).toBe(3 * 4 * 2); // the host source and its device copy
      const pending = dev.run(g, [a], { keep: 'device' });
      a.dispose();
      const [b] = await pending;
      expect(Array.from(await b.values())).toEqual([2, 4, 6]);
      b.dispose();
      b.dispose();
      expect(tensorsLive() - live0).toBe(12);
      src.dispose();
      expect(tensorsLive()).toBe(live0);
      expect(a.disposed && b.disposed).toBe(true);
    });

    it('assign takes a device result as a parameter, which then feeds every step without an upload', async () => {
      const dev = await createDevice('webgpu');
      // p <- p - 0.5 * p, as an optimizer step would, with the parameter bound as an input rather than a constant.
      const g = new Graph('step');
      const p = g.input('p', 'bf16', [3]);
      g.output(g.op('Sub', [p, g.op('Mul', [p, g.constant('lr', dev.tensor([0.5], [1], 'bf16'))])[0]])[0]);
      const param = dev.tensor([1, -2, 3], [3], 'bf16', { tag: 'weights', label: 'w' });
      const tensorsLive = () => dev.memory.live - dev.memory.liveByTag().compiled;
      const live0 = tensorsLive();
      const s0 = dev.stats();
      for (let step = 0; step < 3; step++) {
        const v = param.version;
        param.assign((await dev.run(g, [param], { keep: 'device' }))[0]);
        expect([param.location, param.tag, param.label, param.bytes, param.version]).toEqual(['device', 'weights', 'w', 12, v + 1]);
        expect(tensorsLive() - live0).toBe(12 - 6); // bf16 [3] is 6 bytes on the host, 12 as fp32 on the GPU
      }
      expect(Array.from(await param.values())).toEqual([0.125, -0.25, 0.375]);
      const s1 = dev.stats();
      expect([s1.hostToDeviceBytes - s0.hostToDeviceBytes, s1.sessionsCreated - s0.sessionsCreated]).toEqual([12, 1]);
      param.assign(await param.toHost());
      expect([param.location, param.bytes, tensorsLive()]).toEqual(['host', 6, live0]);
    });

    it('a device tensor dropped without dispose gives its bytes back when it is collected', async () => {
      expect(global.gc, 'tests run with --expose-gc (vitest.config.ts)').toBeTypeOf('function');
      const dev = await createDevice('webgpu');
      const src = dev.tensor(Array.from({ length: 1024 }, (_, i) => i), [1024], 'fp32');
      const live0 = dev.memory.live;
      await (async () => {
        const dropped = await dev.toDevice(src, { tag: 'kv' });
        expect(dev.memory.liveByTag().kv).toBe(4096);
        expect((await dropped.values())[1023]).toBe(1023);
      })();
      for (let i = 0; i < 10 && dev.memory.live > live0; i++) {
        global.gc!();
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(dev.memory.live).toBe(live0);
      expect(Array.from((await (await dev.toDevice(src)).values()).slice(0, 3))).toEqual([0, 1, 2]);
    });

    it('keeps device tensors alive when the session that made them is released or invalidated', async () => {
      const dev = await createDevice('webgpu');
      const w = dev.tensor([2], [1], 'fp32', { tag: 'weights' });
      const g = new Graph('scale');
      const x = g.input('x', 'fp32', ['n']);
      g.output(g.op('Mul', [x, g.constant('w', w)])[0]);
      const [y] = await dev.run(g, [dev.tensor([1, 2, 3], [3])], { keep: 'device' });
      const [y2] = await dev.run(g, [y], { keep: 'device' });
      w.write([10]); // the session is stale: dropped now
      dev.releaseCompiled();
      expect(Array.from(await y.values())).toEqual([2, 4, 6]);
      const [y3] = await dev.run(g, [y2], { keep: 'device' });
      expect(Array.from(await y3.values())).toEqual([40, 80, 120]);
      dev.releaseCompiled();
      for (const t of [y, y2, y3]) t.dispose();
      const [z] = await dev.run(g, [dev.tensor([1], [1])]);
      expect(z.toArray()).toEqual([10]);
    });

    it('names the tensor in every misuse, and the device stays usable after each', async () => {
      const dev = await createDevice('webgpu', { name: 'gpu-a' });
      const other = await createDevice('webgpu', { name: 'gpu-b' });
      const g = new Graph('neg');
      const x = g.input('x', 'fp32', [2]);
      g.output(g.op('Sub', [x, g.op('Add', [x, x])[0]])[0]);
      const works = async () => expect(Array.from(await (await dev.run(g, [dev.tensor([1, 2], [2])], { keep: 'device' }))[0].values())).toEqual([-1, -2]);

      const t = (await dev.run(g, [dev.tensor([3, 4], [2])], { keep: 'device' }))[0];
      for (const read of [() => t.data, () => t.toFloat32(), () => t.toArray(), () => dev.copyFrom(t), () => t.write([1, 2])]) {
        expect(read).toThrow(DeviceError);
        expect(read).toThrow(new RegExp(`tensor #${t.id} fp32\\[2\\] on gpu-a \\(device memory\\)`));
      }
      expect(() => t.data).toThrow(/await t.read\(\)/);
      await works();

      const c = new Graph('const');
      const cx = c.input('x', 'fp32', [2]);
      c.output(c.op('Add', [cx, c.constant('bias', t)])[0]);
      await expect(dev.run(c, [dev.tensor([1, 2], [2])])).rejects.toThrow(new RegExp(`constant 'bias' \\(tensor #${t.id}.*is in device memory`));
      await works();

      await expect(other.run(g, [t])).rejects.toThrow(/input 'x' is on gpu-a, the graph runs on gpu-b/);
      await expect(other.toDevice(t)).rejects.toThrow(new RegExp(`toDevice: tensor #${t.id} .* is on gpu-a, not gpu-b`));
      await expect(dev.run(g, [t], { keep: ['device', 'host'] })).rejects.toThrow(ServelabError);
      await works();

      t.dispose();
      await expect(t.read()).rejects.toThrow(new RegExp(`tensor #${t.id} fp32\\[2\\] on gpu-a was disposed`));
      await expect(t.values()).rejects.toThrow(DeviceError);
      await expect(dev.run(g, [t])).rejects.toThrow(new RegExp(`input 'x' \\(tensor #${t.id} .*\\) was disposed`));
      await expect(dev.toDevice(t)).rejects.toThrow(/was disposed/);
      await works();

      // A device disposed under its tensors frees their GPU buffers; the tensors then say so instead of crashing.
      const u = (await other.run(g, [other.tensor([5, 6], [2])], { keep: 'device' }))[0];
      await other.dispose();
      await expect(u.read()).rejects.toThrow(/released/);
      u.dispose();
      await works();
    });

    it('says in its notes that outputs can stay on the GPU and that crossings are counted', async () => {
      const notes = (await createDevice('webgpu')).notes().join('\n');
      expect(notes).toMatch(/keep: 'device'/);
      expect(notes).toMatch(/hostToDeviceBytes/);
      expect(notes).not.toMatch(/tensors live in host memory and are copied to the GPU for each run/);
    });
  });
}
