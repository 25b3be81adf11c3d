/**
 * A group of workers as devices (torch.distributed's process group, on threads): N worker threads, each with its own
 * engine device, memory tracker and budget, joined by mailboxes in shared memory for the collectives (comm.ts). The
 * main thread hands every worker the same task (`run`), reads their memory and traffic at any moment (`memory`,
 * `commStats`), and stops them all when one fails: the first error comes back as a WorkerError naming its rank, the
 * others' collectives are aborted instead of waiting for it, every worker is terminated, and nothing hangs.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { ServelabError } from '../errors.ts';
import { currentSignal } from '../abort.ts';
import { readCommStats, type CommStats } from './comm.ts';
import { GroupAbortedError, WorkerError } from './errors.ts';
import { abortGroup, allocateGroupMemory, commWords, readMemory, type GroupMemory, type WorkerMemory } from './layout.ts';
import type { FromWorker, ToWorker, WorkerInit } from './worker.ts';

export interface WorkerGroupOptions {
  /** Number of workers (ranks 0..N-1). */
  workers: number;
  /** Each worker's device kind ('cpu', 'webgpu', ...), one for all or one per rank. Default 'cpu'. */
  device?: string | readonly string[];
  /** Bytes each worker's device may hold (its own budget); null: unbounded. Default null. */
  budget?: number | null;
  /** onnxruntime threads per worker. Default: the machine's cores shared out, at least 1. */
  threads?: number;
  /** Bytes of each mailbox; longer messages go in chunks. Default 1 MiB. */
  mailboxBytes?: number;
}

const MAX_WORKERS = 64;

interface Pending {
  results: unknown[];
  left: number;
  errors: { rank: number; error: WorkerError['original'] }[];
  resolve(v: unknown[]): void;
  reject(e: Error): void;
}

export class WorkerGroup {
  private nextId = 0;
  private pending: Pending | null = null;
  private closed = false;
  private failure: Error | null = null;

  private constructor(
    private readonly workers: Worker[],
    private readonly shared: GroupMemory,
    /** The device each rank runs on, as the worker named it. */
    readonly devices: readonly string[],
  ) {}

  get size(): number {
    return this.workers.length;
  }

