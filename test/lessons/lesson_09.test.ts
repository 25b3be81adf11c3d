/** Lesson 09 (CPU offloading) end to end through the real kernel: every code cell in order, its measurements, and both exercises. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, solutionsOf } from './lesson_run.ts';

const SOLUTIONS = solutionsOf('lessons/09-offloading.solutions.md');

interface StepView {
  devPeak: number;
  devByTag: Record<string, number>;
  hostPeak: number;
  hostByTag: Record<string, number>;
  h2d: number;
  d2h: number;
  spill: { writtenBytes: number; readBytes: number } | null;
}

interface Measured {
  psi: number;
  budget: number;
  rotary: number;
  refusal: string;
  steps: Record<string, StepView>;
  between: Record<string, { dev: Record<string, number>; host: Record<string, number> }>;
  gradsDown: number;
  paramsUp: number;
  layerBytes: number;
  floor: number;
  fileBytes: number;
  sameWeights: Record<string, boolean>;
  losses: Record<string, number[]>;
  plans7: { offload: string; gpu: number; host: number; pcie: number }[];
  P7: number;
}

describe('lesson 09 (CPU offloading) through the kernel', () => {
  const { client, value, liveChart, runAll, exercise } = lessonRun('lessons/09-offloading.md');
  let m: Measured;
  const tensors = (peak: number, byTag: Record<string, number>) => peak - byTag.compiled;

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', async () => {
    await runAll();
    m = (await value(`({
      psi, budget: BUDGET, rotary, refusal, gradsDown, paramsUp, floor, fileBytes, sameWeights,
      layerBytes: pBytes.slice(1, 10).reduce((a, b) => a + b, 0),
      steps: Object.fromEntries(Object.entries(steps).map(([k, v]) => { const s = v[v.length - 1]; return [k, {
        devPeak: s.device.peak, devByTag: s.device.peakByTag, hostPeak: s.host.peak, hostByTag: s.host.peakByTag,
        h2d: s.h2dBytes, d2h: s.d2hBytes, spill: s.spill,
      }]; })),
      losses: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, v.map((s) => s.loss)])),
      between: heldAfter,
      plans7, P7,
    })`)) as Measured;
  }, 600_000);

  it('the model states do not fit the budget, and offload none refuses to start with an out-of-memory error', () => {
    expect(16 * m.psi).toBeGreaterThan(m.budget);
    expect(m.refusal).toMatch(/^out of memory on accelerator: requested .* \(model states kept on the device/);
    // Unbounded, the step peaks at 30 bytes per parameter: 2 + 12 resident, 2 of gradients, 14 of update outputs.
    const none = m.steps.none;
    expect(none.devByTag.optimizer).toBe(12 * m.psi);
    expect(tensors(none.devPeak, none.devByTag) - (30 * m.psi + m.rotary)).toBeGreaterThanOrEqual(0);
    expect(tensors(none.devPeak, none.devByTag) - (30 * m.psi + m.rotary)).toBeLessThan(1024); // the batch's scalars
    expect(none.h2d + none.d2h).toBe(0);
  });

  it('ZeRO-Offload: no optimizer state on the device, 12 bytes per parameter of it on the host, 2Ψ down and 2Ψ up', () => {
    const s = m.steps.optimizer;
    const b = m.between.optimizer;
    expect(s.devByTag.optimizer).toBe(0);
    expect(b.dev.optimizer).toBe(0);
    expect(b.dev.weights).toBe(2 * m.psi + m.rotary);
    expect(b.host.optimizer).toBe(12 * m.psi);
    expect(b.host.weights).toBe(2 * m.psi);
    expect(s.hostByTag.optimizer).toBe(12 * m.psi);
    expect(s.devPeak).toBeLessThanOrEqual(m.budget);
    expect(tensors(s.devPeak, s.devByTag)).toBeLessThan(tensors(m.steps.none.devPeak, m.steps.none.devByTag) / 5);
    // Gradients one segment at a time on the device; all of them (the tied embedding's twice) sent down.
    expect(s.devByTag.grads).toBeLessThanOrEqual(m.layerBytes);
    expect(s.d2h).toBe(m.gradsDown);
    expect(m.gradsDown).toBeGreaterThan(2 * m.psi);
    expect(s.h2d).toBe(2 * m.psi);
  });

  it('draws device and host memory live while ZeRO-Offload trains: the optimizer states only on the host', () => {
    const maxOf = (c: ReturnType<typeof liveChart>, tag: string) => Math.max(0, ...((c.traces.find((t) => t.name === tag)?.y ?? []) as number[]));
    const host = liveChart(/^Memory on the host by tag while ZeRO-Offload trains/);
    const dev = liveChart(/^Memory on the accelerator by tag while ZeRO-Offload trains/);
    expect(maxOf(host, 'optimizer')).toBe(12 * m.psi);
    expect(maxOf(host, 'grads')).toBeGreaterThan(0);
    expect(maxOf(dev, 'optimizer')).toBe(0);
    expect(maxOf(dev, 'weights')).toBeGreaterThanOrEqual(2 * m.psi);
    expect(dev.updates + host.updates).toBeGreaterThan(0);
    const stream = liveChart(/^Memory on the accelerator by tag with the parameters offloaded too/);
    expect(maxOf(stream, 'weights')).toBeLessThanOrEqual(m.layerBytes + m.rotary + 64 * 1024);
  });

  it('parameters offloaded too: one segment on the device, within the plan, streamed up twice', () => {
    const s = m.steps['optimizer+params'];
    expect(m.between['optimizer+params'].dev.weights).toBe(m.rotary);
    expect(m.between['optimizer+params'].dev.optimizer).toBe(0);
    expect(s.devByTag.weights).toBeLessThanOrEqual(m.layerBytes + m.rotary);
    expect(tensors(s.devPeak, s.devByTag)).toBeLessThanOrEqual(m.floor);
    expect(tensors(s.devPeak, s.devByTag)).toBeLessThan(tensors(m.steps.optimizer.devPeak, m.steps.optimizer.devByTag));
    expect(s.h2d).toBe(m.paramsUp);
    expect(s.d2h).toBe(m.gradsDown);
    expect(m.between['optimizer+params'].host.optimizer).toBe(12 * m.psi);
  });

  it('spill: 12 bytes per parameter written and read each step, none of it in host memory between steps', () => {
    const s = m.steps['+ spill'];
    expect(s.spill).toEqual({ writtenBytes: 12 * m.psi, readBytes: 12 * m.psi });
    expect(m.fileBytes).toBe(12 * m.psi);
    expect(m.between['+ spill'].host.optimizer).toBe(0);
    expect(s.hostByTag.optimizer).toBe(12 * m.psi);
    expect(m.steps.optimizer.spill).toBeNull();
  });

  it('every level of offloading trains the same weights and losses as none, bit for bit', () => {
    expect(m.sameWeights).toEqual({ none: true, optimizer: true, 'optimizer+params': true, '+ spill': true });
    for (const k of ['optimizer', 'optimizer+params', '+ spill']) expect(m.losses[k]).toEqual(m.losses.none);
    expect(m.losses.none[1]).not.toBe(m.losses.none[0]);
  });

  it("Llama-2 7B: 16Ψ fits no single GPU; the optimizer offloaded fits 80 GB; the parameters too fit 24 GB", () => {
    const by = Object.fromEntries(m.plans7.map((p) => [p.offload, p]));
    expect(m.P7).toBeGreaterThan(6.7e9);
    expect(m.P7).toBeLessThan(6.8e9);
    expect(by.none.gpu).toBe(16 * m.P7);
    expect(by.none.gpu).toBeGreaterThan(80e9);
    expect(by.optimizer.gpu).toBeLessThan(80e9);
    expect(by['optimizer+params'].gpu).toBeLessThan(24e9);
    expect(by.optimizer.pcie).toBe(4 * m.P7);
  });

  for (const id of ['placement', 'budget']) {
    it(`the ${id} exercise fails with its starter code and passes with the reference solution`, async () => {
      const { starter, solved } = await exercise(id, SOLUTIONS[id]);
      expect(starter.length).toBeGreaterThan(0);
      expect(starter[0].ok).toBe(false);
      expect(solved.length).toBeGreaterThanOrEqual(2);
      expect(solved.every((f) => f.ok), JSON.stringify(solved)).toBe(true);
    }, 120_000);
  }
});
