/**
 * Live charts: memory by tag (from a device's MemoryTracker) and pushed throughput, against time or against the
 * variable a sweep changes (batch size, threshold), redrawn in place through one display_id at most 10 times a
 * second while an experiment runs (Jupyter update_display_data).
 */
import { randomUUID } from 'node:crypto';
import { MEMORY_TAGS, type MemorySnapshot, type MemoryTracker } from '../../engine/memory/tracker.ts';
import { sink as currentSink, type DisplaySink, type MimeBundle } from './sink.ts';
import { MIME } from './mime.ts';
import { loaderBundle, plotlyJs, type Figure } from './plotly.ts';
import { liveFigure, type SweptAxis } from './live_figure.ts';
import { BoundedSeries, type Merge } from './series.ts';
import { formatBytes, formatNumber, groupDigits } from './format.ts';

export interface LiveSeriesOptions {
  /** Legend name; the series' key by default. */
  label?: string;
  /** 'tokens/s', 'GFLOP/s': the throughput axis is titled with it. */
  unit?: string;
  /** Plotly trace attributes: { mode: 'markers' } for one dot per run, { line: { dash: 'dash' } } for a prediction. */
  style?: Record<string, unknown>;
}

/** The swept variable of a chart that plots against it instead of time. */
export interface LiveXOptions extends Partial<SweptAxis> {
  /** The sample key that holds it: with key 'batch', chart.push({ batch: 8, rowsPerSecond: 1834 }). */
  key: string;
}

export interface LiveOptions {
  title?: string;
  /** Plots memory by tag over time: a tracker, or anything holding one (a Device). */
  memory?: MemoryTracker | { readonly memory: MemoryTracker };
  /** Pushed series declared up front (order, labels, units); a key pushed without being declared is added as it comes. */
  series?: Record<string, LiveSeriesOptions>;
  /**
   * Plots the pushed series against a swept variable instead of time: a key, or its options. A sample whose x is
   * NaN or infinite is skipped as a whole. Memory is sampled in time, so such a chart cannot also follow memory.
   */
  x?: string | LiveXOptions;
  /** Points kept per series (at least 2); longer runs are downsampled. Default 1000. */
  maxPoints?: number;
  /** Least time between two redraws, at least 100 ms (10 Hz). */
  intervalMs?: number;
  /** Stops the chart (publishing its final state) when aborted. Default: the running cell's signal. */
  signal?: AbortSignal;
  /** Where the chart is published. Default: the running cell's sink. */
  sink?: DisplaySink;
  /** Figure height in pixels. */
  height?: number;
}

export interface LiveSeriesJson {
  name: string;
  label: string;
  unit: string;
  source: 'memory' | 'push';
  /** Seconds since the chart started; on a chart with an x variable, that variable's values. */
  t: number[];
  v: number[];
  /** Samples measured (t and v hold count / samplesPerPoint points, each a bucket's mean, or its latest for memory). */
  count: number;
  samplesPerPoint: number;
  last: number | null;
  mean: number | null;
}

export interface LiveJson {
  title: string;
  startedAt: string;
  durationS: number;
  device: string | null;
  budget: number | null;
  closed: boolean;
  /** The swept variable the series' t holds, or null when they hold time. */
  x: { key: string; label: string } | null;
  series: LiveSeriesJson[];
}

interface Entry {
  series: BoundedSeries;
  label: string;
  unit: string;
  style: Record<string, unknown>;
}

const MIN_INTERVAL_MS = 100;
const open = new Set<LiveChart>();

/**
 * Closes the live charts still open (those publishing to one sink, or all), publishing their final state. The
 * kernel calls it before a cell's idle status, since every output of a request must come before it.
 */
