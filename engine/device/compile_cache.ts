/**
 * The device's one compile cache: graph structure -> compiled session, bounded by bytes and counted by the device's
 * memory tracker under the tag 'compiled' (nano-vllm captures a graph per batch size; here one session serves every
 * size, so the cache holds one entry per structure). A session built from a constant is dropped as soon as that
 * tensor is written or disposed, and never runs again.
 */
import { compileKey, type Backend, type CompileOptions, type Executable } from '../backends/backend.ts';
import type { Graph } from '../graph/graph.ts';
import type { Allocation, MemoryTracker } from '../memory/tracker.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { OutOfMemoryError } from '../errors.ts';

interface Entry {
  readonly key: string;
  readonly exe: Executable;
  /** Constant tensor ids and the versions the session was built from. */
  readonly constants: readonly { id: number; version: number; ref: WeakRef<Tensor> }[];
  alloc: Allocation;
  /** Runs in flight: an entry is never released under a running session. */
  busy: number;
  /** Dropped from the cache while running: released when its last run ends. */
  dropped: boolean;
  /** The largest total of feed elements run so far; a larger run may grow the session's arena. */
  maxFeedElements: number;
}

export interface CompileStats {
  /** Sessions alive now. */
  sessions: number;
  /** Sessions created since the device was made (a cache miss each). */
  sessionsCreated: number;
  /** Sessions dropped: evicted for room, or stale after a constant changed. */
  sessionsReleased: number;
  /** Bytes the live sessions hold, as counted under 'compiled'. */
  sessionBytes: number;
}

/**
 * The resident set. Lowering a graph and running it leave JS objects and dropped buffers behind, and whether they are
 * still resident when the set is read depends on when the collector last ran, not on the session: in a process run
 * with --expose-gc (the memory benchmarks are), each reading follows a full collection, so the session's own bytes
 * are what is measured. Elsewhere the collector is left to its own timing, and a reading may be off by the garbage
 * of the moment.
 */
const collect = (globalThis as { gc?: () => void }).gc;
const rss = () => {
  collect?.();
  return process.memoryUsage.rss();
};

/** rss() once buffers found dead have been released too: V8 frees a large buffer's memory after the collection. */
const settledRss = async () => {
  if (collect) {
    collect();
    await new Promise((r) => setImmediate(r));
  }
  return rss();
};

/**
 * Every compile in this thread, one at a time: a session's memory is read from the process's resident set, which a
 * compile on another device running meanwhile would grow too (two cpu devices compiling at once each counted the
 * other's session; a webgpu compile allocates host memory as well).
 */
const compiles: { chain: Promise<unknown> } = { chain: Promise.resolve() };

export class CompileCache {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Entry>>();
  private readonly byTensor = new Map<number, Set<string>>();
  private created = 0;
  private released = 0;

  constructor(
    private readonly backend: Backend,
    private readonly memory: MemoryTracker,
    /** At most this many bytes of sessions stay cached; least recently used go first. */
    public maxBytes: number,
  ) {}

