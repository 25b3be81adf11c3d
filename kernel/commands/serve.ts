/**
 * `servelab serve`: the serving engine (engine/serve) from the command line, as vLLM's benchmark_serving and `vllm
 * serve` use theirs. With --rate and --duration it replays a Poisson trace against the wall clock (--trace FILE
 * replays a JSONL file instead), with a progress line on stderr, then prints TTFT, TPOT, end-to-end latency,
 * throughput, KV memory and preemptions; Ctrl-C stops at the next iteration and prints what ran. With --http it
 * serves OpenAI-style completions (kernel/serve/http.ts) until Ctrl-C or SIGTERM.
 */
import { basename, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ServelabError } from '../../engine/index.ts';
import type { PoolLayout } from '../../engine/kv/pool_cache.ts';
import { DATASETS, loadTrace, poissonTrace, ServingEngine, type Batching, type Dataset, type EngineOptions, type Preemption, type ServeMetrics, type ServeStepLog as StepLog, type TraceRequest } from '../../engine/serve/index.ts';
import { formatBytes } from '../display/format.ts';
import { startCompletionServer } from '../serve/http.ts';
import { numberOption, openModel, parseFormat } from './generate.ts';

const LAYOUTS: readonly PoolLayout[] = ['paged', 'contiguous', 'token'];
const BATCHINGS: readonly Batching[] = ['continuous', 'static'];
const PREEMPTIONS: readonly Preemption[] = ['recompute', 'swap'];
/** Options that shape a trace run; an HTTP server has no trace to shape. */
const TRACE_ONLY = ['rate', 'duration', 'trace', 'dataset', 'price-per-hour', 'json'] as const;

/** One of `choices`, or an error naming the flag and listing them. */
function choiceOption<T extends string>(flag: string, text: string | undefined, choices: readonly T[]): T | undefined {
  if (text === undefined) return undefined;
  if (!(choices as readonly string[]).includes(text)) throw new ServelabError(`${flag} must be one of ${choices.join(', ')}, got ${JSON.stringify(text)}`);
  return text as T;
}

/** `HOST:PORT`, `[v6]:PORT` or a bare `PORT` (on 127.0.0.1); port 0 picks a free one. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d+)$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ServelabError(`--http must be HOST:PORT (port 0 to 65535; 0 picks a free one), got ${JSON.stringify(text)}`);
  return { host: m[1]?.replace(/^\[|\]$/g, '') ?? '127.0.0.1', port };
}

type Values = Record<string, string | boolean | undefined>;

/** The engine's settings from the command line; every flag is checked here, so an error names the flag. */
function engineOptions(v: Values): EngineOptions {
  const str = (k: string) => v[k] as string | undefined;
  const layout = choiceOption('--layout', str('layout'), LAYOUTS) ?? 'paged';
  const blockSize = numberOption('--block-size', str('block-size'), { integer: true, min: 1 });
  if (blockSize !== undefined && layout !== 'paged') throw new ServelabError(`--block-size is the paged layout's; --layout ${layout} has none`);
  const budgetMiB = numberOption('--budget', str('budget'), { above: 0 }) ?? 8;
  const opts: EngineOptions = {
    layout,
    budgetBytes: Math.floor(budgetMiB * 2 ** 20),
    batching: choiceOption('--batching', str('batching'), BATCHINGS) ?? 'continuous',
    preemption: choiceOption('--preemption', str('preemption'), PREEMPTIONS) ?? 'recompute',
    maxNumSeqs: numberOption('--max-seqs', str('max-seqs'), { integer: true, min: 1 }) ?? 32,
    chunkedPrefill: numberOption('--chunked-prefill', str('chunked-prefill'), { integer: true, min: 0 }) ?? 0,
    seed: numberOption('--seed', str('seed'), { integer: true, min: 0 }) ?? 0,
    temperature: numberOption('--temperature', str('temperature'), { min: 0 }) ?? 0,
  };
  if (blockSize !== undefined) opts.blockSize = blockSize;
  return opts;
}