export function closeLiveCharts(forSink?: DisplaySink): number {
  let n = 0;
  for (const c of [...open]) {
    if (forSink !== undefined && c.sink !== forSink) continue;
    try {
      c.close();
    } catch (e) {
      c.error = e; // a sink already gone (a restart) must not keep the others open
    }
    n++;
  }
  return n;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

export class LiveChart {
  readonly displayId = randomUUID();
  readonly sink: DisplaySink;
  readonly title: string;
  /** Updates published after the first display (update_display_data messages). */
  updates = 0;
  /** An error the sink raised while publishing from a timer or an abort; the chart closed on it. */
  error: unknown = null;

  private readonly t0 = performance.now();
  private readonly startedAt = new Date().toISOString();
  private readonly intervalMs: number;
  private readonly maxPoints: number;
  private readonly height: number;
  private readonly tracker: MemoryTracker | null;
  private readonly x: (SweptAxis & { key: string }) | null;
  private readonly memory = new Map<string, Entry>();
  private readonly seenTags = new Set<string>();
  private readonly pushed = new Map<string, Entry>();
  private readonly signal: AbortSignal;
  private unsubscribe: (() => void) | null = null;
  private device: string | null = null;
  private budget: number | null = null;
  private lastPublish = -Infinity;
  private timer: NodeJS.Timeout | null = null;
  private dirty = false;
  private started = false;
  private isClosed = false;
  private endS: number | null = null;
  private readonly onAbort = () => this.guarded(() => this.close());

  constructor(opts: LiveOptions = {}) {
    this.sink = opts.sink ?? currentSink();
    this.signal = opts.signal ?? this.sink.signal;
    this.title = opts.title ?? 'live';
    this.intervalMs = Math.max(MIN_INTERVAL_MS, opts.intervalMs ?? MIN_INTERVAL_MS);
    this.maxPoints = opts.maxPoints ?? 1000;
    this.height = opts.height ?? 420;
    this.tracker = opts.memory === undefined ? null : 'memory' in opts.memory ? opts.memory.memory : opts.memory;
    const x = typeof opts.x === 'string' ? { key: opts.x } : opts.x;
    this.x = x === undefined ? null : { key: x.key, label: x.label ?? x.key, type: x.type ?? 'linear', reversed: x.reversed ?? false };
    if (this.x && this.tracker) throw new TypeError(`live chart '${this.title}': memory is sampled in time, so a chart plotted against '${this.x.key}' cannot follow it; use two charts`);
    if (this.x && this.x.key in (opts.series ?? {})) throw new TypeError(`live chart '${this.title}': '${this.x.key}' is the x variable, not a series`);
    for (const [name, o] of Object.entries(opts.series ?? {})) this.entry(name, o);

    if (this.tracker) {
      for (const tag of [...MEMORY_TAGS, 'live', 'peak']) this.memory.set(tag, this.newEntry(tag, 'B', 'last'));
      // The tracker calls back at once with its current state, then at most once per 100 ms (trailing edge).
      this.unsubscribe = this.tracker.subscribe((s) => {
        if (this.isClosed) return;
        this.record(s);
        this.changed();
      });
    }
    try {
      // A live chart's own output is replaced on every update, so plotly.js cannot live inside it.
      if (plotlyJs.claim()) this.sink.display(loaderBundle());
      this.sink.display(this.bundle(), { displayId: this.displayId });
    } catch (e) {
      this.unsubscribe?.();
      throw e;
    }
    this.lastPublish = performance.now();
    this.dirty = false;
    this.started = true;
    open.add(this);
    if (this.signal.aborted) this.close();
    else this.signal.addEventListener('abort', this.onAbort, { once: true });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * One sample per key, e.g. chart.push({ tokensPerSecond: 1834 }), or with an x variable
   * chart.push({ batch: 8, rowsPerSecond: 1834 }); NaN and infinities are skipped.
   */
  push(sample: Readonly<Record<string, number>>): void {
    if (this.isClosed) return;
    let t = this.now();
    if (this.x) {
      const x = sample[this.x.key];
      if (typeof x !== 'number') throw new TypeError(`live chart '${this.title}' plots against '${this.x.key}': push({ ${this.x.key}: <number>, ... }), got ${typeof x}`);
      if (!Number.isFinite(x)) return;
      t = x;
    }
    for (const name in sample) {
      if (name === this.x?.key) continue;
      const v = sample[name];
      if (typeof v !== 'number') throw new TypeError(`live chart push: '${name}' must be a number, got ${typeof v}`);
      if (Number.isFinite(v)) this.entry(name).series.add(t, v);
    }
    this.changed();
  }

  /** Publishes the current state now, whatever the rate limit says. */
  flush(): void {
    if (this.isClosed) return;
    this.cancelTimer();
    this.publish();
  }

  /** Stops sampling and publishes the final state; later pushes are ignored. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    open.delete(this);
    this.cancelTimer();
    this.signal.removeEventListener('abort', this.onAbort);
    this.unsubscribe?.();
    this.unsubscribe = null;
    // The tracker's stream may hold back the last change for up to 100 ms; read the state itself.
    if (this.tracker) this.record(this.tracker.snapshot());
    this.endS = this.now();
    this.publish();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Every measured series as plain JSON, for reports. */
  series(): LiveJson {
    const out: LiveSeriesJson[] = [];
    for (const [name, e] of this.memory) {
      if (MEMORY_TAGS.includes(name as never) && !this.seenTags.has(name)) continue;
      out.push(this.json(`memory.${name}`, e, 'memory'));
    }
    for (const [name, e] of this.pushed) out.push(this.json(name, e, 'push'));
    return {
      title: this.title,
      startedAt: this.startedAt,
      durationS: this.endS ?? this.now(),
      device: this.device,
      budget: this.budget,
      closed: this.isClosed,
      x: this.x && { key: this.x.key, label: this.x.label },
      series: out,
    };
  }

  figure(): Figure {
    const memory = this.tracker && {
      device: this.device,
      budget: this.budget,
      // Tags never used stay out of the legend; 'live' is the stack's top, drawn by the stack itself.
      tags: [...this.memory].filter(([tag]) => tag !== 'live' && (tag === 'peak' || this.seenTags.has(tag))).map(([tag, e]) => ({ tag, ...e.series.points() })),
      peak: this.memory.get('peak')!.series.last ?? 0,
    };
    const pushed = [...this.pushed.values()].map((e) => ({ label: e.label, unit: e.unit, style: e.style, ...e.series.points() }));
    return liveFigure({ title: this.title, height: this.height, uirevision: this.displayId, x: this.x, memory, pushed });
  }

  /** Final values in words: what a terminal, a text export or a test reads. */
  summary(): string {
    const dur = this.endS ?? this.now();
    const lines = [`live chart '${this.title}' (${this.isClosed ? 'closed' : 'running'}, ${dur.toFixed(1)} s)`];
    for (const e of this.pushed.values()) {
      const s = e.series;
      const unit = e.unit ? ` ${e.unit}` : '';
      const at = this.x && s.count > 0 ? ` at ${this.x.key} ${formatNumber(s.points().t.at(-1)!, 4)}` : '';
      lines.push(s.count === 0 ? `${e.label}: no samples` : `${e.label}: last ${formatNumber(s.last!, 4)}${unit}${at}, mean ${formatNumber(s.mean!, 4)}${unit} (${groupDigits(s.count)} samples)`);
    }
    if (this.tracker) {
      const tags = MEMORY_TAGS.filter((t) => this.seenTags.has(t)).map((t) => `${t} ${formatBytes(this.memory.get(t)!.series.last ?? 0)}`);
      const live = this.memory.get('live')!.series.last ?? 0;
      const peak = this.memory.get('peak')!.series.last ?? 0;
      const budget = this.budget === null ? '' : `, budget ${formatBytes(this.budget)}`;
      lines.push(`memory on ${this.device}: live ${formatBytes(live)}${tags.length ? ` (${tags.join(', ')})` : ''}, peak ${formatBytes(peak)}${budget}`);
    }
    return lines.join('\n');
  }

  [MIME](): MimeBundle {
    return { ...this.figure().bundle(), 'text/plain': this.summary() };
  }

  private bundle(): MimeBundle {
    return { ...this.figure().bundle({ embed: 'never' }), 'text/plain': this.summary() };
  }

  private now(): number {
    return round3((performance.now() - this.t0) / 1000);
  }

  private newEntry(label: string, unit: string, merge: Merge, style: Record<string, unknown> = {}): Entry {
    return { series: new BoundedSeries(this.maxPoints, merge), label, unit, style };
  }

  private entry(name: string, o: LiveSeriesOptions = {}): Entry {
    let e = this.pushed.get(name);
    if (!e) {
      e = this.newEntry(o.label ?? name, o.unit ?? '', 'mean', o.style);
      this.pushed.set(name, e);
    }
    return e;
  }

  private record(s: MemorySnapshot): void {
    const t = this.now();
    this.device = s.device;
    this.budget = s.budget;
    for (const tag of MEMORY_TAGS) {
      const bytes = s.byTag[tag];
      if (bytes !== 0) this.seenTags.add(tag);
      this.memory.get(tag)!.series.add(t, bytes);
    }
    this.memory.get('live')!.series.add(t, s.live);
    this.memory.get('peak')!.series.add(t, s.peak);
  }

  /**
   * Leading and trailing edge: a change after a quiet interval publishes at once (so a synchronous loop, where no
   * timer can fire, still redraws), and a change within it is held until the interval ends, coalesced with the rest.
   */
  private changed(): void {
    this.dirty = true;
    if (!this.started) return; // the first display carries it
    const wait = this.lastPublish + this.intervalMs - performance.now();
    if (wait <= 0) {
      this.cancelTimer();
      this.publish();
    } else if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.dirty && !this.isClosed) this.guarded(() => this.publish());
      }, wait);
      this.timer.unref();
    }
  }

  private publish(): void {
    this.dirty = false;
    this.sink.display(this.bundle(), { displayId: this.displayId, update: true });
    // Timed from when the message left, so that a slow bundle never brings two messages closer than the interval.
    this.lastPublish = performance.now();
    this.updates++;
  }

  private cancelTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Timers and abort listeners have no caller to throw to: an error there would take the kernel down. */
  private guarded(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.error = e;
      this.isClosed = true;
      open.delete(this);
      this.cancelTimer();
      this.unsubscribe?.();
      this.unsubscribe = null;
    }
  }

  private json(name: string, e: Entry, source: 'memory' | 'push'): LiveSeriesJson {
    const p = e.series.points();
    return { name, label: e.label, unit: e.unit, source, t: p.t, v: p.v, count: e.series.count, samplesPerPoint: e.series.samplesPerPoint, last: e.series.last, mean: e.series.mean };
  }
}

/**
 * live({ title, memory: device, series: { tokensPerSecond: { unit: 'tokens/s' } } }), or against a sweep's variable
 * live({ title, x: { key: 'batch', type: 'log' }, series: { rowsPerSecond: { unit: 'rows/s' } } }): displayed at
 * once, updated in place.
 */
export function live(opts: LiveOptions = {}): LiveChart {
  return new LiveChart(opts);
}
