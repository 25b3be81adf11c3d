/**
 * Pipeline-parallel schedules as data, and their timelines. A model cut into p stages (one per device) trains a batch
 * split into m micro-batches; each stage runs a forward F(j) and a backward B(j) per micro-batch j, and the order it
 * runs them in is the schedule:
 *
 * - GPipe (Huang et al. 2019): every forward, then every backward (here in ascending micro-batch order, as Figure 3 of
 *   Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", draws
 *   it). Stage 0 holds the activations of all m micro-batches at once.
 * - 1F1B (PipeDream-Flush, Narayanan et al. 2021, "Memory-Efficient Pipeline-Parallel DNN Training"; Megatron-LM's
 *   non-interleaved schedule, that paper's Figure 4): stage s runs min(p - s - 1, m) warm-up forwards, then
 *   alternates one forward and one backward, then drains the remaining backwards. Same flush, same bubble, but at
 *   most p - s micro-batches in flight.
 *
 * Dependencies: F(j) on stage s needs F(j) on s - 1; B(j) on s needs F(j) on s and B(j) on s + 1; a stage runs its ops
 * one at a time in its listed order. With every F taking tf and every B taking tb on every stage both schedules take
 * (m + p - 1)(tf + tb), of which each stage is busy m(tf + tb): the bubble, idle / (p x makespan), is (p - 1)/(m + p - 1).
 *
 * A timeline (`PipelineTimeline`) is the same type whether simulated here or measured by a run on real workers:
 * per stage, the ops with start and end times on one clock. `analyzeTimeline` measures either.
 */
import { ServelabError } from '../errors.ts';

export type PipelineOpKind = 'F' | 'B';

export interface PipelineOp {
  kind: PipelineOpKind;
  microBatch: number;
}

export interface PipelineSchedule {
  name: string;
  /** p */
  stages: number;
  /** m */
  microBatches: number;
  /** ops[s]: what stage s runs, in order. */
  ops: PipelineOp[][];
}

/** An op that ran (or would run) from start to end, in milliseconds on one clock shared by every stage. */
export interface TimedOp extends PipelineOp {
  stage: number;
  start: number;
  end: number;
}

export interface PipelineTimeline {
  source: 'simulated' | 'measured';
  schedule: string;
  stages: number;
  microBatches: number;
  /** ops[s]: stage s's ops in the order they ran. */
  ops: TimedOp[][];
}

/** A timeline a real run recorded, e.g. performance.timeOrigin + performance.now() around each op on each worker. */
export type MeasuredTimeline = PipelineTimeline & { source: 'measured' };

export interface TimelineAnalysis {
  /** From the earliest start to the latest end. */
  makespan: number;
  /** Milliseconds each stage spent running ops. */
  busy: number[];
  /** Sum over stages of makespan - busy. */
  idle: number;
  /** idle / (p x makespan). */
  bubble: number;
  /** (p - 1)/(m + p - 1), the bubble of equal-time stages. */
  theory: number;
  /** Per stage, the most micro-batches whose forward had run and backward had not: activations held at once. */
  peakInFlight: number[];
}

export type SimulatedTimeline = PipelineTimeline & TimelineAnalysis & { source: 'simulated' };

/** Op durations: the same for every stage, or per op. Milliseconds. */
export type OpDurations = { forwardMs: number; backwardMs: number } | ((op: PipelineOp, stage: number) => number);

function positiveInt(what: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new ServelabError(`pipeline schedule: ${what} must be an integer >= 1, got ${v}`);
  return v;
}

/** The bubble of a flushed pipeline of p equal stages and m micro-batches: (p - 1)/(m + p - 1). */
export function bubbleFraction(p: number, m: number): number {
  positiveInt('p (stages)', p);
  positiveInt('m (micro-batches)', m);
  return (p - 1) / (m + p - 1);
}

/** The fewest micro-batches m with bubbleFraction(p, m) <= maxBubble. */
export function microBatchesForBubble(p: number, maxBubble: number): number {
  positiveInt('p (stages)', p);
  if (typeof maxBubble !== 'number' || !(maxBubble >= 0 && maxBubble <= 1)) throw new ServelabError(`pipeline schedule: maxBubble must be a fraction in [0, 1], got ${maxBubble}`);
  if (p === 1) return 1;
  if (maxBubble === 0) throw new ServelabError(`pipeline schedule: no number of micro-batches removes the bubble of ${p} stages; maxBubble must be > 0`);
  // (p - 1)/(m + p - 1) <= b  <=>  m >= (p - 1)(1 - b)/b; the loops absorb the division's rounding.
  let m = Math.max(1, Math.ceil(((p - 1) * (1 - maxBubble)) / maxBubble));
  while (m > 1 && bubbleFraction(p, m - 1) <= maxBubble) m--;
  while (bubbleFraction(p, m) > maxBubble) m++;
  return m;
}

