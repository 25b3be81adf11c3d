/**
 * Paged AdamW (QLoRA's paged optimizer, Dettmers et al. 2023) against a plain AdamW on a device without a budget: the
 * same float ops in the same order, so weights and states must agree bit for bit, however the params are grouped and
 * whichever states are paged. Budgets are exercised on the reference backend, whose tracker counts tensors only
 * (onnxruntime sessions on cpu are counted by the process's growth, which varies run to run); on cpu the paged states
 * go through onnxruntime's own session and must agree bit for bit as well.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createDevice, OutOfMemoryError, withSignal, type Device, type DType, type Tensor } from '../../../engine/index.ts';
import { AdamW, type AdamWOptions } from '../../../engine/train/adamw.ts';
import { rng, uniform } from '../../../bench/random.ts';

const SHAPES = [[64, 32], [32], [48, 16], [16, 8], [128]];
const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const N = SHAPES.reduce((n, s) => n + numel(s), 0);
const HYPER: AdamWOptions = { lr: 0.02, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 };
/** State bytes of param i: m and v, and an fp32 master for 16-bit params. */
const stateBytes = (i: number, dtype: DType) => (dtype === 'fp32' ? 8 : 12) * numel(SHAPES[i]);
/** Device bytes an update of param i takes when its state is paged in: the state and the run's outputs. */
const pagedNeed = (i: number, dtype: DType) => stateBytes(i, dtype) + (dtype === 'fp32' ? 12 : 14) * numel(SHAPES[i]);

function makeParams(dev: Device, dtype: DType): Tensor[] {
  return SHAPES.map((s, i) => dev.tensor(uniform(rng(1 + i), numel(s)), s, dtype, { tag: 'weights', label: `w${i}` }));
}

function makeGrads(dev: Device, step: number, dtype: DType): Tensor[] {
  return SHAPES.map((s, i) => dev.tensor(uniform(rng(100 * step + i), numel(s), -2, 2), s, dtype, { tag: 'grads' }));
}

/** The raw bytes of a tensor (fp16/bf16 as their bit patterns), to compare bit for bit. */
const bits = (t: Tensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).toString('base64');

/** Every param and state of an optimizer, as bytes. */
function snapshot(params: readonly Tensor[], opt: AdamW): string[] {
  return params.flatMap((p, i) => {
    const s = opt.state(i);
    return [bits(p), bits(s.m), bits(s.v), s.master ? bits(s.master) : '-'];
  });
}

/** Steps `from` to `to` with seeded gradients; returns the tracker's peak over the steps' updates. */
async function steps(dev: Device, opt: AdamW, dtype: DType, from: number, to: number): Promise<number> {
  let peak = 0;
  for (let s = from; s < to; s++) {
    const g = makeGrads(dev, s, dtype);
    dev.memory.resetPeak();
    await opt.step(g);
    peak = Math.max(peak, dev.memory.peak);
    for (const t of g) t.dispose();
  }
  return peak;
}

/** A plain AdamW's params and states after `n` steps, on a device without a budget. */
async function plain(kind: 'reference' | 'cpu', dtype: DType, n: number): Promise<string[]> {
  const dev = await createDevice(kind);
  try {
    const params = makeParams(dev, dtype);
    const opt = new AdamW(dev, params, HYPER);
    await steps(dev, opt, dtype, 0, n);
    return snapshot(params, opt);
  } finally {
    await dev.dispose();
  }
}

/**
 * A reference device whose budget holds the params, one step's gradients and scalars, and `room` bytes more; a paged
 * AdamW whose placement keeps `reserve` of those free.
 */
async function paged(dtype: DType, room: number, reserve: number) {
  const dev = await createDevice('reference');
  devices.push(dev);
  const params = makeParams(dev, dtype);
  const weights = dev.memory.live;
  const budget = 2 * weights + 12 + room;
  dev.memory.setBudget(budget);
  const opt = new AdamW(dev, params, { ...HYPER, paged: true, reserveBytes: weights + 12 + reserve });
  const onHost = SHAPES.map((_, i) => opt.state(i).m.device !== dev);
  return { dev, params, opt, budget, onHost };
}

const devices: Device[] = [];
afterEach(async () => {
  for (const d of devices.splice(0)) await d.dispose();
});

