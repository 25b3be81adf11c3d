/**
 * greedyDecode with and without the KV cache, on a tiny random Llama on cpu (fp32 throughout):
 * - both ways pick exactly the greedy tokens of an argmax loop over referenceLogits (float64) of the whole growing
 *   sequence, 20 steps; the weights' seed is one where the reference's top two logits differ by > 1e-3 at every step
 *   (asserted), 1e3 times the engine's fp32 error (~1e-6), so a near-tie cannot flip a token;
 * - their logits agree step by step within 1e-5 normwise (||a - b|| / ||b||): the two ways differ only in summation
 *   order (one row against a matrix product of many, attention over a cache against a prefill), fp32 rounding, the
 *   tolerance llama.test.ts states for prefill + decode against a full prefill (measured here: 7.1e-7);
 * - each step reports the tokens it ran and attended, and FLOPs equal to decodeFlops' count; onStep sees each step;
 * - bad input is a ServelabError before anything runs, and the cache is freed however the run ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_LLAMA, randomWeights } from './tiny_config.ts';
import { createDevice, ServelabError, type Device } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import { greedyDecode, type DecodeStep } from '../../../engine/model/recompute.ts';
import { decodeFlops } from '../../../engine/model/flops.ts';
import { referenceLogits } from '../../../engine/model/reference.ts';
import { relError } from '../../helpers/rel_error.ts';

const CFG: LlamaConfig = TINY_LLAMA;

/** The seed and prompt generate.test.ts found free of near-ties for 20 greedy steps (asserted again below). */
const SEED = 2;
const PROMPT = [5, 9, 14];
const STEPS = 20;
const FP32_TOL = 1e-5;

let dev: Device;
let model: LlamaModel;
let weights: Map<string, Float32Array>;
beforeAll(async () => {
  dev = await createDevice('cpu');
  weights = randomWeights(CFG, SEED);
  model = await LlamaModel.fromWeights(dev, CFG, (name) => weights.get(name)!);
});
afterAll(async () => {
  model.dispose();
  await dev.dispose();
});

