/**
 * One replay through the serving engine, summarized from the engine's own metrics and StepLogs (throughput, latency
 * percentiles, sequences running at once, recomputed tokens), and the median of repeated replays of one setting.
 */
import type { LlamaModel } from '../engine/model/llama.ts';
import { ServingEngine, type EngineOptions, type ServeResult } from '../engine/serve/engine.ts';
import type { TraceRequest } from '../engine/serve/trace.ts';
import { median } from './stats.ts';

/** One replay, summarized: throughput, latency percentiles, and from the StepLogs how many sequences ran at once. */
export interface RunSummary {
  label: string;
  outputTokens: number;
  durationS: number;
  tokS: number;
  /** Output tokens/s from the start until the last iteration in which requests still waited: the rate under full load, without the drain at the end (NaN if none waited). */
  loadedTokS: number;
  ttftMs: { p50: number; p99: number };
  tpotMs: { p50: number; p99: number };
  e2eMs: { p50: number; p99: number };
  steps: number;
  /** Sequences running per iteration: the mean over iterations while requests still wait (the load the memory allows), over all, and the peak. */
  running: { underLoad: number; mean: number; peak: number };
  /** Sequences decoded per decode iteration, on average (a static batch's finished members still count as running, not here). */
  decoding: number;
  /** Mean time of an iteration that only decodes, in ms. */
  decodeStepMs: number;
  /** Share of the iterations' time spent in those that prefill (an iteration prefills or decodes, without chunked prefill). */
  prefillShare: number;
  preemptions: number;
  swapBytes: { out: number; in: number };
  /** Prefilled tokens beyond each request's prompt: what preemption by recomputation computed again. */
  recomputedTokens: number;
  peakReservedBytes: number;
  completed: number;
  requests: number;
}

/** a / b over repeats run in alternating order: the median ratio and its range. */
export interface Ratio {
  median: number;
  low: number;
  high: number;
  runs: number;
}

const mean = (v: readonly number[]) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN);

/** Non-finite ratios (a run in which no request waited has no loadedTokS) are left out. */
export function ratioOf(values: readonly number[]): Ratio {
  const v = values.filter(Number.isFinite);
  return v.length ? { median: median(v), low: Math.min(...v), high: Math.max(...v), runs: v.length } : { median: NaN, low: NaN, high: NaN, runs: 0 };
}

/** A replay's figures: the engine's metrics, and from its StepLogs the sequences running and the recomputed tokens. */
export function summarize(label: string, r: ServeResult): RunSummary {
  const m = r.metrics;
  const running = r.steps.map((s) => s.running);
  const loaded = r.steps.filter((s) => s.waiting > 0).map((s) => s.running);
  const prompts = r.records.filter((x) => x.finishReason !== 'rejected').reduce((a, x) => a + x.promptTokens, 0);
  const prefilled = r.steps.reduce((a, s) => a + s.prefillTokens, 0);
  const decodes = r.steps.filter((s) => s.decodeSeqs > 0);
  const stepMs = r.steps.reduce((a, s) => a + s.ms, 0);
  const prefillMs = r.steps.filter((s) => s.prefillTokens > 0).reduce((a, s) => a + s.ms, 0);
  const last = r.steps.filter((s) => s.waiting > 0).at(-1);
  const loadedEnd = last ? last.tMs + last.ms : NaN;
  const loadedTokens = r.records.reduce((a, x) => a + x.tokenMs.filter((t) => t <= loadedEnd).length, 0);
  const pick = (p: { p50: number; p99: number }) => ({ p50: p.p50, p99: p.p99 });
  return {
    label,
    outputTokens: r.records.reduce((a, x) => a + x.output.length, 0),
    durationS: m.durationS,
    tokS: m.throughputTokS,
    loadedTokS: loadedEnd > 0 ? (1000 * loadedTokens) / loadedEnd : NaN,
    ttftMs: pick(m.ttftMs),
    tpotMs: pick(m.tpotMs),
    e2eMs: pick(m.e2eMs),
    steps: r.steps.length,
    running: { underLoad: loaded.length ? mean(loaded) : mean(running), mean: mean(running), peak: Math.max(0, ...running) },
    decoding: mean(decodes.map((s) => s.decodeSeqs)),
    decodeStepMs: mean(decodes.filter((s) => s.prefillTokens === 0).map((s) => s.ms)),
    prefillShare: stepMs > 0 ? prefillMs / stepMs : 0,
    preemptions: m.preemptions,
    swapBytes: { out: m.swap.outBytes, in: m.swap.inBytes },
    recomputedTokens: prefilled - prompts,
    peakReservedBytes: m.kv.peakReservedBytes,
    completed: m.completed,
    requests: m.requests,
  };
}

/**
 * The median of each figure over repeated runs of one setting. Arrivals come on the wall clock, so how many join each
 * iteration, and with them the running counts, move a little with the machine's speed; token and preemption counts
 * are the first run's.
 */
export function medianSummary(runs: readonly RunSummary[]): RunSummary {
  const med = (f: (r: RunSummary) => number) => median(runs.map(f));
  const pct = (f: (r: RunSummary) => { p50: number; p99: number }) => ({ p50: med((r) => f(r).p50), p99: med((r) => f(r).p99) });
  return {
    ...runs[0],
    durationS: med((r) => r.durationS),
    tokS: med((r) => r.tokS),
    loadedTokS: med((r) => r.loadedTokS),
    ttftMs: pct((r) => r.ttftMs),
    tpotMs: pct((r) => r.tpotMs),
    e2eMs: pct((r) => r.e2eMs),
    running: { underLoad: med((r) => r.running.underLoad), mean: med((r) => r.running.mean), peak: med((r) => r.running.peak) },
    decoding: med((r) => r.decoding),
    decodeStepMs: med((r) => r.decodeStepMs),
    prefillShare: med((r) => r.prefillShare),
  };
}

/** Replays a trace on a fresh engine (its own KV pool) and summarizes it; onStep sees every iteration. */
export async function serveRun(model: LlamaModel, trace: readonly TraceRequest[], opts: EngineOptions, label: string, onStep?: (engine: ServingEngine) => void): Promise<RunSummary> {
  const engine = await ServingEngine.create(model, opts);
  try {
    return summarize(label, await engine.replay(trace, { onStep: onStep && ((_, e) => onStep(e)) }));
  } finally {
    engine.dispose();
  }
}
