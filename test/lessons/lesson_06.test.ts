/** Lesson 06 end to end through the real kernel: every code cell in order, no errors, its measurements, and the exercise's feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, solutionsOf, feedbackOf } from './lesson_run.ts';

/** The reference solutions, as the solutions file holds them. */
const SOLUTIONS = solutionsOf('lessons/06-lora.solutions.md');

// The built-in model (models/builtin/config.json): 4 layers, width 256, 4 query heads and 2 key/value heads of 64, MLP 768.
const [L, H, Q, KV, I] = [4, 256, 4 * 64, 2 * 64, 768];
/** r (in + out) summed over every layer's q and v: the lesson's adapters. */
const T_QV = L * 8 * (H + Q + (H + KV));

type ByTag = Record<'weights' | 'grads' | 'optimizer', number>;

describe('lesson 06 (LoRA) through the kernel', () => {
  const { cells, client, run, value, liveChart, runAll, exercise } = lessonRun('lessons/06-lora.md');
  let P = 0;

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', async () => {
    await runAll();
    P = (await value('P')) as number;
    expect(P).toBe(3_214_080);
  }, 300_000);

  it('full fine-tuning keeps 4 + 4 + 8 bytes per parameter, as the tracker counts them', async () => {
    const rows = (await value('perTag')) as { tag: string; measured: number; formula: number }[];
    expect(rows.map((r) => r.tag)).toEqual(['weights', 'grads', 'optimizer']);
    for (const r of rows) expect(r.measured, r.tag).toBe(r.formula);
    expect(rows[1].measured).toBe(4 * P);
    expect(rows[2].measured).toBe(8 * P);
    // The weights: 4P and the rotary tables, cos and sin [256 positions, 32] in fp32.
    expect(rows[0].measured).toBe(4 * P + 2 * 256 * 32 * 4);
  });

  it('counts the trainable parameters of r = 8 on q and v exactly, and B = 0 leaves the held-out loss as it was', async () => {
    expect(T_QV).toBe(28_672);
    expect(await value('T')).toBe(T_QV);
    const [baseNats, freshNats, agreement, bMax] = (await value('[baseScore.nats, freshScore.nats, freshScore.agreement, bMax]')) as number[];
    expect(freshNats).toBe(baseNats);
    expect(agreement).toBe(1);
    expect(bMax).toBe(0);
  });

  it('trains LoRA with gradients and optimizer state for the adapters alone, and forgets less than full fine-tuning', async () => {
    const [lora, full] = (await value('[loraRun.peakByTag, fullRun.peakByTag]')) as ByTag[];
    expect(await value('loraRun.trainableParams')).toBe(T_QV);
    expect(lora.grads).toBe(4 * T_QV);
    expect(lora.optimizer).toBe(8 * T_QV);
    expect(lora.weights).toBe(4 * P + 4 * T_QV + 2 * 256 * 32 * 4);
    expect([full.grads, full.optimizer]).toEqual([4 * P, 8 * P]);
    const held = (await value('[loraRun.heldOut, fullRun.heldOut]')) as Record<string, { before: number; after: number }>[];
    // Fresh adapters add zeros: both runs start from the base's held-out losses, bit for bit.
    for (const text of ['Moby-Dick', 'State of the Union']) expect(held[0][text].before).toBe(held[1][text].before);
    const [learnLora, learnFull, forgetLora, forgetFull] = (await value('[learnLora, learnFull, forgetLora, forgetFull]')) as number[];
    expect(learnFull).toBeLessThan(0);
    expect(learnLora).toBeLessThan(0);
    expect(forgetFull).toBeGreaterThan(forgetLora);
    expect(forgetFull).toBeGreaterThan(0.02);
    const chart = liveChart(/^Training loss on the State of the Union/);
    expect(chart.traces).toHaveLength(2);
    for (const t of chart.traces) expect(t.x).toHaveLength(12);
  });

  it('finds most of a full fine-tuning update in a few directions, and allocates 4 bytes per adapter parameter at every rank', async () => {
    const [top8, noise8] = (await value('[top8, noiseShares[7]]')) as [number[], number];
    expect(top8).toHaveLength(8);
    for (const s of top8) {
      expect(s).toBeGreaterThan(2 * noise8);
      expect(s).toBeLessThanOrEqual(1);
    }
    const rows = (await value('rankRows')) as { r: number; targets: string; 'trainable parameters': number; 'adapter bytes (tracker)': number }[];
    for (const row of rows) {
      const all = row.targets === 'all seven';
      // q, o: H <-> Q; k, v: H -> KV; gate, up: H -> I; down: I -> H.
      const perLayer = all ? 2 * (H + Q) + 2 * (H + KV) + 3 * (H + I) : H + Q + (H + KV);
      expect(row['trainable parameters'], `r ${row.r} ${row.targets}`).toBe(L * row.r * perLayer);
      expect(row['adapter bytes (tracker)']).toBe(4 * row['trainable parameters']);
    }
  });

  it('merged and unmerged adapters give the same logits within the stated tolerance, and unmerge gives the base back', async () => {
    const [mergeDiff, tol, effect, largest] = (await value('[mergeDiff, LOGIT_TOL, adapterEffect, largestLogit]')) as number[];
    expect(tol).toBeCloseTo(1e-5 * largest, 12);
    expect(mergeDiff).toBeLessThanOrEqual(tol);
    expect(effect).toBeGreaterThan(1000 * mergeDiff);
    const [worst, overBound, elsewhere] = (await value('[worstUnmerge, worstOverBound, changedElsewhere]')) as number[];
    expect(overBound).toBeLessThanOrEqual(1);
    expect(worst).toBeLessThan(1e-6);
    expect(elsewhere).toBe(0);
    const times = (await value('Object.values(decodeTimes).map((t) => t.medianMs)')) as number[];
    expect(times).toHaveLength(3);
    for (const t of times) expect(t).toBeGreaterThan(0);
  });

  it('saves the adapter as PEFT does, far smaller than the model, and loads it back identically', async () => {
    const files = (await value('files')) as { folder: string; file: string; bytes: number }[];
    expect(files.filter((f) => f.folder === 'adapter').map((f) => f.file).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const adapterBytes = (await value('adapterBytes')) as number;
    const fp32 = files.find((f) => f.folder === 'full-fp32' && f.file === 'model.safetensors')!.bytes;
    expect(adapterBytes).toBeGreaterThan(4 * T_QV);
    expect(fp32).toBeGreaterThan(4 * P);
    expect(adapterBytes * 50).toBeLessThan(fp32);
    const names = (await value('tensorNames')) as string[];
    expect(names).toHaveLength(16);
    expect(names[0]).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight [8, 256] F32');
    expect(names[3]).toBe('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight [128, 8] F32');
    expect(await value('[sameValues, reloadDiff]')).toEqual([true, 0]);
  });

  it('the trainable exercise fails with its starter code and passes with the reference solution', async () => {
    const { starter, solved } = await exercise('trainable', SOLUTIONS.trainable);
    expect(starter.length).toBeGreaterThan(0);
    expect(starter[0].ok).toBe(false);
    expect(solved).toHaveLength(4);
    expect(solved.every((f) => f.ok)).toBe(true);
    // A slip the check names: every projection's output taken as the hidden size (no grouped-query attention).
    await run(`function loraTrainable(cfg: LlamaConfig, r: number, targets: readonly LoraTarget[]): number {
      const H = cfg.hiddenSize, I = cfg.intermediateSize;
      const dims: Record<LoraTarget, [number, number]> = { q: [H, H], k: [H, H], v: [H, H], o: [H, H], gate: [H, I], up: [H, I], down: [I, H] };
      return cfg.numLayers * targets.reduce((n, t) => n + r * (dims[t][0] + dims[t][1]), 0);
    }`);
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'trainable')!;
    const slip = feedbackOf(await run(checkCell.source));
    expect(slip[0].ok).toBe(false);
    expect(slip[0].text).toMatch(/grouped-query attention/);
  }, 120_000);
});
