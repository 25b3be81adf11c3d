/**
 * Serving, measured on the built-in model through the serving engine (Orca, OSDI 2022; vLLM, SOSP 2023): continuous
 * against static batching at the same KV memory, paged blocks against contiguous regions by how many sequences run at
 * once, and, as context, prefix caching's hit rate, preemption by recomputation against swapping, and tokens/s as the
 * arrival rate grows. Every figure comes from a real replay: requests arrive on the wall clock, every iteration runs
 * the model, and the StepLogs and request records are the engine's own.
 */
import { createDevice } from '../engine/index.ts';
import type { LlamaModel } from '../engine/model/llama.ts';
import type { EngineOptions } from '../engine/serve/engine.ts';
import { poissonTrace, sharedPrefixTrace } from '../engine/serve/trace.ts';
import { traceStats, type TraceStats } from '../engine/serve/trace_stats.ts';
import { medianSummary, ratioOf, serveRun, type Ratio, type RunSummary } from './serve_runs.ts';
import { bestHitRate, PrefixHits } from './prefix_hits.ts';
import type { Target } from './run.ts';
import { isMain, runAlone } from './alone.ts';
import { openModel } from './builtin_model.ts';

export interface ServeBench {
  model: string;
  committed: boolean;
  context: number;
  bytesPerToken: number;
  /** Continuous against static batching: the same trace, KV memory (paged pool), maxNumSeqs and maxBatchedTokens. */
  batching: {
    trace: TraceStats;
    budgetBytes: number;
    maxNumSeqs: number;
    maxBatchedTokens: number;
    repeats: number;
    /** The medians over the repeats of each figure. */
    continuous: RunSummary;
    static: RunSummary;
    ratio: Ratio;
    /** The same, of loadedTokS. */
    loadedRatio: Ratio;
  };
  /** Paged blocks against contiguous regions of the context: the same trace, budget, continuous batching. */
  layouts: {
    trace: TraceStats;
    budgetBytes: number;
    regionTokens: number;
    blockSize: number;
    maxNumSeqs: number;
    paged: RunSummary;
    contiguous: RunSummary;
    /** paged / contiguous. */
    underLoadRatio: number;
    peakRatio: number;
    tokSRatio: number;
  };
  prefix: {
    trace: TraceStats;
    prefixTokens: number;
    suffixTokens: number;
    numPrefixes: number;
    /** Prompt tokens whose keys and values came from the prefix cache, over all prompt tokens (first admissions). */
    hitRate: number;
    hitTokens: number;
    promptTokens: number;
    /** The most a block cache can hit: every full block of the prefix, once its first request has run. */
    bestHitRate: number;
    /** Hits on blocks that a request admitted in the same iteration was still to fill (see the notes). */
    sameStepHitTokens: number;
    cached: RunSummary;
    uncached: RunSummary;
  };
  preemption: { trace: TraceStats; budgetBytes: number; recompute: RunSummary; swap: RunSummary };
  rates: { durationS: number; rows: { rate: number; requests: number; offeredTokS: number; run: RunSummary }[] };
  notes: string[];
  seconds: number;
}

/** How much each part runs; the defaults keep the section near 2 minutes (quick: 20 s) on two cores. */
export interface ServePlan {
  /** Requests of the batching trace (arriving within about a second) and of the layout trace (the same, all at 0). */
  requests: number;
  /** Continuous / static pairs, in alternating order. */
  repeats: number;
  prefixRequests: number;
  preemptRequests: number;
  rates: number[];
  rateSeconds: number;
}

export const FULL_PLAN: ServePlan = { requests: 192, repeats: 3, prefixRequests: 48, preemptRequests: 32, rates: [5, 20, 80], rateSeconds: 2 };
export const QUICK_PLAN: ServePlan = { requests: 80, repeats: 1, prefixRequests: 24, preemptRequests: 16, rates: [20, 80], rateSeconds: 1 };

const log = (s: string) => process.stderr.write(`${s}\n`);
const SEED = 1;
const BLOCK = 16;
/** 16 MiB of KV: 4,096 token slots of the built-in model (4 KiB each), 16 contiguous regions of its 256-token context. */
const BUDGET_BYTES = 16 * 2 ** 20;
/** 2 MiB: 512 slots, where a ShareGPT-like batch must preempt. */
const SMALL_BUDGET_BYTES = 2 * 2 ** 20;
/** vLLM's default max_num_batched_tokens, max(context, 2048): a static batch's prompts are prefilled in one iteration. */
const MAX_BATCHED_TOKENS = 2048;
const MAX_NUM_SEQS = 64;
/** High enough that memory, not this cap, bounds how many run in either layout. */
const LAYOUT_MAX_NUM_SEQS = 256;
const TARGET = 2;

