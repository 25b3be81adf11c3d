/**
 * A serving engine: requests in, tokens out, the real model run at every iteration (nano-vllm's LLMEngine). The
 * scheduler decides each iteration, the pooled KV cache owns the memory, and this file is the model runner: it runs
 * the iteration's prefill chunks and decode tokens through `model.forward`, picks each sequence's next token, and
 * records when every token came out. `replay` drives it with a trace against the wall clock; `submit` is the online
 * entry point (the HTTP server and the CLI use both).
 */
import type { LlamaModel } from '../model/llama.ts';
import type { PoolKvCache, PoolKvCacheOptions, PoolLayout } from '../kv/pool_cache.ts';
import { sampleToken } from '../model/generate.ts';
import { Rng } from '../train/rng.ts';
import { ServelabError } from '../errors.ts';
import { Scheduler, Sequence, type ScheduledStep, type SchedulerOptions } from './scheduler.ts';
import { serveMetrics, type RequestRecord, type ServeMetrics, type StepLog } from './metrics.ts';

export interface EngineOptions extends SchedulerOptions, Omit<PoolKvCacheOptions, 'layout' | 'numSlots' | 'budgetBytes'> {
  layout?: PoolLayout;
  /** KV pool size in bytes (default 8 MiB) or slots. */
  budgetBytes?: number;
  numSlots?: number;
  /** Keep generating past the model's end-of-sequence token, to the requested length (default true: traces fix lengths). */
  ignoreEos?: boolean;
  /** 0 (default) is greedy decoding. */
  temperature?: number;
  seed?: number;
}

/** A request for the engine. */
export interface EngineRequest {
  id: string;
  prompt: readonly number[];
  maxTokens: number;
}

interface Pending {
  seq: Sequence;
  record: RequestRecord;
  onToken?: (token: number) => void;
  resolve: (r: RequestRecord) => void;
}

export interface ReplayOptions {
  signal?: AbortSignal;
  onStep?: (log: StepLog, engine: ServingEngine) => void;
  pricePerHour?: number;
}

export interface ServeResult {
  records: RequestRecord[];
  steps: StepLog[];
  metrics: ServeMetrics;
  /** True when the signal stopped the run before every request finished. */
  interrupted: boolean;
}

export class ServingEngine {
  /** Iterations' logs: all of a replay; the latest ONLINE_STEPS to 2 x ONLINE_STEPS of the online loop. */
  readonly steps: StepLog[] = [];
  static readonly ONLINE_STEPS = 1024;
  private readonly pending = new Map<Sequence, Pending>();
  private t0 = performance.now();
  private readonly rng: Rng;
  private readonly temperature: number;
  private readonly eos: number | null;

  private constructor(
    readonly model: LlamaModel,
    readonly cache: PoolKvCache,
    readonly scheduler: Scheduler,
    opts: EngineOptions,
  ) {
    this.rng = new Rng(opts.seed ?? 0);
    this.temperature = opts.temperature ?? 0;
    this.eos = opts.ignoreEos === false ? (model.tokenizer?.eosId ?? null) : null;
  }

  /** A pooled KV cache on the model's device (paged, blocks of 16, 8 MiB by default) and a scheduler over it. */
  static async create(model: LlamaModel, opts: EngineOptions = {}): Promise<ServingEngine> {
    const size = opts.numSlots !== undefined ? { numSlots: opts.numSlots } : { budgetBytes: opts.budgetBytes ?? 8 * 2 ** 20 };
    const cache = await model.createCache({ ...opts, layout: opts.layout ?? 'paged', ...size });
    try {
      return new ServingEngine(model, cache, new Scheduler(cache, opts), opts);
    } catch (e) {
      cache.dispose();
      throw e;
    }
  }

  /** Milliseconds since the engine started (or the last replay began). */
  now(): number {
    return performance.now() - this.t0;
  }

