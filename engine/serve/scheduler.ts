/**
 * The scheduler of a serving loop: at each iteration it decides which sequences run and which wait, with the seams of
 * nano-vllm and vLLM: the scheduler decides, the KV cache manager (a PoolKvCache) owns the memory, and the model
 * runner alone touches tensors. Nothing here runs the model: `schedule()` says what to run, `commit()` takes the tokens
 * that came out.
 *
 * Continuous batching (Orca's iteration-level scheduling, vLLM): sequences join and leave at every iteration; a
 * waiting request is admitted when the cache can hold its prompt; when a decode step cannot get memory, the most
 * recently admitted sequence is preempted, by recomputation (its memory freed, its prompt and output so far prefilled
 * again later) or by swapping (its keys and values copied to host memory, and back when memory frees up: the lecture's
 * CPU offloading). Static batching (before Orca, as FasterTransformer runs a batch): a batch is admitted when the last
 * one has ended, with memory for every member's whole sequence, and every member is computed at every step until the
 * longest ends; a member that has finished is still computed (its token thrown away, its cache cut back), as a
 * fixed-shape batch is.
 */
import type { SeqId } from '../kv/block_manager.ts';
import type { StepSeq } from '../kv/kv_cache.ts';
import type { PoolKvCache, SwappedKv } from '../kv/pool_cache.ts';
import { ServelabError } from '../errors.ts';

export type Batching = 'continuous' | 'static';
export type Preemption = 'recompute' | 'swap';

export interface SchedulerOptions {
  batching?: Batching;
  /** Sequences running at once (vLLM's max_num_seqs). Default 32. */
  maxNumSeqs?: number;
  /** Prompt tokens prefilled in one iteration (max_num_batched_tokens). Default the cache's longest sequence. */
  maxBatchedTokens?: number;
  /** Prefill prompts in chunks of at most this many tokens, in the same iteration as the running sequences' decode. */
  chunkedPrefill?: number;
  preemption?: Preemption;
}

export type SeqStatus = 'waiting' | 'running' | 'swapped' | 'finished';

/** A request as the scheduler tracks it. */
export class Sequence {
  status: SeqStatus = 'waiting';
  readonly output: number[] = [];
  /** Tokens whose keys and values are in the cache. */
  computed = 0;
  preemptions = 0;
  swapped: SwappedKv | null = null;
  /** Static batching: done, still computed with its batch (padding) until the batch ends. */
  idle = false;
  /** Ended before maxTokens (its end-of-sequence token). */
  stopped = false;

  constructor(
    readonly id: SeqId,
    readonly prompt: readonly number[],
    readonly maxTokens: number,
  ) {}

  /** The sequence so far: prompt and output. */
  get tokens(): number[] {
    return [...this.prompt, ...this.output];
  }

  get length(): number {
    return this.prompt.length + this.output.length;
  }

  /** Decoding: everything but the last token is cached, and that token is the step's input. */
  get decoding(): boolean {
    return this.output.length > 0 && this.computed === this.length - 1;
  }

  get done(): boolean {
    return this.stopped || this.output.length >= this.maxTokens;
  }
}

/** One iteration's work: prompt chunks to prefill, and one token of decode for each decoding sequence. */
export interface ScheduledStep {
  /** `last`: the chunk ends the sequence, so its logits give the sequence's next token. */
  prefill: { seq: Sequence; tokens: number[]; last: boolean }[];
  decode: Sequence[];
  preempted: Sequence[];
  swappedIn: Sequence[];
  /** Bytes copied to (out) and from (in) host memory by swapping in this iteration. */
  swapBytes: { out: number; in: number };
}

export class Scheduler {
  readonly batching: Batching;
  readonly maxNumSeqs: number;
  readonly maxBatchedTokens: number;
  readonly chunk: number;
  readonly preemption: Preemption;
  private readonly waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private readonly swappedQ: Sequence[] = [];

  constructor(
    private readonly cache: PoolKvCache,
    opts: SchedulerOptions = {},
  ) {
    this.batching = opts.batching ?? 'continuous';
    this.maxNumSeqs = opts.maxNumSeqs ?? 32;
    this.maxBatchedTokens = opts.maxBatchedTokens ?? cache.maxSeqLen;
    this.chunk = opts.chunkedPrefill ?? 0;
    this.preemption = opts.preemption ?? 'recompute';
    const count = (what: string, v: number, min: number) => {
      if (!Number.isInteger(v) || v < min) throw new ServelabError(`Scheduler: ${what} must be an integer >= ${min}, got ${v}`);
    };
    count('maxNumSeqs', this.maxNumSeqs, 1);
    count('maxBatchedTokens', this.maxBatchedTokens, 1);
    count('chunkedPrefill', this.chunk, 0);
    if (!['continuous', 'static'].includes(this.batching)) throw new ServelabError(`Scheduler: batching must be 'continuous' or 'static', got ${JSON.stringify(this.batching)}`);
    if (!['recompute', 'swap'].includes(this.preemption)) throw new ServelabError(`Scheduler: preemption must be 'recompute' or 'swap', got ${JSON.stringify(this.preemption)}`);
  }