const fmtRun = (s: RunSummary) =>
  `${s.tokS.toFixed(0)} tok/s; running ${s.running.underLoad.toFixed(1)} while requests wait, peak ${s.running.peak}; e2e p50 ${s.e2eMs.p50.toFixed(0)} ms, p99 ${s.e2eMs.p99.toFixed(0)} ms`;

export async function benchServe(kind: string, opts: { quick?: boolean; plan?: ServePlan } = {}): Promise<ServeBench> {
  const plan = opts.plan ?? (opts.quick ? QUICK_PLAN : FULL_PLAN);
  const t0 = performance.now();
  const dev = await createDevice(kind);
  let model: LlamaModel | undefined;
  try {
    const opened = await openModel(dev);
    model = opened.model;
    const m = model;
    const context = m.cfg.maxPositions;
    const notes: string[] = [];
    const bytesPerToken = 2 * m.cfg.numLayers * m.cfg.numKvHeads * m.cfg.headDim * 4;
    const shareGpt = (count: number, rate = Infinity, seed = SEED) => poissonTrace({ rate, count, dataset: 'sharegpt', context, seed });

    // Sessions are compiled and onnxruntime's buffers grown to a full batch's prefill and decode before anything is timed.
    const warm = shareGpt(Math.min(MAX_NUM_SEQS, plan.requests)).map((r) => ({ ...r, maxTokens: Math.min(r.maxTokens, 2) }));
    for (const layout of ['paged', 'contiguous'] as const) await serveRun(m, warm, { layout, budgetBytes: BUDGET_BYTES, maxNumSeqs: MAX_NUM_SEQS, maxBatchedTokens: MAX_BATCHED_TOKENS }, 'warm-up');

    // 1. Continuous against static batching. The requests arrive (Poisson) within about the first second, several
    // times faster than either serves them, so the queue stays full. All at 0 would start continuous batching with one
    // prefill of 64 prompts padded to the longest, a cost of this runner (it pads a prefill to B x S), not of the policy.
    const trace = shareGpt(plan.requests, plan.requests);
    const common: EngineOptions = { layout: 'paged', blockSize: BLOCK, budgetBytes: BUDGET_BYTES, maxNumSeqs: MAX_NUM_SEQS, maxBatchedTokens: MAX_BATCHED_TOKENS };
    const runs = { continuous: [] as RunSummary[], static: [] as RunSummary[] };
    const ratios: number[] = [];
    const loaded: number[] = [];
    for (let i = 0; i < plan.repeats; i++) {
      for (const b of i % 2 === 0 ? (['continuous', 'static'] as const) : (['static', 'continuous'] as const)) {
        runs[b].push(await serveRun(m, trace, { ...common, batching: b }, b));
      }
      ratios.push(runs.continuous[i].tokS / runs.static[i].tokS);
      loaded.push(runs.continuous[i].loadedTokS / runs.static[i].loadedTokS);
      log(`  serve: batching ${i + 1}/${plan.repeats}: continuous ${fmtRun(runs.continuous[i])}; static ${fmtRun(runs.static[i])}`);
    }
    const batching = {
      trace: traceStats(trace),
      budgetBytes: BUDGET_BYTES,
      maxNumSeqs: MAX_NUM_SEQS,
      maxBatchedTokens: MAX_BATCHED_TOKENS,
      repeats: plan.repeats,
      continuous: medianSummary(runs.continuous),
      static: medianSummary(runs.static),
      ratio: ratioOf(ratios),
      loadedRatio: ratioOf(loaded),
    };

    // 2. Paged blocks against contiguous regions of the context, the same budget.
    // maxBatchedTokens is the engine's default here (the context): prompts join in groups of about a dozen, not in
    // one prefill padded to the longest of a hundred.
    const layoutOpts = (layout: 'paged' | 'contiguous'): EngineOptions => ({ layout, blockSize: BLOCK, budgetBytes: BUDGET_BYTES, maxNumSeqs: LAYOUT_MAX_NUM_SEQS });
    // The same requests all queued at 0, so that memory, not the arrivals, bounds how many run.
    const offline = shareGpt(plan.requests);
    const paged = await serveRun(m, offline, layoutOpts('paged'), 'paged');
    const contiguous = await serveRun(m, offline, layoutOpts('contiguous'), 'contiguous');
    log(`  serve: layouts: paged ${fmtRun(paged)}; contiguous ${fmtRun(contiguous)}`);
    const layouts = {
      trace: traceStats(offline),
      budgetBytes: BUDGET_BYTES,
      regionTokens: context,
      blockSize: BLOCK,
      maxNumSeqs: LAYOUT_MAX_NUM_SEQS,
      paged,
      contiguous,
      underLoadRatio: paged.running.underLoad / contiguous.running.underLoad,
      peakRatio: paged.running.peak / contiguous.running.peak,
      tokSRatio: paged.tokS / contiguous.tokS,
    };

    // 3a. Prefix caching on a few-shot workload: 4 prefixes of 80 tokens (the paper's one-shot prefix), suffixes of 16.
    const pre = { prefixTokens: 80, suffixTokens: 16, numPrefixes: 4 };
    const ptrace = sharedPrefixTrace({ rate: 40, count: plan.prefixRequests, ...pre, outputTokens: 16, seed: SEED, context });
    const hits = new PrefixHits(new Map(ptrace.map((r) => [r.id, r.prompt.length])));
    const prefixOpts: EngineOptions = { layout: 'paged', blockSize: BLOCK, budgetBytes: BUDGET_BYTES, maxNumSeqs: MAX_NUM_SEQS };
    const cached = await serveRun(m, ptrace, { ...prefixOpts, prefixCaching: true }, 'prefix caching', (e) => hits.observe(e));
    const uncached = await serveRun(m, ptrace, { ...prefixOpts, prefixCaching: false }, 'no prefix caching');
    log(`  serve: prefix caching: hit rate ${(100 * hits.hitRate).toFixed(1)}%; ttft p50 ${cached.ttftMs.p50.toFixed(1)} ms against ${uncached.ttftMs.p50.toFixed(1)} ms without`);
    if (hits.sameStepHitTokens > 0) {
      notes.push(`${hits.sameStepHitTokens} of the ${hits.hitTokens} prefix-cache hit tokens were on blocks a request admitted in the same iteration had registered but not yet written (the pooled cache hashes a prompt's blocks when it allocates them and writes their keys and values after the step's forward pass): those requests attend to stale keys and values`);
    }
    const prefix = { trace: traceStats(ptrace), ...pre, hitRate: hits.hitRate, hitTokens: hits.hitTokens, promptTokens: hits.promptTokens, bestHitRate: bestHitRate(ptrace, pre.prefixTokens, BLOCK), sameStepHitTokens: hits.sameStepHitTokens, cached, uncached };

    // 3b. Preemption at a small budget: recomputation against swapping to host memory.
    const qtrace = shareGpt(plan.preemptRequests, Infinity, SEED + 1);
    const small: EngineOptions = { layout: 'paged', blockSize: BLOCK, budgetBytes: SMALL_BUDGET_BYTES, maxNumSeqs: MAX_NUM_SEQS, maxBatchedTokens: MAX_BATCHED_TOKENS };
    const recompute = await serveRun(m, qtrace, { ...small, preemption: 'recompute' }, 'recompute');
    const swap = await serveRun(m, qtrace, { ...small, preemption: 'swap' }, 'swap');
    log(`  serve: preemption at ${SMALL_BUDGET_BYTES / 2 ** 20} MiB: recompute ${recompute.preemptions} preemptions, ${recompute.recomputedTokens} tokens again; swap ${swap.preemptions}, ${((swap.swapBytes.out + swap.swapBytes.in) / 2 ** 20).toFixed(2)} MiB moved`);
    const preemption = { trace: traceStats(qtrace), budgetBytes: SMALL_BUDGET_BYTES, recompute, swap };

    // 3c. Tokens/s against the arrival rate (Poisson, continuous batching, paged, the 16 MiB pool).
    const rows = [];
    for (const rate of plan.rates) {
      const rtrace = poissonTrace({ rate, durationS: plan.rateSeconds, dataset: 'sharegpt', context, seed: SEED + 2 });
      const offered = rtrace.reduce((a, r) => a + r.maxTokens, 0) / plan.rateSeconds;
      const run = await serveRun(m, rtrace, common, `${rate} req/s`);
      rows.push({ rate, requests: rtrace.length, offeredTokS: offered, run });
      log(`  serve: ${rate} requests/s (${rtrace.length}): ${fmtRun(run)}`);
    }
    notes.push("static batching admits a batch from the requests waiting when the last batch has ended, without waiting for more to arrive, and reserves each member's exact final length in the paged pool (it is told maxTokens): more generous than the context-long regions FasterTransformer reserved");
    return {
      model: 'built-in',
      committed: opened.committed,
      context,
      bytesPerToken,
      batching,
      layouts,
      prefix,
      preemption,
      rates: { durationS: plan.rateSeconds, rows },
      notes,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    model?.dispose();
    await dev.dispose();
  }
}

export function serveTargets(s: ServeBench): Target[] {
  const b = s.batching;
  const r = b.ratio;
  const batchingMet = r.median >= TARGET;
  const l = s.layouts;
  const layoutMet = l.underLoadRatio >= TARGET;
  const c = b.continuous;
  const st = b.static;
  return [
    {
      name: `continuous batching at least ${TARGET}x the throughput of static batching on a ShareGPT-like trace at the same KV memory`,
      met: batchingMet,
      measured: `${r.median.toFixed(2)}x (${b.continuous.tokS.toFixed(0)} vs ${b.static.tokS.toFixed(0)} tok/s${r.runs > 1 ? `; ${r.low.toFixed(2)}-${r.high.toFixed(2)} over ${r.runs} pairs` : ''})`,
      goal: `>= ${TARGET}x`,
      gap: batchingMet
        ? undefined
        : `${(TARGET - r.median).toFixed(2)}x short: continuous batching decodes ${(c.decoding / st.decoding).toFixed(1)}x the sequences an iteration (${c.decoding.toFixed(1)} vs ${st.decoding.toFixed(1)}), but on this CPU a decode iteration's time grows with its batch (${c.decodeStepMs.toFixed(1)} vs ${st.decodeStepMs.toFixed(1)} ms), and ${(100 * c.prefillShare).toFixed(0)}% of its time goes to prefill iterations that stall every decode (against static's ${(100 * st.prefillShare).toFixed(0)}%)`,
    },
    {
      name: `paged KV memory runs at least ${TARGET}x the sequences of contiguous regions (${l.regionTokens} tokens) at the same memory`,
      met: layoutMet,
      measured: `${l.underLoadRatio.toFixed(2)}x while requests wait (${l.paged.running.underLoad.toFixed(1)} vs ${l.contiguous.running.underLoad.toFixed(1)}); peak ${l.paged.running.peak} vs ${l.contiguous.running.peak}`,
      goal: `>= ${TARGET}x`,
      gap: layoutMet ? undefined : `${(TARGET - l.underLoadRatio).toFixed(2)}x short: the paged run peaked at ${l.paged.running.peak} (maxNumSeqs ${l.maxNumSeqs}), ${l.paged.preemptions} preemptions`,
    },
  ];
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 20 ? 2 : 0)} MiB`;

const HEAD = `    ${''.padEnd(18)} ${'tok/s'.padStart(6)} ${'time s'.padStart(7)}  running: waiting / mean / peak  decode: seqs, ms  prefilling  TTFT p50 / p99   TPOT p50 / p99   e2e p50 / p99 ms`;

function runLine(s: RunSummary): string {
  const pair = (p: { p50: number; p99: number }, w: number) => `${ms(p.p50).padStart(w)} / ${ms(p.p99).padEnd(w)}`;
  return `    ${s.label.padEnd(18)} ${s.tokS.toFixed(0).padStart(6)} ${s.durationS.toFixed(2).padStart(7)}  ${s.running.underLoad.toFixed(1).padStart(16)} / ${s.running.mean.toFixed(1).padStart(4)} / ${String(s.running.peak).padEnd(4)}  ${`${s.decoding.toFixed(1)}, ${s.decodeStepMs.toFixed(1)}`.padStart(16)}  ${`${(100 * s.prefillShare).toFixed(0)}%`.padStart(10)}  ${pair(s.ttftMs, 6)}  ${pair(s.tpotMs, 5)}  ${pair(s.e2eMs, 6)}`;
}

const traceLine = (t: TraceStats) =>
  `${t.count} requests (input mean ${t.input.mean.toFixed(1)}, p99 ${t.input.p99}; output mean ${t.output.mean.toFixed(1)}, p99 ${t.output.p99})${t.durationS > 0 ? ` arriving over ${t.durationS.toFixed(2)} s` : ', all at 0'}`;

export function printServe(s: ServeBench): string[] {
  const out = [`\nServing (${s.model} model${s.committed ? '' : ', random weights'}, context ${s.context}, ${s.bytesPerToken / 1024} KiB of KV a token):`];
  const b = s.batching;
  out.push(`  continuous vs static batching: ShareGPT-like, ${traceLine(b.trace)}; both on one paged pool of ${mib(b.budgetBytes)}, maxNumSeqs ${b.maxNumSeqs}, maxBatchedTokens ${b.maxBatchedTokens}; medians of ${b.repeats} run${b.repeats > 1 ? 's' : ''} each, in alternating order`);
  out.push(HEAD, runLine(b.continuous), runLine(b.static));
  const range = (x: Ratio) => (x.runs > 1 ? ` (pairs ${x.low.toFixed(2)}-${x.high.toFixed(2)})` : '');
  const n = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  out.push(`    continuous / static tok/s: ${b.ratio.median.toFixed(2)}x${range(b.ratio)}; while requests still wait (no drain): ${n(b.continuous.loadedTokS)} vs ${n(b.static.loadedTokS)} tok/s, ${n(b.loadedRatio.median, 2)}x${range(b.loadedRatio)}`);
  const l = s.layouts;
  out.push(`  paged (blocks of ${l.blockSize}) vs contiguous (regions of ${l.regionTokens}): ${traceLine(l.trace)}; ${mib(l.budgetBytes)} each, continuous batching, maxNumSeqs ${l.maxNumSeqs}, maxBatchedTokens ${l.regionTokens}; one run each`);
  out.push(HEAD, runLine(l.paged), runLine(l.contiguous));
  out.push(`    paged / contiguous: ${l.underLoadRatio.toFixed(2)}x sequences running while requests wait, ${l.peakRatio.toFixed(2)}x at the peak, ${l.tokSRatio.toFixed(2)}x tok/s (preemptions: ${l.paged.preemptions} / ${l.contiguous.preemptions})`);
  const p = s.prefix;
  out.push(`  prefix caching: ${p.numPrefixes} prefixes of ${p.prefixTokens} tokens, suffixes of ${p.suffixTokens}, ${p.trace.count} requests at ${p.trace.offeredRate?.toFixed(0)} req/s: hit rate ${(100 * p.hitRate).toFixed(1)}% of ${p.promptTokens} prompt tokens (best possible with blocks of 16: ${(100 * p.bestHitRate).toFixed(1)}%)`);
  out.push(HEAD, runLine(p.cached), runLine(p.uncached));
  const q = s.preemption;
  out.push(`  preemption at ${mib(q.budgetBytes)} of KV (${q.budgetBytes / s.bytesPerToken} tokens), ShareGPT-like, ${traceLine(q.trace)}:`);
  for (const x of [q.recompute, q.swap]) {
    out.push(`    ${x.label.padEnd(10)} ${String(x.preemptions).padStart(4)} preemptions; ${mib(x.swapBytes.out + x.swapBytes.in)} moved (out ${mib(x.swapBytes.out)}, in ${mib(x.swapBytes.in)}); ${x.recomputedTokens} tokens computed again (${mib(x.recomputedTokens * s.bytesPerToken)} of KV); ${x.tokS.toFixed(0)} tok/s, e2e p99 ${ms(x.e2eMs.p99)} ms`);
  }
  out.push(`  tokens/s against the arrival rate (Poisson, ${s.rates.durationS} s of arrivals, continuous batching, paged ${mib(b.budgetBytes)}, maxNumSeqs ${b.maxNumSeqs}):`);
  for (const r of s.rates.rows) {
    out.push(`    ${String(r.rate).padStart(4)} req/s (${String(r.requests).padStart(3)} requests, ${r.offeredTokS.toFixed(0).padStart(5)} tok/s offered): ${r.run.tokS.toFixed(0).padStart(5)} tok/s, ${r.run.running.mean.toFixed(1)} running, TTFT p50 ${ms(r.run.ttftMs.p50)} ms, e2e p50 ${ms(r.run.e2eMs.p50)} / p99 ${ms(r.run.e2eMs.p99)} ms`);
  }
  for (const n of s.notes) out.push(`  note: ${n}`);
  out.push(`  (${s.seconds.toFixed(0)} s)`);
  return out;
}

// `npx tsx bench/serve.ts [--quick] [--out file.json]`: this section alone.
if (isMain(import.meta.url)) await runAlone('serve', benchServe, printServe, serveTargets);