/** A trace file's requests; each unusable line is reported on stderr by its number and the rest run. */
function readTraceFile(file: string): TraceRequest[] {
  const { requests, errors } = loadTrace(pathToFileURL(resolve(file)));
  for (const e of errors) process.stderr.write(`${file}:${e.line}: ${e.reason}; line skipped\n`);
  if (requests.length === 0) throw new ServelabError(`${file} holds no usable request${errors.length ? ` (${errors.length} lines skipped)` : ''}`);
  // The engine serves one sequence per request: n parallel samples run as n requests with the same prompt.
  return requests.flatMap((r) => (r.n === undefined || r.n === 1 ? [r] : Array.from({ length: r.n }, (_, k) => ({ ...r, id: `${r.id}#${k}`, n: 1 }))));
}

/**
 * The progress line: requests finished of the total, decode tokens/s, sequences running and KV memory in use. On a
 * terminal it is rewritten in place at most 10 times a second; elsewhere (logs, pipes) a line a second.
 */
function progress(trace: readonly TraceRequest[]): { onStep: (log: StepLog, engine: ServingEngine) => void; end: (finished: number, engine: ServingEngine) => void } {
  const tty = process.stderr.isTTY;
  const arrivals = trace.map((r) => r.arrivalMs).sort((a, b) => a - b);
  const t0 = performance.now();
  let decoded = 0;
  let last = -Infinity;
  let shown = false;
  return {
    onStep(log, engine) {
      decoded += log.decodeSeqs;
      const now = performance.now();
      if (now - last < (tty ? 100 : 1000)) return;
      last = now;
      // Requests that arrived by this iteration and are no longer queued or running have finished (or were rejected).
      let arrived = 0;
      while (arrived < arrivals.length && arrivals[arrived] <= log.tMs) arrived++;
      const done = arrived - log.running - log.waiting - log.swapped;
      const rate = decoded / ((now - t0) / 1000);
      show(done, rate, log, engine.cache.pool.bytes);
    },
    end(finished, engine) {
      const log = engine.steps.at(-1);
      if (log) show(finished, decoded / ((performance.now() - t0) / 1000), log, engine.cache.pool.bytes);
      if (tty && shown) process.stderr.write('\n');
    },
  };
  function show(done: number, rate: number, log: StepLog, poolBytes: number): void {
    const width = 20;
    const filled = Math.round((width * done) / trace.length);
    const line = `  [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${trace.length} requests  ${rate.toFixed(0)} decode tokens/s  ${log.running} running  ${log.waiting} waiting  KV ${formatBytes(log.usedBytes)} used of ${formatBytes(poolBytes)}`;
    process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
    shown = true;
  }
}

/**
 * One short request through the engine, so that the timed run does not pay for building the model's graphs: a
 * prompt of several tokens (a one-token prefill has the shape of a decode step and builds only that graph), then a
 * decode step.
 */
async function warmUp(engine: ServingEngine): Promise<void> {
  const n = Math.min(8, engine.cache.maxSeqLen - 2);
  await engine.replay([{ id: 'warm-up', arrivalMs: 0, prompt: Array.from({ length: n }, (_, i) => i % engine.model.cfg.vocabSize), maxTokens: 2 }]);
  engine.steps.length = 0;
}

const round = (x: number, digits = 3) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : null);
const pct = (p: { p50: number; p99: number; mean: number }) => ({ p50: round(p.p50), p99: round(p.p99), mean: round(p.mean) });