  /**
   * Queues a request now. The promise resolves with its record when it finishes, or at once, with finishReason
   * 'rejected' and the reason, if it could never run here (the others are not affected).
   */
  submit(req: EngineRequest, onToken?: (token: number) => void, arrivalMs = this.now()): Promise<RequestRecord> {
    const record: RequestRecord = { id: req.id, promptTokens: req.prompt.length, output: [], arrivalMs, firstTokenMs: NaN, finishMs: NaN, tokenMs: [], preemptions: 0, finishReason: 'length' };
    for (const t of req.prompt) {
      if (!Number.isInteger(t) || t < 0 || t >= this.model.cfg.vocabSize) return Promise.resolve({ ...record, finishMs: arrivalMs, finishReason: 'rejected', error: `token ${t} is not in the vocabulary [0, ${this.model.cfg.vocabSize})` });
    }
    const why = this.scheduler.rejectReason(req.prompt, req.maxTokens);
    if (why) return Promise.resolve({ ...record, finishMs: arrivalMs, finishReason: 'rejected', error: why });
    const seq = new Sequence(req.id, req.prompt, req.maxTokens);
    this.scheduler.add(seq);
    const done = new Promise<RequestRecord>((resolve) => this.pending.set(seq, { seq, record, onToken, resolve }));
    this.wake?.();
    return done;
  }

  hasWork(): boolean {
    return this.scheduler.hasWork();
  }

  /**
   * Stops a request (its client went away): at the start of the next iteration it leaves the batch, its memory is
   * freed, and its promise resolves 'aborted' with the tokens it had. Unknown or finished ids are ignored.
   */
  cancel(id: string): void {
    this.cancelled.add(id);
    this.wake?.();
  }

  private readonly cancelled = new Set<string>();

  /** Applies cancel() between iterations, where the scheduler's state is whole. */
  private dropCancelled(): void {
    if (this.cancelled.size === 0) return;
    const t = this.now();
    for (const p of [...this.pending.values()]) {
      if (!this.cancelled.has(p.record.id)) continue;
      this.scheduler.cancel(p.seq);
      p.record.finishMs = t;
      p.record.finishReason = 'aborted';
      this.pending.delete(p.seq);
      p.resolve(p.record);
    }
    this.cancelled.clear();
  }

  /** Runs one iteration: schedule, the model's forward passes, tokens out. Null when there is nothing to do. */
  async step(): Promise<StepLog | null> {
    this.dropCancelled();
    if (!this.scheduler.hasWork()) return null;
    const tStart = this.now();
    const plan = await this.scheduler.schedule();
    const next = await this.run(plan);
    const t = this.now();
    for (const [seq, token] of next) {
      const p = this.pending.get(seq);
      if (!p || seq.idle) continue;
      p.record.tokenMs.push(t);
      if (p.record.output.length === 0) p.record.firstTokenMs = t;
      p.record.output.push(token);
      p.onToken?.(token);
    }
    // A token equal to the end-of-sequence id ends the request, unless the engine ignores it.
    if (this.eos !== null) for (const [seq, token] of next) if (token === this.eos) seq.stopped = true;
    const done = this.scheduler.commit(plan, next);
    for (const s of plan.preempted) this.pending.get(s)!.record.preemptions++;
    for (const s of done) {
      const p = this.pending.get(s)!;
      p.record.finishMs = t;
      if (this.eos !== null && p.record.output.at(-1) === this.eos) p.record.finishReason = 'eos';
      this.pending.delete(s);
      p.resolve(p.record);
    }
    const m = this.cache.memory();
    const log: StepLog = {
      tMs: tStart,
      ms: t - tStart,
      prefillTokens: plan.prefill.reduce((a, p) => a + p.tokens.length, 0),
      decodeSeqs: plan.decode.length,
      running: this.scheduler.numRunning,
      waiting: this.scheduler.numWaiting,
      swapped: this.scheduler.numSwapped,
      usedBytes: m.usedBytes,
      reservedBytes: m.reservedBytes,
      preempted: plan.preempted.length,
      swapOutBytes: plan.swapBytes.out,
      swapInBytes: plan.swapBytes.in,
    };
    this.steps.push(log);
    return log;
  }

