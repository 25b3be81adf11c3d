/**
 * The built-in model served on the engine: prefill and decode throughput, a decode step against the sum of its
 * matmuls each timed alone, sessions created over a long decode, and the tracker against the process's growth while
 * the model loads and serves (in a fresh process, as bench/memory.ts).
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createDevice, Graph } from '../engine/index.ts';
import type { LlamaModel } from '../engine/model/llama.ts';
import { collectGarbage, FREED_MEMORY_RETURNS, inFreshProcess } from './memory.ts';
import { median, timeIt } from './stats.ts';
import { rng, uniform } from './random.ts';
import { openModel } from './builtin_model.ts';

export interface DecodeRow {
  batch: number;
  /** Median of the timed steps. */
  stepMs: number;
  tokensPerSec: number;
}

export interface ModelBench {
  model: string;
  /** Whether the committed weights were loaded (else random weights of the same shapes: the same speed). */
  committed: boolean;
  prefill: { batch: number; tokens: number; ms: number; tokensPerSec: number };
  decode: DecodeRow[];
  /** A batch-1 decode step against the sum of its projections, each run alone as its own session call. */
  stepVsMatmuls: { stepMs: number; matmulsMs: number; matmuls: number; ratio: number };
  /** Sessions created while decoding `steps` tokens after a prefill, from a cold compile cache. */
  sessions: { steps: number; created: number };
  memory: { trackerBytes: number; rssBytes: number; ratio: number; byTag: Record<string, number> } | null;
}

const log = (s: string) => process.stderr.write(`${s}\n`);

const prompt = (b: number, len: number) => Array.from({ length: len }, (_, i) => 32 + ((b * 7 + i * 13) % 90));

/** Decode steps per second at `batch` sequences, after a prefill of `promptLen` tokens each. */
async function decodeRate(model: LlamaModel, batch: number, promptLen: number, steps: number): Promise<DecodeRow> {
  const cache = await model.createCache(batch);
  try {
    (await model.prefill(Array.from({ length: batch }, (_, b) => prompt(b, promptLen)), cache)).logits.dispose();
    const tokens = Array.from({ length: batch }, (_, b) => 97 + b);
    const times: number[] = [];
    for (let s = 0; s < steps; s++) {
      const t0 = performance.now();
      (await model.decode(tokens, cache)).logits.dispose();
      times.push(performance.now() - t0);
    }
    const stepMs = median(times.slice(2));
    return { batch, stepMs, tokensPerSec: (batch * 1000) / stepMs };
  } finally {
    cache.dispose();
  }
}

export async function benchModel(kind: string, opts: { quick?: boolean } = {}): Promise<ModelBench> {
  const dev = await createDevice(kind);
  try {
    const { model, committed } = await openModel(dev);
    const cfg = model.cfg;
    log(`  model: ${model} (${committed ? 'committed weights' : 'random weights: models/builtin is absent'})`);
    // Sessions over a long decode, from a cold cache: the prefill's and the decode step's, nothing per position.
    const before = dev.stats().sessionsCreated;
    const steps = opts.quick ? 100 : 200;
    const cache = await model.createCache(1);
    (await model.prefill([prompt(0, 16)], cache)).logits.dispose();
    for (let s = 0; s < steps && cache.canAppend(1); s++) (await model.decode([101], cache)).logits.dispose();
    cache.dispose();
    const sessions = { steps, created: dev.stats().sessionsCreated - before };

    const P = 128;
    const pc = await model.createCache(1);
    const pt = await timeIt(async () => (await model.prefill([prompt(0, P)], pc)).logits.dispose(), { minRuns: 5, minTimeMs: 500 });
    pc.dispose();
    const prefill = { batch: 1, tokens: P, ms: pt.ms, tokensPerSec: (P * 1000) / pt.ms };
    log(`  prefill ${P} tokens: ${pt.ms.toFixed(2)} ms (${prefill.tokensPerSec.toFixed(0)} tokens/s)`);

    const decode: DecodeRow[] = [];
    for (const b of [1, 8, 32]) {
      const row = await decodeRate(model, b, 32, opts.quick ? 24 : 64);
      decode.push(row);
      log(`  decode batch ${b}: ${row.stepMs.toFixed(3)} ms/step, ${row.tokensPerSec.toFixed(0)} tokens/s`);
    }

    // Each projection alone: one session per Linear over x [1, 1, in], as the decode step feeds it.
    let matmulsMs = 0;
    const linears = [...model.linears().values()];
    for (const lin of linears) {
      const x = dev.tensor(uniform(rng(lin.inFeatures), lin.inFeatures, -1, 1), [1, 1, lin.inFeatures]);
      const t = await timeIt(async () => (await lin.forward(x)).dispose(), { minRuns: 20, minTimeMs: 100 });
      matmulsMs += t.ms;
      x.dispose();
    }
    const step = await decodeRate(model, 1, 32, opts.quick ? 40 : 100);
    const stepVsMatmuls = { stepMs: step.stepMs, matmulsMs, matmuls: linears.length, ratio: step.stepMs / matmulsMs };
    log(`  decode step ${step.stepMs.toFixed(3)} ms vs its ${linears.length} matmuls alone ${matmulsMs.toFixed(3)} ms (${stepVsMatmuls.ratio.toFixed(2)}x)`);
    model.dispose();
    const memory = kind === 'cpu' ? await inFreshProcess<ModelBench['memory']>(fileURLToPath(import.meta.url), [kind], FREED_MEMORY_RETURNS) : null;
    return { model: `${cfg.numLayers} layers, width ${cfg.hiddenSize}, vocab ${cfg.vocabSize}`, committed, prefill, decode, stepVsMatmuls, sessions, memory };
  } finally {
    await dev.dispose();
  }
}

