/**
 * The committed built-in model against the command that produced it: its config is the preset's, its training log
 * names this corpus, the first steps re-run from the seed give the logged losses, the held-out loss of the committed
 * weights is recomputed, and it beats the byte-trigram baseline recomputed on the same split.
 *
 * Tolerances: the log keeps 7 significant digits of each loss, and onnxruntime may sum in another order on another
 * CPU (fp32), so re-run losses agree to 1e-5 relative. The held-out loss is recomputed from the committed (bf16)
 * weights as the command measured it: 1e-6 relative. The trigram baseline is integer counting: 1e-12.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILTIN_CONFIG, BUILTIN_DIR, BUILTIN_RECIPE, createDevice, crossEntropy, evaluate, fitTrigram, loadLlamaConfig, loadModel, mobyDick, train, type Device,
} from '../../../engine/index.ts';

interface Log {
  recipe: unknown;
  seed: number;
  corpus: { sha256: string; trainBytes: number; heldOutBytes: number };
  steps: number;
  losses: number[];
  heldOut: { nats: number; bitsPerByte: number };
  trigram: { nats: number; bitsPerByte: number };
}

const log = JSON.parse(readFileSync(join(BUILTIN_DIR, 'training_log.json'), 'utf8')) as Log;
const corpus = mobyDick();
let dev: Device;

beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

describe('the built-in model', () => {
  it('is the preset, trained on this corpus for the whole recipe', () => {
    expect(loadLlamaConfig(BUILTIN_DIR)).toEqual(BUILTIN_CONFIG);
    expect(log.recipe).toEqual(JSON.parse(JSON.stringify(BUILTIN_RECIPE)));
    expect(log.corpus.sha256).toBe(corpus.sha256);
    expect([log.corpus.trainBytes, log.corpus.heldOutBytes]).toEqual([corpus.train.length, corpus.heldOut.length]);
    expect(log.steps).toBe(BUILTIN_RECIPE.steps);
    expect(log.losses).toHaveLength(BUILTIN_RECIPE.steps);
  });

  it('re-running the first steps from the seed gives the logged losses', async () => {
    const { state, params } = await train(dev, BUILTIN_RECIPE, corpus, { stopAfter: 2 });
    for (const p of params) p.dispose();
    state.losses.forEach((l, i) => expect(Math.abs(l - log.losses[i]) / log.losses[i], `step ${i + 1}: ${l} vs ${log.losses[i]}`).toBeLessThan(1e-5));
  }, 120_000);

  it('the trigram baseline recomputes, and the committed weights beat it on the held-out bytes as logged', async () => {
    const tri = crossEntropy(fitTrigram(corpus.train), corpus.heldOut);
    expect(Math.abs(tri.nats - log.trigram.nats)).toBeLessThan(1e-12);
    const model = await loadModel(BUILTIN_DIR, { device: dev });
    const q = await evaluate(model, corpus.heldOut, { context: BUILTIN_RECIPE.context });
    model.dispose();
    expect(Math.abs(q.nats - log.heldOut.nats) / log.heldOut.nats).toBeLessThan(1e-6);
    expect(q.nats).toBeLessThan(tri.nats);
  }, 120_000);
});