/** The readable report: the setting, latency percentiles, then throughput, memory, preemptions and cost. */
function printTable(m: ServeMetrics, setting: string, interrupted: boolean): void {
  const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const rows = [
    ['', 'p50', 'p99', 'mean'],
    ['TTFT (ms)', ...[m.ttftMs.p50, m.ttftMs.p99, m.ttftMs.mean].map(ms)],
    ['TPOT (ms)', ...[m.tpotMs.p50, m.tpotMs.p99, m.tpotMs.mean].map(ms)],
    ['end to end (ms)', ...[m.e2eMs.p50, m.e2eMs.p99, m.e2eMs.mean].map(ms)],
  ];
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = [
    `${interrupted ? 'interrupted: ' : ''}${m.completed} of ${m.requests} requests completed${m.rejected ? `, ${m.rejected} rejected` : ''} in ${m.durationS.toFixed(2)} s (${setting})`,
    '',
    ...rows.map((r) => r.map((x, c) => (c === 0 ? x.padEnd(w[c]) : x.padStart(w[c] + 2))).join('')),
    '',
    `throughput    ${m.throughputTokS.toFixed(1)} output tokens/s, ${m.requestsPerS.toFixed(2)} requests/s`,
    `KV memory     peak ${formatBytes(m.kv.peakUsedBytes)} holding tokens, ${formatBytes(m.kv.peakReservedBytes)} reserved, of a ${formatBytes(m.kv.poolBytes)} pool`,
    `preemptions   ${m.preemptions}${m.swap.outBytes + m.swap.inBytes > 0 ? ` (swapped ${formatBytes(m.swap.outBytes)} out, ${formatBytes(m.swap.inBytes)} in)` : ''}`,
  ];
  if (m.costPer1MTokens !== null) lines.push(`cost          $${m.costPer1MTokens.toFixed(2)} per million output tokens`);
  console.log(lines.join('\n'));
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      rate: { type: 'string' },
      duration: { type: 'string' },
      trace: { type: 'string' },
      dataset: { type: 'string' },
      http: { type: 'string' },
      layout: { type: 'string' },
      batching: { type: 'string' },
      budget: { type: 'string' },
      'block-size': { type: 'string' },
      'max-seqs': { type: 'string' },
      preemption: { type: 'string' },
      'chunked-prefill': { type: 'string' },
      seed: { type: 'string' },
      temperature: { type: 'string' },
      'price-per-hour': { type: 'string' },
      model: { type: 'string' },
      format: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const listen = values.http === undefined ? null : parseListen(values.http);
  if (listen) {
    const extra = TRACE_ONLY.find((k) => values[k] !== undefined);
    if (extra) throw new ServelabError(`--${extra} is for a trace run; --http serves requests as they come`);
  } else if (values.trace !== undefined) {
    const extra = (['rate', 'duration', 'dataset'] as const).find((k) => values[k] !== undefined);
    if (extra) throw new ServelabError(`--${extra} builds a Poisson trace; --trace replays a file: give one or the other`);
  } else if (values.rate === undefined || values.duration === undefined) {
    throw new ServelabError(`${values.rate === undefined ? '--rate R' : '--duration S'} is required: give --rate and --duration (a Poisson trace), --trace FILE or --http HOST:PORT`);
  }
  const rate = numberOption('--rate', values.rate, { above: 0 });
  const durationS = numberOption('--duration', values.duration, { above: 0 });
  const dataset: Dataset = choiceOption('--dataset', values.dataset, Object.keys(DATASETS) as Dataset[]) ?? 'sharegpt';
  const pricePerHour = numberOption('--price-per-hour', values['price-per-hour'], { min: 0 });
  const engineOpts = engineOptions(values);
  const format = parseFormat(values.format ?? 'fp32');
  const fileTrace = values.trace === undefined ? null : readTraceFile(values.trace);

  const { dev, model, dir } = await openModel(values.model, format);
  try {
    // A trace fixes every output length; a client expects a completion to end at the model's end of text.
    const engine = await ServingEngine.create(model, { ...engineOpts, ignoreEos: listen === null });
    try {
      const setting = `${engineOpts.layout} KV${engineOpts.layout === 'paged' ? ` (blocks of ${engine.cache.blockSize})` : ''}, ${engineOpts.batching} batching, ${engineOpts.preemption} preemption${engineOpts.chunkedPrefill ? `, prefill chunks of ${engineOpts.chunkedPrefill}` : ''}, ${format}`;
      await warmUp(engine);
      if (listen) return await serveHttp(engine, listen, basename(dir), engineOpts.temperature ?? 0, setting);

      const trace = fileTrace ?? poissonTrace({ rate: rate!, durationS: durationS!, dataset, context: engine.cache.maxSeqLen, seed: engineOpts.seed ?? 0 });
      if (trace.length === 0) throw new ServelabError(`--rate ${rate} for --duration ${durationS} s drew no request; raise either`);
      const source = fileTrace ? `${values.trace}` : `${dataset}-like lengths, ${rate} requests/s for ${durationS} s, seed ${engineOpts.seed}`;
      process.stderr.write(`serving ${trace.length} requests (${source}) with ${dir}: ${setting}\n`);
      const interrupt = new AbortController();
      // The first Ctrl-C ends the run at the next iteration; with the handler gone, a second one ends the process.
      const onSigint = () => interrupt.abort();
      process.once('SIGINT', onSigint);
      const bar = progress(trace);
      let result;
      try {
        result = await engine.replay(trace, { signal: interrupt.signal, onStep: bar.onStep, pricePerHour });
      } finally {
        process.removeListener('SIGINT', onSigint);
      }
      bar.end(result.records.filter((r) => r.finishReason !== 'aborted').length, engine);
      const { metrics: m, records, interrupted } = result;
      const rejected = records.filter((r) => r.finishReason === 'rejected');
      for (const r of rejected.slice(0, 10)) process.stderr.write(`request ${r.id} rejected: ${r.error}\n`);
      if (rejected.length > 10) process.stderr.write(`... and ${rejected.length - 10} more rejected\n`);
      if (values.json) {
        const out = {
          requests: m.requests,
          completed: m.completed,
          rejected: m.rejected,
          interrupted,
          throughputTokS: round(m.throughputTokS),
          requestsPerS: round(m.requestsPerS),
          ttftMs: pct(m.ttftMs),
          tpotMs: pct(m.tpotMs),
          e2eMs: pct(m.e2eMs),
          kv: m.kv,
          preemptions: m.preemptions,
          swap: m.swap,
          durationS: round(m.durationS),
          costPer1MTokens: m.costPer1MTokens === null ? null : round(m.costPer1MTokens, 4),
          layout: engineOpts.layout,
          batching: engineOpts.batching,
          preemption: engineOpts.preemption,
          format,
          model: dir,
          trace: fileTrace ? { file: values.trace } : { dataset, rate, durationS, seed: engineOpts.seed },
        };
        console.log(JSON.stringify(out, null, 2));
      } else printTable(m, setting, interrupted);
      return 0;
    } finally {
      engine.dispose();
    }
  } finally {
    model.dispose();
    await dev.dispose();
  }
}

/** Serves completions until SIGINT or SIGTERM; requests in flight then end with a 503 and the command exits 0. */
async function serveHttp(engine: ServingEngine, listen: { host: string; port: number }, modelName: string, temperature: number, setting: string): Promise<number> {
  const server = await startCompletionServer(engine, { ...listen, modelName, temperature, onRequest: (line) => process.stderr.write(`${line}\n`) });
  let onSignal = () => {};
  const stopped = new Promise<string>((resolve) => {
    onSignal = () => resolve('stopping');
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  process.stderr.write(`servelab serve: listening on ${server.url} (model ${modelName}: ${setting}); POST /v1/completions, GET /v1/models, GET /health; Ctrl-C stops\n`);
  try {
    await Promise.race([stopped, server.done]);
    process.stderr.write('servelab serve: stopping\n');
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await server.close();
  }
  await server.done;
  return 0;
}