  /**
   * Runs a trace: each request is submitted when its arrivalMs comes (the clock starts now), and iterations run while
   * there is work, sleeping until the next arrival when idle. An abort stops it at the next iteration: the unfinished
   * requests end 'aborted' and the metrics cover what ran.
   */
  async replay(trace: readonly (EngineRequest & { arrivalMs: number })[], opts: ReplayOptions = {}): Promise<ServeResult> {
    const order = [...trace].sort((a, b) => a.arrivalMs - b.arrivalMs);
    this.t0 = performance.now();
    this.steps.length = 0;
    const results: Promise<RequestRecord>[] = [];
    let i = 0;
    let interrupted = false;
    while (i < order.length || this.hasWork()) {
      if (opts.signal?.aborted) {
        interrupted = true;
        break;
      }
      const now = this.now();
      while (i < order.length && order[i].arrivalMs <= now) {
        const r = order[i++];
        results.push(this.submit(r, undefined, r.arrivalMs));
      }
      if (this.hasWork()) {
        const log = await this.step();
        if (log) opts.onStep?.(log, this);
      } else if (i < order.length) {
        await sleep(order[i].arrivalMs - now, opts.signal);
      }
    }
    if (interrupted) this.abortAll();
    const records = await Promise.all(results);
    const metrics = serveMetrics(records, this.steps, { poolBytes: this.cache.pool.bytes, pricePerHour: opts.pricePerHour, durationMs: this.now() });
    return { records, steps: [...this.steps], metrics, interrupted };
  }

  /**
   * The online loop (a server's): runs iterations while there is work and waits for `submit` when there is none,
   * until the signal aborts; then every unfinished request ends 'aborted'. onStep sees each iteration.
   */
  async serve(signal: AbortSignal, onStep?: (log: StepLog) => void): Promise<void> {
    while (!signal.aborted) {
      this.dropCancelled();
      if (!this.hasWork()) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            this.wake = null;
            signal.removeEventListener('abort', wake);
            resolve();
          };
          this.wake = wake;
          signal.addEventListener('abort', wake, { once: true });
        });
        continue;
      }
      const log = await this.step();
      if (log) onStep?.(log);
      // A server runs for days: only the latest iterations' logs are kept.
      if (this.steps.length > 2 * ServingEngine.ONLINE_STEPS) this.steps.splice(0, this.steps.length - ServingEngine.ONLINE_STEPS);
      // Lets the event loop deliver new requests and streamed tokens between iterations.
      await new Promise((r) => setImmediate(r));
    }
    this.abortAll();
  }

  /** Wakes an idle online loop when a request arrives. */
  private wake: (() => void) | null = null;

  /** Ends every unfinished request as 'aborted' and frees its memory. */
  abortAll(): void {
    const t = this.now();
    for (const s of this.scheduler.abort()) {
      const p = this.pending.get(s);
      if (!p) continue;
      p.record.finishMs = t;
      p.record.finishReason = 'aborted';
      this.pending.delete(s);
      p.resolve(p.record);
    }
  }

  dispose(): void {
    this.abortAll();
    this.cache.dispose();
  }

  /** The model runner: the iteration's prefill chunks in one forward call, its decode tokens in another. */
  private async run(plan: ScheduledStep): Promise<Map<Sequence, number>> {
    const next = new Map<Sequence, number>();
    const V = this.model.cfg.vocabSize;
    const pick = (row: Float32Array) => sampleToken(row, { temperature: this.temperature, topK: 0, topP: 1 }, this.rng);
    if (plan.prefill.length > 0) {
      const r = await this.model.forward(this.cache, plan.prefill.map((p) => ({ seq: p.seq.id, tokens: p.tokens })));
      const l = r.logits.toFloat32();
      r.logits.dispose();
      plan.prefill.forEach((p, b) => p.last && next.set(p.seq, pick(l.subarray(b * V, (b + 1) * V))));
    }
    if (plan.decode.length > 0) {
      const r = await this.model.forward(this.cache, plan.decode.map((s) => ({ seq: s.id, tokens: [s.tokens[s.computed]] })));
      const l = r.logits.toFloat32();
      r.logits.dispose();
      plan.decode.forEach((s, b) => next.set(s, pick(l.subarray(b * V, (b + 1) * V))));
    }
    if (plan.prefill.length + plan.decode.length === 0 && !plan.preempted.length && !plan.swappedIn.length) {
      throw new ServelabError('ServingEngine: the scheduler found nothing to run while requests wait (a request larger than the free memory should have been rejected)');
    }
    return next;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