  static async start(opts: WorkerGroupOptions): Promise<WorkerGroup> {
    const n = opts.workers;
    if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new ServelabError(`WorkerGroup: workers must be an integer from 1 to ${MAX_WORKERS}, got ${n}`);
    const kinds = typeof opts.device === 'string' || opts.device === undefined ? Array(n).fill(opts.device ?? 'cpu') : [...opts.device];
    if (kinds.length !== n) throw new ServelabError(`WorkerGroup: ${kinds.length} devices given for ${n} workers`);
    const budget = opts.budget ?? null;
    if (budget !== null && !(budget > 0)) throw new ServelabError(`WorkerGroup: budget must be a positive number of bytes or null, got ${budget}`);
    const shared = allocateGroupMemory(n, opts.mailboxBytes ?? 2 ** 20);
    const threads = opts.threads ?? Math.max(1, Math.floor(availableParallelism() / n));
    const workers: Worker[] = [];
    try {
      const ready = kinds.map((device, rank) => {
        const init: WorkerInit = { rank, memory: shared, device, budget, threads };
        const w = new Worker(new URL('./worker_entry.mjs', import.meta.url), { workerData: init });
        workers.push(w);
        return new Promise<string>((resolve, reject) => {
          const onExit = (code: number) => reject(new ServelabError(`worker ${rank} exited (code ${code}) while starting`));
          w.once('error', reject);
          w.once('exit', onExit);
          w.once('message', (m: FromWorker) => {
            w.off('error', reject);
            w.off('exit', onExit);
            if (m.type === 'ready') resolve(m.device);
            else reject(new ServelabError(`worker ${rank}: unexpected first message ${m.type}`));
          });
        });
      });
      const devices = await Promise.all(ready);
      const group = new WorkerGroup(workers, shared, devices);
      workers.forEach((w, rank) => group.listen(w, rank));
      return group;
    } catch (e) {
      abortGroup(shared);
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
  }

  private listen(w: Worker, rank: number): void {
    w.on('message', (m: FromWorker) => {
      const p = this.pending;
      if (!p || m.type === 'ready') return;
      if (m.type === 'result') p.results[rank] = m.value;
      else {
        p.errors.push({ rank, error: m.error });
        abortGroup(this.shared);
      }
      if (--p.left === 0) this.settle();
    });
    w.on('error', (e) => this.crashed(rank, { name: e.name, message: e.message, stack: e.stack }));
    w.on('exit', (code) => {
      if (!this.closed) this.crashed(rank, { name: 'Error', message: `the worker thread exited (code ${code})` });
    });
  }

  /** A worker died outside a task (an uncaught error, an exit): the group cannot go on. */
  private crashed(rank: number, error: WorkerError['original']): void {
    if (this.closed) return;
    const p = this.pending;
    if (p) {
      p.errors.push({ rank, error });
      p.left = 0;
      this.settle();
    } else {
      this.failure = new WorkerError(rank, error);
      void this.close();
    }
  }

  private settle(): void {
    const p = this.pending!;
    this.pending = null;
    if (p.errors.length === 0) return p.resolve(p.results);
    // The first failure that is not another worker's abort is the cause; the rest only stopped because of it.
    const first = p.errors.find((e) => e.error.name !== GroupAbortedError.name) ?? p.errors[0];
    const err = new WorkerError(first.rank, first.error);
    this.failure = err;
    void this.close().then(() => p.reject(err));
  }

  /**
   * Runs `fn` of the task module on every worker, `fn(ctx, args)` with ctx = { rank, size, dev, comm, state } and
   * args the same for all or `args(rank)`; resolves to the results by rank. One run at a time. If a worker throws,
   * the group stops and this rejects with a WorkerError; an abort of the caller's cell does the same.
   */
  run<R = unknown>(module: URL | string, fn: string, args?: unknown | ((rank: number) => unknown)): Promise<R[]> {
    if (this.closed) return Promise.reject(this.failure ?? new ServelabError('WorkerGroup: the group is closed; start a new one'));
    if (this.pending) return Promise.reject(new ServelabError('WorkerGroup: a run is in progress; await it before the next'));
    const href = module instanceof URL ? module.href : module;
    const id = this.nextId++;
    const signal = currentSignal();
    return new Promise<R[]>((resolve, reject) => {
      const onAbort = () => {
        const p = this.pending;
        this.pending = null;
        this.failure = new ServelabError('WorkerGroup: the run was interrupted; the group was stopped');
        void this.close().then(() => p?.reject(signal!.reason instanceof Error ? signal!.reason : new Error(String(signal!.reason))));
      };
      this.pending = {
        results: Array(this.size),
        left: this.size,
        errors: [],
        resolve: (v) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(v as R[]);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.workers.forEach((w, rank) => {
        const a = typeof args === 'function' ? (args as (r: number) => unknown)(rank) : args;
        w.postMessage({ type: 'run', id, module: href, fn, args: a } satisfies ToWorker);
      });
    });
  }

  /** Each rank's memory now (live and peak, by tag), read from shared memory: safe while a run is in flight. */
  memory(): WorkerMemory[] {
    return this.workers.map((_, r) => readMemory(this.shared, r));
  }

  /** Bytes each rank has sent and received, per collective, since the group started. */
  commStats(): CommStats[] {
    return this.workers.map((_, r) => readCommStats(commWords(this.shared, r)));
  }

  /** Stops every worker (a pending run's collectives abort first). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    abortGroup(this.shared);
    const p = this.pending;
    this.pending = null;
    p?.reject(this.failure ?? new GroupAbortedError('WorkerGroup: the group was closed during a run'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