  /** The entry for a graph (compiled with these options), compiled on a miss; a hit is marked most recently used. */
  async get(graph: Graph, opts: CompileOptions = {}): Promise<Entry> {
    const key = graph.signature + compileKey(opts);
    const hit = this.entries.get(key);
    if (hit && !hit.dropped && this.fresh(hit)) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    if (hit) this.drop(hit);
    let p = this.pending.get(key);
    if (!p) {
      p = this.create(graph, key, opts).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  /** Runs a compiled entry, measuring the process's growth when the feeds are larger than any before. */
  async run<T>(e: Entry, feedElements: number, outputBytes: number, fn: () => Promise<T>): Promise<T> {
    e.busy++;
    try {
      if (feedElements <= e.maxFeedElements || !this.backend.measuresHostMemory) return await fn();
      const before = await settledRss();
      const out = await fn();
      e.maxFeedElements = feedElements;
      // Whatever the process kept beyond the outputs (which are tensors, counted as such) is the session's arena.
      const grown = (await settledRss()) - before - outputBytes;
      if (grown > 0 && !e.alloc.freed) {
        this.resize(e, e.alloc.bytes + grown);
        this.trim(e);
      }
      return out;
    } finally {
      e.busy--;
      if (e.dropped && e.busy === 0) this.release(e);
    }
  }

  /** A constant was written or disposed: every session built from it is released now. */
  invalidate(tensorId: number): void {
    const keys = this.byTensor.get(tensorId);
    if (!keys) return;
    for (const k of [...keys]) {
      const e = this.entries.get(k);
      if (e) this.drop(e);
    }
  }

  stats(): CompileStats {
    let bytes = 0;
    for (const e of this.entries.values()) bytes += e.alloc.bytes;
    return { sessions: this.entries.size, sessionsCreated: this.created, sessionsReleased: this.released, sessionBytes: bytes };
  }

  /** Releases every session that is not running. */
  clear(): void {
    for (const e of [...this.entries.values()]) this.drop(e);
  }

  private fresh(e: Entry): boolean {
    for (const c of e.constants) {
      const t = c.ref.deref();
      if (!t || t.disposed || t.version !== c.version) return false;
    }
    return true;
  }

  private async create(graph: Graph, key: string, opts: CompileOptions): Promise<Entry> {
    const run = compiles.chain.then(() => this.compile(graph, key, opts));
    compiles.chain = run.catch(() => undefined);
    return run;
  }

  private async compile(graph: Graph, key: string, opts: CompileOptions): Promise<Entry> {
    const estimate = this.backend.estimateBytes(graph);
    this.makeRoom(estimate, graph.name);
    await this.backend.ready?.();
    // What building the session left resident, except the encoded model itself (a copy of every constant, freed whole
    // once the session exists). Collecting (--expose-gc): from the lowered model to the session, each reading after a
    // full collection, the model held across both; then it is let go and collected before anything else is measured
    // (V8 frees a large buffer's memory after the collection that finds it dead, so it must not fall into the first
    // run's reading). Otherwise: from before lowering, whose temporaries the allocator mostly keeps, less the model.
    let before = rss();
    let model: Uint8Array | null = null;
    const exe = await this.backend.compile(graph, opts, {
      lowered: (m) => {
        model = m;
        if (collect) before = rss();
      },
    });
    const after = rss();
    const modelBytes = (model as Uint8Array | null)?.byteLength ?? 0;
    model = null;
    if (collect) {
      collect();
      await new Promise((r) => setImmediate(r));
    }
    const measured = !this.backend.measuresHostMemory ? 0 : after - before - (collect ? 0 : modelBytes);
    const bytes = Math.max(estimate, measured);
    let alloc: Allocation;
    try {
      this.makeRoom(bytes, graph.name);
      alloc = this.memory.allocate(bytes, 'compiled', `session ${graph.name}`);
    } catch (e) {
      await exe.release();
      throw e;
    }
    const constants = [...graph.constants.values()].map((t) => ({ id: t.id, version: t.version, ref: new WeakRef(t) }));
    const e: Entry = { key, exe, constants, alloc, busy: 0, dropped: false, maxFeedElements: -1 };
    this.entries.set(e.key, e);
    for (const c of constants) {
      let s = this.byTensor.get(c.id);
      if (!s) this.byTensor.set(c.id, (s = new Set()));
      s.add(e.key);
    }
    this.created++;
    return e;
  }

  /**
   * Frees least recently used sessions until `bytes` more fit both this cache's bound and the device's budget;
   * throws OutOfMemoryError (and keeps every session) when even an empty cache would not make room.
   */
  private makeRoom(bytes: number, what: string): void {
    const idle = [...this.entries.values()].filter((e) => e.busy === 0);
    const freeable = idle.reduce((s, e) => s + e.alloc.bytes, 0);
    const cached = this.stats().sessionBytes;
    const overBudget = () => !this.memory.canAllocate(bytes);
    const overCache = () => this.stats().sessionBytes + bytes > this.maxBytes;
    if (this.memory.budget !== null && this.memory.live - freeable + bytes > this.memory.budget) {
      throw new OutOfMemoryError(this.memory.device, bytes, this.memory.live, this.memory.budget, `compiled (session ${what}; ${cached} B of sessions cached)`);
    }
    for (const e of idle) {
      if (!overBudget() && !overCache()) break;
      this.drop(e);
    }
  }

  /** After a session grew: the least recently used others go until the cache is within its bound again. */
  /** A new bound, applied at once: least recently used idle sessions go until the cache fits it. */
  setMaxBytes(bytes: number): void {
    this.maxBytes = bytes;
    this.trim(null);
  }

  private trim(keep: Entry | null): void {
    for (const e of [...this.entries.values()]) {
      if (this.stats().sessionBytes <= this.maxBytes) return;
      if (e !== keep && e.busy === 0) this.drop(e);
    }
  }

  private resize(e: Entry, bytes: number): void {
    this.memory.free(e.alloc);
    // Past the budget the growth is still real: record it, so the chart and the next allocation see it.
    e.alloc = this.memory.allocate(bytes, 'compiled', e.alloc.label, { evenOverBudget: true });
  }

  /** Out of the cache at once (never looked up again); released now, or when its last run ends. */
  private drop(e: Entry): void {
    if (this.entries.get(e.key) !== e) return;
    this.entries.delete(e.key);
    for (const c of e.constants) {
      const s = this.byTensor.get(c.id);
      s?.delete(e.key);
      if (s?.size === 0) this.byTensor.delete(c.id);
    }
    e.dropped = true;
    if (e.busy === 0) this.release(e);
  }

  private release(e: Entry): void {
    if (e.alloc.freed) return;
    this.memory.free(e.alloc);
    this.released++;
    void e.exe.release();
  }
}