describe('greedyDecode', () => {
  it(`with and without the cache: the reference's greedy tokens, logits within ${FP32_TOL} normwise, ${STEPS} steps`, async () => {
    const seq = [...PROMPT];
    const V = CFG.vocabSize;
    for (let s = 0; s < STEPS; s++) {
      const z = referenceLogits(CFG, weights, seq).subarray((seq.length - 1) * V);
      const order = Array.from(z.keys()).sort((a, b) => z[b] - z[a]);
      expect(z[order[0]] - z[order[1]], `top-2 gap at step ${s}`).toBeGreaterThan(1e-3);
      seq.push(order[0]);
    }
    const want = seq.slice(PROMPT.length);
    expect(new Set(want).size).toBeGreaterThan(5);

    const kvBefore = dev.memory.snapshot().byTag.kv;
    const recompute = await greedyDecode(model, PROMPT, { steps: STEPS, cache: false, keepLogits: true });
    const cached = await greedyDecode(model, PROMPT, { steps: STEPS, cache: true, keepLogits: true });
    expect(recompute.tokens).toEqual(want);
    expect(cached.tokens).toEqual(want);
    expect(recompute.logits).toHaveLength(STEPS);
    for (let s = 0; s < STEPS; s++) {
      expect(relError(cached.logits![s], recompute.logits![s]), `step ${s}`).toBeLessThanOrEqual(FP32_TOL);
    }
    // Step 0 is the same prefill both ways: the same kernels on the same input.
    expect(cached.logits![0]).toEqual(recompute.logits![0]);
    expect(dev.memory.snapshot().byTag.kv).toBe(kvBefore);
  });

  it('reports each step: tokens run and attended, FLOPs as decodeFlops counts them, its time; onStep sees each in order', async () => {
    for (const cache of [false, true]) {
      const seen: DecodeStep[] = [];
      const run = await greedyDecode(model, PROMPT, { steps: 6, cache, onStep: (s) => seen.push(s) });
      expect(run.cache).toBe(cache);
      expect(run.promptTokens).toBe(3);
      expect(run.logits).toBeUndefined();
      expect(seen).toEqual(run.steps);
      expect(run.steps.map((s) => s.token)).toEqual(run.tokens);
      const count = decodeFlops(CFG, { promptTokens: 3, steps: 6, cache }).steps;
      expect(run.steps.map((s) => [s.step, s.seqLen, s.newTokens, s.flops])).toEqual(count.map((c) => [c.step, c.seqLen, c.newTokens, c.total]));
      expect(run.steps.map((s) => s.newTokens)).toEqual(cache ? [3, 1, 1, 1, 1, 1] : [3, 4, 5, 6, 7, 8]);
      for (const s of run.steps) expect(s.ms).toBeGreaterThan(0);
      expect(run.totalMs).toBeCloseTo(run.steps.reduce((a, s) => a + s.ms, 0), 9);
      expect(run.tokensPerSec).toBeCloseTo(5 / ((run.totalMs - run.steps[0].ms) / 1000), 9);
    }
    const one = await greedyDecode(model, PROMPT, { steps: 1, cache: true });
    expect(one.tokensPerSec).toBe(0);
  });

  it('fills the context exactly: the last step runs maxPositions tokens; one more step is refused', async () => {
    const P = CFG.maxPositions - 3;
    const prompt = Array.from({ length: P }, (_, i) => (7 * i + 1) % CFG.vocabSize);
    const [a, b] = [await greedyDecode(model, prompt, { steps: 4, cache: false }), await greedyDecode(model, prompt, { steps: 4, cache: true })];
    expect(a.steps.at(-1)!.seqLen).toBe(CFG.maxPositions);
    expect(b.tokens).toEqual(a.tokens);
    await expect(greedyDecode(model, prompt, { steps: 5, cache: true })).rejects.toThrow(
      `greedyDecode: a prompt of ${P} tokens and 5 steps run sequences of up to ${CFG.maxPositions + 1} tokens; the model's context is ${CFG.maxPositions} (at most 4 steps after this prompt)`,
    );
  });

  it('refuses bad input with a ServelabError before reserving a cache', async () => {
    const kvBefore = dev.memory.snapshot().byTag.kv;
    await expect(greedyDecode(model, [], { steps: 3, cache: true })).rejects.toThrow('greedyDecode: the prompt is empty; it needs at least one token');
    await expect(greedyDecode(model, PROMPT, { steps: 0, cache: false })).rejects.toThrow('greedyDecode: steps must be a positive integer, got 0');
    await expect(greedyDecode(model, PROMPT, { steps: 2.5, cache: false })).rejects.toThrow(ServelabError);
    await expect(greedyDecode(model, PROMPT, { steps: 2 } as never)).rejects.toThrow(/cache must be true or false/);
    await expect(greedyDecode(model, PROMPT, { steps: 200, cache: false })).rejects.toThrow(ServelabError);
    // A token outside the vocabulary is the model's own error; the cache reserved for the run is freed.
    await expect(greedyDecode(model, [1, CFG.vocabSize], { steps: 2, cache: false })).rejects.toThrow(`token ${CFG.vocabSize} is not in the vocabulary`);
    expect(dev.memory.snapshot().byTag.kv).toBe(kvBefore);
  });

  it('an aborted signal stops the run at its next step and frees the cache', async () => {
    const kvBefore = dev.memory.snapshot().byTag.kv;
    const ctl = new AbortController();
    const steps: number[] = [];
    const run = greedyDecode(model, PROMPT, { steps: 10, cache: true, signal: ctl.signal, onStep: (s) => (steps.push(s.step), s.step === 2 && ctl.abort(new Error('stop here'))) });
    await expect(run).rejects.toThrow('stop here');
    expect(steps).toEqual([0, 1, 2]);
    expect(dev.memory.snapshot().byTag.kv).toBe(kvBefore);
  });
});
