/**
 * CPU offloading (ZeRO-Offload, Ren et al. 2021; ZeRO-Infinity's NVMe tier) against the same segmented training with
 * everything on the device: the built-in model in mixed precision (bf16 weights and gradients, fp32 master, m, v),
 * two AdamW steps on 2 x 32 token batches. Both devices are cpu devices (the same kernels), so the weights and the
 * optimizer states must agree bit for bit. The accelerator's budget (40 MiB) is below the model's training state
 * (16 bytes/param, 49 MiB), which is why 'none' cannot even be placed under it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OffloadTrainer, type OffloadStep } from '../../../engine/parallel/offload.ts';
import { paramBytes, SegmentOutOfMemoryError, type OffloadMode } from '../../../engine/parallel/offload_plan.ts';
import { OutOfMemoryError, ServelabError } from '../../../engine/errors.ts';
import { BatchSampler, mobyDick, type Batch } from '../../../engine/train/corpus.ts';
import { segmentSpecs } from '../../../engine/train/segments.ts';

const MiB = 2 ** 20;
const BUDGET = 40 * MiB;
const STEPS = 2;
const corpus = mobyDick();
const sampler = new BatchSampler(corpus.train, { batch: 2, context: 32, seed: 7 });
const BATCHES: Batch[] = Array.from({ length: STEPS }, () => sampler.next());

interface Run {
  trainer: OffloadTrainer;
  steps: OffloadStep[];
}
const dir = mkdtempSync(join(tmpdir(), 'offload-'));
const runs = new Map<string, Run>();
const KINDS: [string, OffloadMode, number | null, string?][] = [
  ['none', 'none', null],
  ['optimizer', 'optimizer', BUDGET],
  ['optimizer+params', 'optimizer+params', BUDGET],
  ['spill', 'optimizer+params', BUDGET, join(dir, 'states')],
];

beforeAll(async () => {
  for (const [name, offload, budget, spill] of KINDS) {
    const trainer = await OffloadTrainer.create({ offload, budget, ...(spill ? { spill } : {}) });
    const steps: OffloadStep[] = [];
    for (const b of BATCHES) steps.push(await trainer.step(b));
    runs.set(name, { trainer, steps });
  }
}, 60_000);

afterAll(async () => {
  for (const r of runs.values()) await r.trainer.close();
  rmSync(dir, { recursive: true, force: true });
});

const run = (name: string) => runs.get(name)!;
/** The first index where a and b differ bit for bit (NaNs included), -1 when none; a deep toEqual is too slow here. */
function firstDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}
const tensorPeak = (s: OffloadStep['device']) => s.peakByTag.weights + s.peakByTag.grads + s.peakByTag.optimizer + s.peakByTag.activations;