const F = (microBatch: number): PipelineOp => ({ kind: 'F', microBatch });
const B = (microBatch: number): PipelineOp => ({ kind: 'B', microBatch });
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);

/** GPipe: on every stage F(0) .. F(m - 1), then B(0) .. B(m - 1). */
export function gpipeSchedule(p: number, m: number): PipelineSchedule {
  positiveInt('p (stages)', p);
  positiveInt('m (micro-batches)', m);
  const ops = range(0, p).map(() => [...range(0, m).map(F), ...range(0, m).map(B)]);
  return { name: 'GPipe', stages: p, microBatches: m, ops };
}

/** 1F1B: stage s runs w = min(p - s - 1, m) warm-up forwards, then F(w + i), B(i) for each i < m - w, then the last w backwards. */
export function oneFOneBSchedule(p: number, m: number): PipelineSchedule {
  positiveInt('p (stages)', p);
  positiveInt('m (micro-batches)', m);
  const ops = range(0, p).map((s) => {
    const w = Math.min(p - s - 1, m);
    return [...range(0, w).map(F), ...range(0, m - w).flatMap((i) => [F(w + i), B(i)]), ...range(m - w, m).map(B)];
  });
  return { name: '1F1B', stages: p, microBatches: m, ops };
}

/** Throws unless every stage lists F(j) and B(j) exactly once for each micro-batch j < m, and F(j) before B(j). */
export function checkSchedule(schedule: PipelineSchedule): void {
  const p = positiveInt('stages', schedule.stages);
  const m = positiveInt('microBatches', schedule.microBatches);
  if (!Array.isArray(schedule.ops) || schedule.ops.length !== p) throw new ServelabError(`pipeline schedule ${schedule.name}: ops must list ${p} stages, got ${schedule.ops?.length}`);
  schedule.ops.forEach((list, s) => {
    const seen = new Set<string>();
    for (const op of list) {
      const key = `${op.kind}${op.microBatch}`;
      if ((op.kind !== 'F' && op.kind !== 'B') || !Number.isSafeInteger(op.microBatch) || op.microBatch < 0 || op.microBatch >= m)
        throw new ServelabError(`pipeline schedule ${schedule.name}: stage ${s} has a bad op ${JSON.stringify(op)}; ops are { kind: 'F' | 'B', microBatch: 0..${m - 1} }`);
      if (seen.has(key)) throw new ServelabError(`pipeline schedule ${schedule.name}: stage ${s} runs ${key} twice`);
      if (op.kind === 'B' && !seen.has(`F${op.microBatch}`)) throw new ServelabError(`pipeline schedule ${schedule.name}: stage ${s} runs B${op.microBatch} before F${op.microBatch}`);
      seen.add(key);
    }
    if (seen.size !== 2 * m) throw new ServelabError(`pipeline schedule ${schedule.name}: stage ${s} runs ${seen.size} ops; it must run F and B of each of the ${m} micro-batches`);
  });
}

const key = (kind: PipelineOpKind, stage: number, microBatch: number) => `${kind}${stage}:${microBatch}`;

/** The ops an op waits for: F(j) on s - 1 for a forward; F(j) on s and B(j) on s + 1 for a backward. */
export function opDependencies(op: PipelineOp, stage: number, stages: number): { kind: PipelineOpKind; stage: number; microBatch: number }[] {
  const j = op.microBatch;
  if (op.kind === 'F') return stage > 0 ? [{ kind: 'F', stage: stage - 1, microBatch: j }] : [];
  return [{ kind: 'F', stage, microBatch: j }, ...(stage < stages - 1 ? [{ kind: 'B' as const, stage: stage + 1, microBatch: j }] : [])];
}

function durationOf(d: OpDurations): (op: PipelineOp, stage: number) => number {
  const f = typeof d === 'function' ? d : (op: PipelineOp) => (op.kind === 'F' ? d.forwardMs : d.backwardMs);
  return (op, stage) => {
    const t = f(op, stage);
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw new ServelabError(`pipeline schedule: ${op.kind}${op.microBatch} on stage ${stage} has duration ${t}; durations are finite milliseconds >= 0`);
    return t;
  };
}

/**
 * Runs a schedule on an ideal pipeline (no transfer time): each op starts as soon as its stage is free and its
 * dependencies have ended. Throws if the order deadlocks (a stage waits on an op that waits on it).
 */