/** In a fresh process: the tracker's growth against the resident set's while the model loads and serves. */
async function memoryOfServing(kind: string): Promise<ModelBench['memory']> {
  const dev = await createDevice(kind);
  const warm = new Graph('start');
  warm.output(warm.op('Add', [warm.input('x', 'fp32', [1]), warm.input('y', 'fp32', [1])])[0]);
  (await dev.run(warm, [dev.tensor([1], [1]), dev.tensor([2], [1])]))[0].dispose();
  await collectGarbage();
  const rss0 = process.memoryUsage.rss();
  const live0 = dev.memory.live;
  const { model } = await openModel(dev);
  const cache = await model.createCache(8);
  (await model.prefill(Array.from({ length: 8 }, (_, b) => prompt(b, 64)), cache)).logits.dispose();
  for (let s = 0; s < 16; s++) (await model.decode(Array(8).fill(101), cache)).logits.dispose();
  await collectGarbage();
  const trackerBytes = dev.memory.live - live0;
  const rssBytes = process.memoryUsage.rss() - rss0;
  const byTag = { ...dev.memory.liveByTag() } as Record<string, number>;
  cache.dispose();
  model.dispose();
  await dev.dispose();
  return { trackerBytes, rssBytes, ratio: trackerBytes / rssBytes, byTag };
}

export function printModel(m: ModelBench): string[] {
  const out = [`\nmodel (${m.model}${m.committed ? '' : ', random weights'}):`];
  out.push(`  prefill ${m.prefill.tokens} tokens: ${m.prefill.ms.toFixed(2)} ms, ${m.prefill.tokensPerSec.toFixed(0)} tokens/s`);
  for (const d of m.decode) out.push(`  decode batch ${String(d.batch).padStart(2)}: ${d.stepMs.toFixed(3)} ms/step, ${d.tokensPerSec.toFixed(0)} tokens/s`);
  const s = m.stepVsMatmuls;
  out.push(`  decode step ${s.stepMs.toFixed(3)} ms vs its ${s.matmuls} matmuls alone ${s.matmulsMs.toFixed(3)} ms: ${s.ratio.toFixed(2)}x`);
  out.push(`  sessions created over ${m.sessions.steps} decode steps (with the prefill): ${m.sessions.created}`);
  if (m.memory) out.push(`  tracker ${(m.memory.trackerBytes / 2 ** 20).toFixed(1)} MiB against resident growth ${(m.memory.rssBytes / 2 ** 20).toFixed(1)} MiB (${(m.memory.ratio * 100).toFixed(1)}%)`);
  return out;
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  process.stdout.write(`${JSON.stringify(await memoryOfServing(process.argv[2] ?? 'cpu'))}\n`);
}