describe('paged AdamW', () => {
  for (const dtype of ['fp32', 'bf16'] as const) {
    it(`5 steps with states paged and params grouped by the budget are bitwise those of AdamW (${dtype})`, async () => {
      const want = await plain('reference', dtype, 5);
      // Room for the largest param's paged update, plus a little: w0's state (the largest) goes to host memory and the
      // rest stay resident; w0 and w1 are updated by one run, w2..w4 by another.
      const room = pagedNeed(0, dtype) + 13000;
      const { dev, params, opt, budget, onHost } = await paged(dtype, room, pagedNeed(0, dtype));
      expect(onHost).toEqual([true, false, false, false, false]);
      expect(opt.hostBytes).toBe(stateBytes(0, dtype));
      expect(opt.bytes()).toBe(SHAPES.reduce((n, _, i) => n + (onHost[i] ? 0 : stateBytes(i, dtype)), 0));
      const peak = await steps(dev, opt, dtype, 0, 5);
      expect(snapshot(params, opt)).toEqual(want);
      const { lastStep, total } = opt.paging()!;
      // Exactly w0's state in and out each step, one transfer per tensor (m, v, and the master of a 16-bit param).
      const pages = dtype === 'fp32' ? 2 : 3;
      expect(lastStep).toMatchObject({ pagedInBytes: stateBytes(0, dtype), pagedOutBytes: stateBytes(0, dtype), pagesIn: pages, pagesOut: pages, groups: 2, evicted: 0 });
      expect(total).toMatchObject({ pagedInBytes: 5 * stateBytes(0, dtype), pagedOutBytes: 5 * stateBytes(0, dtype), pagesIn: 5 * pages, groups: 10 });
      expect(total.pagingMs).toBeGreaterThan(0);
      expect(total.updateMs).toBeGreaterThan(0);
      expect(peak).toBeLessThanOrEqual(budget);
      expect(opt.state(0).m.device).not.toBe(dev);
      expect(opt.t).toBe(5);
    });
  }

  it('every state paged and one param per run: the tracker never passes the budget, and the result is still AdamW', async () => {
    const want = await plain('reference', 'fp32', 5);
    // Room for w0's paged update only: placement keeps all of it free, so no state is resident.
    const { dev, params, opt, budget, onHost } = await paged('fp32', pagedNeed(0, 'fp32'), pagedNeed(0, 'fp32'));
    expect(onHost.every(Boolean)).toBe(true);
    expect(opt.bytes()).toBe(0);
    expect(opt.hostBytes).toBe(8 * N);
    const peak = await steps(dev, opt, 'fp32', 0, 5);
    expect(peak).toBeLessThanOrEqual(budget);
    // The tightest it can be: w0's paged update is what the room was sized to.
    expect(peak).toBe(budget);
    expect(snapshot(params, opt)).toEqual(want);
    const { lastStep } = opt.paging()!;
    expect(lastStep.pagedInBytes).toBe(8 * N);
    expect(lastStep.pagedOutBytes).toBe(8 * N);
    expect(lastStep.pagesIn).toBe(2 * SHAPES.length);
    expect(lastStep.groups).toBeGreaterThanOrEqual(2);
    // Between steps the device holds no optimizer state at all.
    expect(dev.memory.liveByTag().optimizer).toBe(0);
  });

  it('when everything fits it is AdamW: one run per step, nothing paged, the same session', async () => {
    const dev = await createDevice('cpu');
    devices.push(dev);
    const params = makeParams(dev, 'fp32');
    const opt = new AdamW(dev, params, { ...HYPER, paged: true });
    expect(opt.hostBytes).toBe(0);
    expect(opt.bytes()).toBe(8 * N);
    await steps(dev, opt, 'fp32', 0, 1);
    const before = dev.stats();
    await steps(dev, opt, 'fp32', 1, 5);
    expect(dev.stats().runs - before.runs).toBe(4);
    expect(dev.stats().sessionsCreated).toBe(before.sessionsCreated);
    expect(opt.paging()!.total).toMatchObject({ pagedInBytes: 0, pagedOutBytes: 0, pagesIn: 0, pagesOut: 0, groups: 5 });
    expect(snapshot(params, opt)).toEqual(await plain('cpu', 'fp32', 5));
  });

  it('on cpu, states paged from host memory through onnxruntime are bitwise those of AdamW (fp32 and bf16)', async () => {
    for (const dtype of ['fp32', 'bf16'] as const) {
      const dev = await createDevice('cpu');
      devices.push(dev);
      const params = makeParams(dev, dtype);
      // A budget that leaves no room for states at placement (reserve) sends them all to host memory.
      dev.memory.setBudget(2 ** 30);
      const opt = new AdamW(dev, params, { ...HYPER, paged: true, reserveBytes: 2 ** 30 });
      expect(opt.bytes()).toBe(0);
      await steps(dev, opt, dtype, 0, 5);
      expect(snapshot(params, opt), dtype).toEqual(await plain('cpu', dtype, 5));
      expect(opt.paging()!.total.pagedInBytes).toBe(5 * SHAPES.reduce((n, _, i) => n + stateBytes(i, dtype), 0));
    }
  });

  it('a budget lowered after placement evicts resident states to host memory; the result is still AdamW', async () => {
    const want = await plain('reference', 'fp32', 5);
    const { dev, params, opt, onHost } = await paged('fp32', 20 * N, 0);
    expect(onHost.some(Boolean)).toBe(false);
    await steps(dev, opt, 'fp32', 0, 2);
    const budget = dev.memory.live + 4 * N + 12 + pagedNeed(0, 'fp32') - 8 * N; // grads + w0's paged update, less the states
    dev.memory.setBudget(budget);
    expect(await steps(dev, opt, 'fp32', 2, 5)).toBeLessThanOrEqual(budget);
    expect(snapshot(params, opt)).toEqual(want);
    expect(opt.paging()!.total.evicted).toBeGreaterThan(0);
    expect(opt.hostBytes).toBeGreaterThan(0);
    expect(opt.hostBytes + opt.bytes()).toBe(8 * N);
  });

  it('a param whose state and update cannot fit even alone: OutOfMemoryError naming it, nothing changed', async () => {
    // Room for w2's paged update, not w0's.
    const { dev, params, opt } = await paged('fp32', pagedNeed(2, 'fp32'), 0);
    const before = snapshot(params, opt);
    const g = makeGrads(dev, 0, 'fp32');
    const live = dev.memory.live;
    const err = await opt.step(g).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect((err as OutOfMemoryError).message).toMatch(/param 0 'w0' fp32\[64, 32\]/);
    expect((err as OutOfMemoryError).requestedBytes).toBe(pagedNeed(0, 'fp32'));
    expect(snapshot(params, opt)).toEqual(before);
    expect(opt.t).toBe(0);
    expect(dev.memory.live).toBe(live);
    expect(opt.paging()!.lastStep.groups).toBe(0);
  });

  it('an abort between two groups undoes the first: params and states as before the step, then it resumes exactly', async () => {
    const want = await plain('reference', 'fp32', 3);
    const { dev, params, opt } = await paged('fp32', pagedNeed(0, 'fp32') + 13000, pagedNeed(0, 'fp32'));
    await steps(dev, opt, 'fp32', 0, 2);
    const before = snapshot(params, opt);
    const live = dev.memory.live;
    const hostLive = opt.hostBytes;
    const ctl = new AbortController();
    const run = dev.run.bind(dev);
    let runs = 0;
    // The first group's run completes and is committed; the abort lands before the second group's run.
    dev.run = async (...args: Parameters<Device['run']>) => {
      const out = await run(...args);
      if (++runs === 1) ctl.abort();
      return out;
    };
    const g = makeGrads(dev, 2, 'fp32');
    await expect(withSignal(ctl.signal, () => opt.step(g))).rejects.toMatchObject({ name: 'AbortError' });
    dev.run = run;
    expect(runs).toBe(1);
    expect(snapshot(params, opt)).toEqual(before);
    expect(opt.t).toBe(2);
    expect(dev.memory.live).toBe(live + g.reduce((n, t) => n + t.bytes, 0));
    for (const t of g) t.dispose();
    expect(dev.memory.live).toBe(live);
    expect(opt.hostBytes).toBe(hostLive);
    await steps(dev, opt, 'fp32', 2, 3);
    expect(snapshot(params, opt)).toEqual(want);
  });

  it('a checkpoint through state(i) works for paged states: 2 steps, save, a new optimizer restores, 3 more = 5 steps', async () => {
    const want = await plain('reference', 'bf16', 5);
    const a = await paged('bf16', pagedNeed(0, 'bf16') + 12000, pagedNeed(0, 'bf16'));
    await steps(a.dev, a.opt, 'bf16', 0, 2);
    const saved = SHAPES.map((_, i) => {
      const s = a.opt.state(i);
      return { m: s.m.toFloat32(), v: s.v.toFloat32(), master: s.master!.toFloat32() };
    });
    const paramsSaved = a.params.map((p) => p.toFloat32());
    const b = await paged('bf16', pagedNeed(0, 'bf16') + 12000, pagedNeed(0, 'bf16'));
    expect(b.onHost).toEqual(a.onHost);
    b.params.forEach((p, i) => {
      p.write(paramsSaved[i]);
      const s = b.opt.state(i);
      s.m.write(saved[i].m);
      s.v.write(saved[i].v);
      s.master!.write(saved[i].master);
    });
    b.opt.t = a.opt.t;
    await steps(b.dev, b.opt, 'bf16', 2, 5);
    expect(snapshot(b.params, b.opt)).toEqual(want);
  });

  it('refuses reserveBytes without paging, and a negative reserve', async () => {
    const dev = await createDevice('reference');
    devices.push(dev);
    const p = dev.tensor([1, 2], [2]);
    expect(() => new AdamW(dev, [p], { reserveBytes: 10 })).toThrow(/reserveBytes applies to paged states only/);
    expect(() => new AdamW(dev, [p], { paged: true, reserveBytes: -1 })).toThrow(/reserveBytes must be a non-negative/);
    expect(new AdamW(dev, [p]).paging()).toBeNull();
  });
});