describe('OffloadTrainer', () => {
  it('weights and optimizer states after 2 steps are bit-identical to training with everything on the device', async () => {
    const ref = await run('none').trainer.weights();
    const refState = await run('none').trainer.optimizerState();
    for (const name of ['optimizer', 'optimizer+params', 'spill']) {
      const r = run(name);
      expect(r.steps.map((s) => s.loss)).toEqual(run('none').steps.map((s) => s.loss));
      const w = await r.trainer.weights();
      w.forEach((x, i) => expect(firstDiff(x, ref[i]), `${name} param ${i}`).toBe(-1));
      const st = await r.trainer.optimizerState();
      st.forEach((s, i) => {
        for (const k of ['master', 'm', 'v'] as const) expect(firstDiff(s[k]!, refState[i][k]!), `${name} param ${i} ${k}`).toBe(-1);
      });
    }
    // The steps changed the weights.
    expect(run('none').steps[1].loss).not.toBe(run('none').steps[0].loss);
  });

  it('the device peak stays under the budget, below the resident run, and never holds optimizer state', () => {
    const none = run('none').steps[1].device;
    for (const name of ['optimizer', 'optimizer+params', 'spill']) {
      const d = run(name).steps[1].device;
      expect(d.peak).toBeLessThanOrEqual(BUDGET);
      expect(d.peakByTag.optimizer).toBe(0);
      expect(tensorPeak(d)).toBeLessThan(tensorPeak(none) / 5);
      expect(d.peak).toBeLessThan(none.peak);
    }
    expect(none.peakByTag.optimizer).toBeGreaterThan(BUDGET / 2);
    // Streamed params: one decoder layer's bf16 weights at a time.
    const layer = paramBytes(run('none').trainer.model.cfg, 'bf16').slice(1, 10).reduce((a, b) => a + b, 0);
    expect(run('optimizer+params').steps[1].device.peakByTag.weights).toBeLessThanOrEqual(layer + 64 * 1024);
  });

  it('the host holds 12 bytes per param of optimizer state (bf16); spilled, only during the update', () => {
    const cfg = run('none').trainer.model.cfg;
    const psi = paramBytes(cfg, 'bf16').reduce((a, b) => a + b, 0) / 2;
    for (const name of ['optimizer', 'optimizer+params']) {
      const t = run(name).trainer;
      expect(t.host.memory.liveByTag().optimizer).toBe(12 * psi);
      expect(t.host.memory.liveByTag().weights).toBe(2 * psi);
      expect(t.dev.memory.liveByTag().optimizer).toBe(0);
    }
    const spill = run('spill');
    expect(spill.trainer.host.memory.liveByTag().optimizer).toBe(0);
    for (const s of spill.steps) {
      expect(s.host.peakByTag.optimizer).toBe(12 * psi);
      expect(s.spill).toEqual({ writtenBytes: 12 * psi, readBytes: 12 * psi });
    }
    expect(run('none').steps[0].spill).toBeNull();
  });

  it('counts the bytes offloading moves: gradients down, streamed params (or new weights) up', () => {
    const cfg = run('none').trainer.model.cfg;
    const bytes = paramBytes(cfg, 'bf16');
    const segs = segmentSpecs(cfg);
    const sum = (ix: number[]) => ix.reduce((s, i) => s + bytes[i], 0);
    const grads = sum(segs.flatMap((s) => s.params)); // the tied embedding's two gradients both come down
    const forward = sum(segs.slice(0, -1).flatMap((s) => s.params)); // the head runs once, in the backward
    const all = bytes.reduce((a, b) => a + b, 0);
    for (const s of run('optimizer+params').steps) expect([s.h2dBytes, s.d2hBytes]).toEqual([forward + grads, grads]);
    for (const s of run('optimizer').steps) expect([s.h2dBytes, s.d2hBytes]).toEqual([all, grads]);
    for (const s of run('none').steps) expect([s.h2dBytes, s.d2hBytes]).toEqual([0, 0]);
  });

  it('fp32: bit-identical weights too; the host holds m and v, 8 bytes per param (fp32 params need no master)', async () => {
    const out: Float32Array[][] = [];
    for (const offload of ['none', 'optimizer+params'] as const) {
      const t = await OffloadTrainer.create({ offload, precision: 'fp32', budget: offload === 'none' ? null : BUDGET });
      try {
        for (const b of BATCHES) await t.step(b);
        out.push(await t.weights());
        const psi = out[0].reduce((n, w) => n + w.length, 0);
        if (offload !== 'none') expect(t.host.memory.liveByTag().optimizer).toBe(8 * psi);
      } finally {
        await t.close();
      }
    }
    out[1].forEach((x, i) => expect(firstDiff(x, out[0][i]), `param ${i}`).toBe(-1));
  });

  it("the model's training state does not fit the budget: offload 'none' refuses it before placing anything", async () => {
    const e = await OffloadTrainer.create({ offload: 'none', budget: BUDGET }).catch((x) => x);
    expect(e).toBeInstanceOf(OutOfMemoryError);
    expect(e.message).toMatch(/model states kept on the device/);
  });

  it('a budget below one segment: SegmentOutOfMemoryError naming the segment and the bytes', async () => {
    const e = await OffloadTrainer.create({ offload: 'optimizer+params', budget: MiB }).catch((x) => x);
    expect(e).toBeInstanceOf(SegmentOutOfMemoryError);
    expect(e.need.segment).toBe('layer 0');
    expect(e.need.params).toBe(paramBytes(run('none').trainer.model.cfg, 'bf16').slice(1, 10).reduce((a, b) => a + b, 0));
    expect(e.message).toMatch(/segment 'layer 0' \(forward\) needs at least 1\.50 MiB \(\d+ B\) \(params 1\.50 MiB/);
  });

  it('a batch too large for the budget fails before the step changes anything; the trainer goes on', async () => {
    const r = run('optimizer+params');
    const before = await r.trainer.weights();
    const live = r.trainer.dev.memory.live;
    const big: Batch = { tokens: new Int32Array(64 * 128).fill(65), labels: new Int32Array(64 * 128).fill(66), batch: 64, context: 128 };
    const e = await r.trainer.step(big).catch((x) => x);
    expect(e).toBeInstanceOf(SegmentOutOfMemoryError);
    expect(e.message).toMatch(/segment '(embed|layer \d|head)' \((forward|backward)\) needs at least/);
    expect(r.trainer.dev.memory.live).toBe(live);
    (await r.trainer.weights()).forEach((x, i) => expect(firstDiff(x, before[i])).toBe(-1));
    const s = await r.trainer.step(BATCHES[0]);
    expect(Number.isFinite(s.loss)).toBe(true);
    expect(s.step).toBe(STEPS + 1);
  });

  it('a spill directory that cannot be written is a clear error', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const e = await OffloadTrainer.create({ offload: 'optimizer', budget: BUDGET, spill: join(file, 'states') }).catch((x) => x);
    expect(e).toBeInstanceOf(ServelabError);
    expect(e.message).toMatch(/cannot write optimizer states to the spill directory '.*a-file\/states'/);
    await expect(OffloadTrainer.create({ offload: 'none', spill: dir })).rejects.toThrow(/spill .* needs offload 'optimizer' or 'optimizer\+params'/);
  });
});
