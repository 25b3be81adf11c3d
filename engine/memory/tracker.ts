/** Per-device memory tracker: every allocation and free by tag, live and peak bytes, a budget, and a rate-limited snapshot stream. */
import { OutOfMemoryError, ServelabError } from '../errors.ts';

/** compiled: what compiled sessions hold beyond the engine's tensors (baked constants, prepacked weights, arenas). */
export const MEMORY_TAGS = ['weights', 'kv', 'activations', 'grads', 'optimizer', 'compiled', 'other'] as const;
export type MemoryTag = (typeof MEMORY_TAGS)[number];
export type BytesByTag = Record<MemoryTag, number>;

export interface MemorySnapshot {
  /** Milliseconds since the tracker was created. */
  t: number;
  device: string;
  live: number;
  peak: number;
  budget: number | null;
  byTag: BytesByTag;
}

export interface Allocation {
  readonly id: number;
  readonly bytes: number;
  tag: MemoryTag;
  readonly label: string;
  freed: boolean;
}

type Listener = (s: MemorySnapshot) => void;

const zeros = (): BytesByTag => ({ weights: 0, kv: 0, activations: 0, grads: 0, optimizer: 0, compiled: 0, other: 0 });

export function assertTag(tag: string): asserts tag is MemoryTag {
  if (!(MEMORY_TAGS as readonly string[]).includes(tag)) {
    throw new ServelabError(`unknown memory tag '${tag}'; expected one of ${MEMORY_TAGS.join(', ')}`);
  }
}

export class MemoryTracker {
  private readonly t0 = performance.now();
  private nextId = 1;
  private readonly liveAllocs = new Map<number, Allocation>();
  private readonly byTag = zeros();
  private readonly peakTag = zeros();
  private liveBytes = 0;
  private peakBytes = 0;
  private budgetBytes: number | null;
  private readonly listeners = new Set<Listener>();
  private lastEmit = -Infinity;
  private pending: NodeJS.Timeout | null = null;
  private intervalMs = 100;

  constructor(
    readonly device: string,
    opts: { budget?: number | null } = {},
  ) {
    this.budgetBytes = opts.budget ?? null;
  }

  get live(): number {
    return this.liveBytes;
  }
  get peak(): number {
    return this.peakBytes;
  }
  get budget(): number | null {
    return this.budgetBytes;
  }
  get count(): number {
    return this.liveAllocs.size;
  }
  liveByTag(): BytesByTag {
    return { ...this.byTag };
  }
  peakByTag(): BytesByTag {
    return { ...this.peakTag };
  }

  /** A budget below what is already live is allowed: it refuses the next allocation, never frees anything. */
  setBudget(bytes: number | null): void {
    if (bytes !== null && !(Number.isFinite(bytes) && bytes >= 0)) {
      throw new ServelabError(`budget must be a non-negative number of bytes or null, got ${bytes}`);
    }
    this.budgetBytes = bytes;
    this.changed();
  }

  /** Would an allocation of this size fit the budget now? (check half of a check/act pair) */
  canAllocate(bytes: number): boolean {
    return this.budgetBytes === null || this.liveBytes + bytes <= this.budgetBytes;
  }

  /**
   * Records an allocation, or throws OutOfMemoryError and records nothing. Call before the bytes are really allocated.
   * evenOverBudget records bytes that already exist (a session's arena that grew during a run) past the budget.
   */
  allocate(bytes: number, tag: MemoryTag = 'other', label = '', opts: { evenOverBudget?: boolean } = {}): Allocation {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new ServelabError(`allocation size must be a non-negative integer, got ${bytes}`);
    }
    assertTag(tag);
    if (!opts.evenOverBudget && !this.canAllocate(bytes)) {
      throw new OutOfMemoryError(this.device, bytes, this.liveBytes, this.budgetBytes!, tag);
    }
    const a: Allocation = { id: this.nextId++, bytes, tag, label, freed: false };
    this.liveAllocs.set(a.id, a);
    this.liveBytes += bytes;
    this.byTag[tag] += bytes;
    if (this.liveBytes > this.peakBytes) this.peakBytes = this.liveBytes;
    if (this.byTag[tag] > this.peakTag[tag]) this.peakTag[tag] = this.byTag[tag];
    this.changed();
    return a;
  }

  /** Idempotent: freeing twice (dispose, then the finalizer) counts once. */
  free(a: Allocation): void {
    if (a.freed || !this.liveAllocs.has(a.id)) return;
    a.freed = true;
    this.liveAllocs.delete(a.id);
    this.liveBytes -= a.bytes;
    this.byTag[a.tag] -= a.bytes;
    this.changed();
  }

  /** Moves an allocation to another tag (an activation kept as a cached key becomes kv). */
  retag(a: Allocation, tag: MemoryTag): void {
    assertTag(tag);
    if (a.freed) throw new ServelabError(`cannot retag freed allocation ${a.id} (${a.label})`);
    this.byTag[a.tag] -= a.bytes;
    a.tag = tag;
    this.byTag[tag] += a.bytes;
    if (this.byTag[tag] > this.peakTag[tag]) this.peakTag[tag] = this.byTag[tag];
    this.changed();
  }

  resetPeak(): void {
    this.peakBytes = this.liveBytes;
    Object.assign(this.peakTag, this.byTag);
  }

  snapshot(): MemorySnapshot {
    return {
      t: performance.now() - this.t0,
      device: this.device,
      live: this.liveBytes,
      peak: this.peakBytes,
      budget: this.budgetBytes,
      byTag: this.liveByTag(),
    };
  }

  /**
   * Snapshots at most once per intervalMs (the latest state always arrives, trailing-edge), so a chart
   * fed by a tight allocation loop redraws at a bounded rate. Returns the unsubscribe function.
   */
  subscribe(listener: Listener, opts: { intervalMs?: number } = {}): () => void {
    if (opts.intervalMs !== undefined) this.intervalMs = Math.max(1, opts.intervalMs);
    this.listeners.add(listener);
    listener(this.snapshot());
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && this.pending) {
        clearTimeout(this.pending);
        this.pending = null;
      }
    };
  }

  private changed(): void {
    if (this.listeners.size === 0 || this.pending) return;
    const now = performance.now();
    const wait = this.lastEmit + this.intervalMs - now;
    if (wait <= 0) return this.emit(now);
    this.pending = setTimeout(() => {
      this.pending = null;
      this.emit(performance.now());
    }, wait);
    this.pending.unref();
  }

  private emit(now: number): void {
    this.lastEmit = now;
    const s = this.snapshot();
    for (const l of this.listeners) l(s);
  }
}
