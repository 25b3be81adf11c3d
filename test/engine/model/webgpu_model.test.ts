/**
 * The built-in model on onnxruntime's WebGPU provider (Mesa's lavapipe in CI, where a missing adapter fails instead
 * of skipping): the same logits as on the cpu (fp32 sums in another order: 1e-4 absolute on logits of size ~10), the
 * same greedy text, and a KV cache that stays in GPU memory between decode steps: after the prefill, a decode step
 * moves only its token, position and length in and its logits out, never the cache.
 */
import { describe, expect, it } from 'vitest';
import { BUILTIN_DIR, createDevice, generate, loadModel, ServingEngine, webgpuUnavailable } from '../../../engine/index.ts';

const why = await webgpuUnavailable();

if (why !== null && process.env.CI === 'true') {
  describe('the model on webgpu', () => {
    it('has an adapter in CI', () => {
      throw new Error(`CI=true but WebGPU is unavailable: ${why}`);
    });
  });
} else {
  describe.skipIf(why !== null)(`the built-in model on webgpu${why ? ` (skipped: ${why.slice(0, 120)})` : ''}`, () => {
    it('matches the cpu, generates the same text, and keeps its cache on the GPU', async () => {
      const cpu = await createDevice('cpu');
      const gpu = await createDevice('webgpu');
      const a = await loadModel(BUILTIN_DIR, { device: cpu });
      const b = await loadModel(BUILTIN_DIR, { device: gpu });
      const prompts = [[67, 97, 108, 108, 32, 109, 101], [84, 104, 101]];
      const ca = await a.createCache(2, 64);
      const cb = await b.createCache(2, 64);
      const pa = (await a.prefill(prompts, ca)).logits.toFloat32();
      const pb = (await b.prefill(prompts, cb)).logits.toFloat32();
      pa.forEach((v, i) => expect(Math.abs(v - pb[i]), `prefill logit ${i}`).toBeLessThan(1e-4));
      expect(cb.tensors().every((t) => t.location === 'device')).toBe(true);
      const before = gpu.stats();
      for (let step = 0; step < 4; step++) {
        const da = (await a.decode([32, 101], ca)).logits.toFloat32();
        const db = await (await b.decode([32, 101], cb)).logits.values();
        da.forEach((v, i) => expect(Math.abs(v - db[i]), `step ${step} logit ${i}`).toBeLessThan(1e-4));
      }
      const after = gpu.stats();
      // Per step: tokens, positions and lengths in (2 x 4 bytes each); logits out (2 x 258 x 4): far below the cache.
      expect(after.hostToDeviceBytes - before.hostToDeviceBytes).toBeLessThan(4 * 64);
      expect(cb.bytes).toBe(2 * 4 * 2 * 2 * 64 * 64 * 4);
      const ga = await generate(a, 'Call me Ishmael.', { maxTokens: 24 });
      const gb = await generate(b, 'Call me Ishmael.', { maxTokens: 24 });
      expect(gb.text).toBe(ga.text);
      for (const x of [a, b, ca, cb]) x.dispose();
      await gpu.dispose();
      await cpu.dispose();
    }, 120_000);

    it('a paged cache (block size 16) keeps its pool on the GPU too: the cpu\'s logits, prefix hits and copy-on-write included', async () => {
      const cpu = await createDevice('cpu');
      const gpu = await createDevice('webgpu');
      const a = await loadModel(BUILTIN_DIR, { device: cpu });
      const b = await loadModel(BUILTIN_DIR, { device: gpu });
      const ca = await a.createCache({ layout: 'paged', numSlots: 256 });
      const cb = await b.createCache({ layout: 'paged', numSlots: 256 });
      const shared = Array.from('It is a way I have of driving off the spleen', (c) => c.charCodeAt(0));
      const steps = [
        [{ seq: 0, tokens: shared.slice(0, 20) }],
        // The second prompt hits the first's full block; the first decodes while it arrives.
        [{ seq: 0, tokens: [32] }, { seq: 1, tokens: shared }],
        [{ seq: 0, tokens: [101] }, { seq: 1, tokens: [46] }],
      ];
      const before = gpu.stats();
      for (const [i, batch] of steps.entries()) {
        const la = await a.forward(ca, batch);
        const lb = await b.forward(cb, batch);
        expect(lb.cached).toEqual(la.cached);
        const [va, vb] = [la.logits.toFloat32(), await lb.logits.values()];
        va.forEach((v, j) => expect(Math.abs(v - vb[j]), `step ${i} logit ${j}`).toBeLessThan(1e-4));
        if (i === 1) expect(lb.cached).toEqual([0, 16]);
        if (i === 1) {
          ca.fork(1, 2);
          cb.fork(1, 2);
        }
      }
      // Copy-on-write on the GPU: the fork and its parent write different tokens into their shared last block.
      const fa = await a.forward(ca, [{ seq: 1, tokens: [33] }, { seq: 2, tokens: [63] }]);
      const fb = await b.forward(cb, [{ seq: 1, tokens: [33] }, { seq: 2, tokens: [63] }]);
      const [va, vb] = [fa.logits.toFloat32(), await fb.logits.values()];
      va.forEach((v, j) => expect(Math.abs(v - vb[j]), `fork logit ${j}`).toBeLessThan(1e-4));
      expect(cb.pool.tensors().every((t) => t.location === 'device')).toBe(true);
      // Steps move tokens, positions, lengths and slot tables in, logits out: never the pool (4 x 2 x 2 x 64 x 4 bytes per slot).
      expect(gpu.stats().hostToDeviceBytes - before.hostToDeviceBytes).toBeLessThan(4096);
      expect(cb.pool.bytes).toBe(256 * 2 * 4 * 2 * 64 * 4);
      for (const x of [a, b, ca, cb]) x.dispose();
      await gpu.dispose();
      await cpu.dispose();
    }, 120_000);

    it('serves a trace on the GPU with preemption by swapping: the tokens of the cpu, the pool read back to the host and written again', async () => {
      const cpu = await createDevice('cpu');
      const gpu = await createDevice('webgpu');
      const a = await loadModel(BUILTIN_DIR, { device: cpu });
      const b = await loadModel(BUILTIN_DIR, { device: gpu });
      const text = Array.from('Call me Ishmael. Some years ago, never mind how long', (c) => c.charCodeAt(0));
      const trace = [0, 1, 2].map((i) => ({ id: `r${i}`, arrivalMs: 0, prompt: text.slice(i, 14 + i), maxTokens: 12 }));
      const opts = { numSlots: 48, blockSize: 8, preemption: 'swap' as const };
      const [ea, eb] = [await ServingEngine.create(a, opts), await ServingEngine.create(b, opts)];
      const [ra, rb] = [await ea.replay(trace), await eb.replay(trace)];
      expect(rb.records.map((r) => r.output)).toEqual(ra.records.map((r) => r.output));
      expect(rb.metrics.swap.outBytes).toBeGreaterThan(0);
      expect(rb.metrics.swap.inBytes).toBe(rb.metrics.swap.outBytes);
      for (const x of [ea, eb, a, b]) x.dispose();
      await gpu.dispose();
      await cpu.dispose();
    }, 120_000);
  });
}