export function simulateSchedule(schedule: PipelineSchedule, durations: OpDurations = { forwardMs: 1, backwardMs: 2 }): SimulatedTimeline {
  checkSchedule(schedule);
  const p = schedule.stages;
  const time = durationOf(durations);
  const ends = new Map<string, number>();
  const ops: TimedOp[][] = schedule.ops.map(() => []);
  const next = new Array<number>(p).fill(0);
  const free = new Array<number>(p).fill(0);
  let left = schedule.ops.reduce((n, l) => n + l.length, 0);
  while (left > 0) {
    let progressed = false;
    for (let s = 0; s < p; s++) {
      while (next[s] < schedule.ops[s].length) {
        const op = schedule.ops[s][next[s]];
        const deps = opDependencies(op, s, p).map((d) => ends.get(key(d.kind, d.stage, d.microBatch)));
        if (deps.some((e) => e === undefined)) break;
        const start = Math.max(free[s], ...(deps as number[]));
        const end = start + time(op, s);
        ops[s].push({ kind: op.kind, microBatch: op.microBatch, stage: s, start, end });
        ends.set(key(op.kind, s, op.microBatch), end);
        free[s] = end;
        next[s]++;
        left--;
        progressed = true;
      }
    }
    if (!progressed) {
      const waiting = next.map((i, s) => (i < schedule.ops[s].length ? `stage ${s} at ${schedule.ops[s][i].kind}${schedule.ops[s][i].microBatch}` : null)).filter(Boolean);
      throw new ServelabError(`pipeline schedule ${schedule.name} deadlocks: ${waiting.join(', ')} each wait on an op that cannot run yet`);
    }
  }
  const timeline: PipelineTimeline = { source: 'simulated', schedule: schedule.name, stages: p, microBatches: schedule.microBatches, ops };
  return { ...timeline, ...analyzeTimeline(timeline), source: 'simulated' };
}

/**
 * A measured timeline from a run's records (any order; times on one clock), checked against the schedule it ran:
 * each stage's ops sorted by start.
 */
export function measuredTimeline(schedule: PipelineSchedule, records: readonly TimedOp[]): MeasuredTimeline {
  checkSchedule(schedule);
  const ops: TimedOp[][] = schedule.ops.map(() => []);
  for (const r of records) {
    if (!Number.isSafeInteger(r.stage) || r.stage < 0 || r.stage >= schedule.stages) throw new ServelabError(`measured timeline: op ${JSON.stringify(r)} names no stage of ${schedule.stages}`);
    if (!Number.isFinite(r.start) || !Number.isFinite(r.end) || r.end < r.start) throw new ServelabError(`measured timeline: op ${r.kind}${r.microBatch} on stage ${r.stage} has start ${r.start} and end ${r.end}`);
    ops[r.stage].push({ kind: r.kind, microBatch: r.microBatch, stage: r.stage, start: r.start, end: r.end });
  }
  for (const list of ops) list.sort((a, b) => a.start - b.start || a.end - b.end);
  checkSchedule({ ...schedule, ops });
  return { source: 'measured', schedule: schedule.name, stages: schedule.stages, microBatches: schedule.microBatches, ops };
}

/** Dependency violations in a timeline (an op starting before an op it needs ended, or overlapping ops on a stage); [] if none. */
export function timelineViolations(t: PipelineTimeline, toleranceMs = 0): string[] {
  const ends = new Map<string, number>();
  for (const list of t.ops) for (const op of list) ends.set(key(op.kind, op.stage, op.microBatch), op.end);
  const out: string[] = [];
  t.ops.forEach((list, s) => {
    list.forEach((op, i) => {
      if (i > 0 && op.start < list[i - 1].end - toleranceMs) out.push(`stage ${s}: ${op.kind}${op.microBatch} starts before ${list[i - 1].kind}${list[i - 1].microBatch} ends`);
      for (const d of opDependencies(op, s, t.stages)) {
        const e = ends.get(key(d.kind, d.stage, d.microBatch));
        if (e === undefined) out.push(`stage ${s}: ${op.kind}${op.microBatch} needs ${d.kind}${d.microBatch} on stage ${d.stage}, which never ran`);
        else if (op.start < e - toleranceMs) out.push(`stage ${s}: ${op.kind}${op.microBatch} starts before ${d.kind}${d.microBatch} on stage ${d.stage} ends`);
      }
    });
  });
  return out;
}

/** Makespan, idle time, the bubble (measured and in theory) and peak in-flight micro-batches of a simulated or measured timeline. */
export function analyzeTimeline(t: PipelineTimeline): TimelineAnalysis {
  const all = t.ops.flat();
  const t0 = all.length ? Math.min(...all.map((o) => o.start)) : 0;
  const t1 = all.length ? Math.max(...all.map((o) => o.end)) : 0;
  const makespan = t1 - t0;
  const busy = t.ops.map((list) => list.reduce((s, o) => s + (o.end - o.start), 0));
  const idle = busy.reduce((s, b) => s + (makespan - b), 0);
  const peakInFlight = t.ops.map((list) => {
    let now = 0;
    let peak = 0;
    for (const op of [...list].sort((a, b) => a.start - b.start)) {
      now += op.kind === 'F' ? 1 : -1;
      peak = Math.max(peak, now);
    }
    return peak;
  });
  return { makespan, busy, idle, bubble: makespan > 0 ? idle / (t.stages * makespan) : 0, theory: bubbleFraction(t.stages, t.microBatches), peakInFlight };
}