  /** Why a request can never run here, or null. */
  rejectReason(prompt: readonly number[], maxTokens: number): string | null {
    if (prompt.length === 0) return 'the prompt is empty';
    if (!Number.isInteger(maxTokens) || maxTokens < 1) return `max_tokens must be a positive integer, got ${maxTokens}`;
    const n = prompt.length + maxTokens;
    if (n > this.cache.maxSeqLen) return `${prompt.length} prompt tokens + ${maxTokens} to generate exceed the longest sequence the cache takes (${this.cache.maxSeqLen})`;
    if (!this.cache.canReserve([this.reserveFor(n)], true)) return `${n} tokens do not fit the whole KV pool`;
    if (this.chunk === 0 && n > this.maxBatchedTokens) return `${n} tokens (a prompt, with what it may have to recompute) exceed maxBatchedTokens ${this.maxBatchedTokens}; use chunked prefill`;
    return null;
  }

  /** Queues a request; throws a ServelabError naming the reason if it can never run. */
  add(seq: Sequence): void {
    const why = this.rejectReason(seq.prompt, seq.maxTokens);
    if (why) throw new ServelabError(`request ${String(seq.id)} can never run: ${why}`);
    this.waiting.push(seq);
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  get numSwapped(): number {
    return this.swappedQ.length;
  }

  hasWork(): boolean {
    return this.waiting.length + this.running.length + this.swappedQ.length > 0;
  }

  /** Decides the next iteration; preemption and swapping happen here, allocation in the runner's forward calls. */
  async schedule(): Promise<ScheduledStep> {
    const step: ScheduledStep = { prefill: [], decode: [], preempted: [], swappedIn: [], swapBytes: { out: 0, in: 0 } };
    if (this.batching === 'static') return this.scheduleStatic(step);
    // Decode first: each decoding sequence needs room for one more token; the latest admitted gives way until it fits.
    let decode = this.running.filter((s) => s.decoding);
    while (decode.length > 0 && !this.cache.fits(this.asStep(decode, []))) {
      const victim = this.running[this.running.length - 1];
      await this.preempt(victim, step);
      decode = decode.filter((s) => s !== victim);
    }
    // Swapped sequences come back before new ones are admitted, when their memory is free again.
    while (step.preempted.length === 0 && this.swappedQ.length > 0 && this.running.length < this.maxNumSeqs) {
      const s = this.swappedQ[0];
      // Room for what it had cached and the token it decodes next.
      if (!this.cache.fits(this.asStep(decode, [{ seq: s.id, tokens: s.tokens.slice(0, s.computed + 1) }]))) break;
      this.swappedQ.shift();
      step.swapBytes.in += await this.cache.swapIn(s.id, s.tokens.slice(0, s.computed), s.swapped!);
      s.swapped = null;
      s.status = 'running';
      this.running.push(s);
      step.swappedIn.push(s);
      decode.push(s);
    }
    // Prefill: prompts still being chunked, then waiting requests in arrival order, within the token budget and memory.
    let budget = this.maxBatchedTokens;
    const prefill: ScheduledStep['prefill'] = [];
    const chunkOf = (s: Sequence) => {
      const left = s.length - s.computed;
      return this.chunk > 0 ? Math.min(left, this.chunk, budget) : left <= budget ? left : 0;
    };
    const tryPrefill = (s: Sequence): boolean => {
      const n = chunkOf(s);
      if (n === 0) return false;
      const chunk = { seq: s, tokens: s.tokens.slice(s.computed, s.computed + n), last: s.computed + n === s.length };
      if (!this.cache.fits(this.asStep(this.chunk > 0 ? decode : [], [...prefill, chunk].map((p) => ({ seq: p.seq.id, tokens: p.tokens }))))) return false;
      prefill.push(chunk);
      budget -= n;
      return true;
    };
    for (const s of this.running.filter((x) => !x.decoding)) if (!tryPrefill(s)) break;
    while (step.preempted.length === 0 && this.swappedQ.length === 0 && this.waiting.length > 0 && this.running.length < this.maxNumSeqs && budget > 0) {
      const s = this.waiting[0];
      if (!tryPrefill(s)) break;
      this.waiting.shift();
      s.status = 'running';
      this.running.push(s);
    }
    step.prefill = prefill;
    // Without chunked prefill an iteration prefills or decodes (nano-vllm, vLLM v0), prompts first for their TTFT.
    step.decode = prefill.length > 0 && this.chunk === 0 ? [] : decode;
    return step;
  }

  /** Takes an iteration's results: the token each finished prefill and each decode produced. Returns those done. */
  commit(step: ScheduledStep, next: ReadonlyMap<Sequence, number>): Sequence[] {
    for (const p of step.prefill) p.seq.computed += p.tokens.length;
    for (const s of step.decode) {
      // A finished member of a static batch was computed as padding: its token is dropped and its cache cut back.
      if (s.idle) this.cache.truncate(s.id, s.computed);
      else s.computed++;
    }
    for (const [s, t] of next) if (!s.idle) s.output.push(t);
    const done = this.running.filter((s) => s.done && !s.idle);
    if (this.batching === 'static') {
      for (const s of done) s.idle = true;
      if (this.running.every((s) => s.idle)) {
        for (const s of this.running) this.finish(s);
        this.running = [];
      }
      return done;
    }
    for (const s of done) this.finish(s);
    this.running = this.running.filter((s) => s.status === 'running');
    return done;
  }

  /** Drops one sequence wherever it is (its client went away), freeing its memory. Between iterations only. */
  cancel(s: Sequence): void {
    const before = this.running.length + this.waiting.length + this.swappedQ.length;
    this.running = this.running.filter((x) => x !== s);
    for (const q of [this.waiting, this.swappedQ]) {
      const i = q.indexOf(s);
      if (i >= 0) q.splice(i, 1);
    }
    if (before === this.running.length + this.waiting.length + this.swappedQ.length) return;
    if (this.cache.has(s.id)) this.cache.free(s.id);
    s.swapped = null;
    s.status = 'finished';
  }

  /** Drops every sequence (an interrupted run), freeing their memory; returns them. */
  abort(): Sequence[] {
    const all = [...this.running, ...this.waiting, ...this.swappedQ];
    for (const s of this.running) if (this.cache.has(s.id)) this.cache.free(s.id);
    for (const s of this.swappedQ) s.swapped = null;
    this.running = [];
    this.waiting.length = 0;
    this.swappedQ.length = 0;
    return all;
  }

  private asStep(decode: readonly Sequence[], prefill: readonly StepSeq[]): StepSeq[] {
    return [...decode.map((s) => ({ seq: s.id, tokens: [s.tokens[s.computed]] })), ...prefill];
  }

  private finish(s: Sequence): void {
    if (this.cache.has(s.id)) this.cache.free(s.id);
    s.status = 'finished';
  }

  /** Static batching: a new batch only when the last has ended, with memory for each member's whole sequence. */
  private scheduleStatic(step: ScheduledStep): ScheduledStep {
    if (this.running.length > 0) {
      // A finished member is computed as padding while it has room for the one token it adds and drops.
      step.decode = this.running.filter((s) => !s.idle || s.length < this.cache.maxSeqLen);
      return step;
    }
    let budget = this.maxBatchedTokens;
    const batch: Sequence[] = [];
    while (this.waiting.length > 0 && batch.length < this.maxNumSeqs && this.waiting[0].prompt.length <= budget) {
      const s = this.waiting[0];
      if (!this.cache.canReserve([...batch, s].map((x) => this.reserveFor(x.prompt.length + x.maxTokens)))) break;
      batch.push(this.waiting.shift()!);
      budget -= s.prompt.length;
    }
    for (const s of batch) {
      s.status = 'running';
      this.running.push(s);
      step.prefill.push({ seq: s, tokens: [...s.prompt], last: true });
    }
    return step;
  }

  /**
   * Memory a request of n tokens is given: its tokens (continuous: on demand, so only this for the pool's size); in a
   * static batch a slot more, for the padding token a finished member is computed with.
   */
  private reserveFor(n: number): number {
    return this.batching === 'static' ? Math.min(n + 1, this.cache.maxSeqLen) : n;
  }

  private async preempt(s: Sequence, step: ScheduledStep): Promise<void> {
    this.running = this.running.filter((x) => x !== s);
    s.preemptions++;
    step.preempted.push(s);
    if (this.preemption === 'swap' && s.decoding) {
      const out = await this.cache.swapOut(s.id);
      s.swapped = out;
      step.swapBytes.out += out.bytes;
      s.status = 'swapped';
      this.swappedQ.unshift(s);
      return;
    }
    if (this.cache.has(s.id)) this.cache.free(s.id);
    s.computed = 0;
    s.status = 'waiting';
    this.waiting.unshift(s);
  }
}

export type { SeqId };
