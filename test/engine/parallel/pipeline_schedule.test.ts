/**
 * Pipeline schedules against the literature: GPipe (Huang et al. 2019) and 1F1B (PipeDream-Flush, Narayanan et al.
 * 2021; Megatron-LM's non-interleaved schedule, drawn for p = 4, m = 8 in the Megatron-LM paper's Figure 4), their
 * simulated timelines (dependencies honoured, the bubble (p - 1)/(m + p - 1) for equal stages with B = F and B = 2F),
 * the activations each stage holds (m for GPipe, p - s for 1F1B), and a measured timeline analysed the same way.
 */
import { describe, expect, it } from 'vitest';
import {
  analyzeTimeline,
  bubbleFraction,
  checkSchedule,
  gpipeSchedule,
  measuredTimeline,
  microBatchesForBubble,
  oneFOneBSchedule,
  simulateSchedule,
  timelineViolations,
  type PipelineSchedule,
  type TimedOp,
} from '../../../engine/parallel/pipeline_schedule.ts';
import { ServelabError } from '../../../engine/errors.ts';

const order = (s: PipelineSchedule) => s.ops.map((list) => list.map((o) => `${o.kind}${o.microBatch}`).join(' '));

describe('schedules as data', () => {
  it('GPipe: every forward, then every backward, on every stage', () => {
    expect(order(gpipeSchedule(2, 3))).toEqual(['F0 F1 F2 B0 B1 B2', 'F0 F1 F2 B0 B1 B2']);
    expect(order(gpipeSchedule(3, 4))).toEqual(Array(3).fill('F0 F1 F2 F3 B0 B1 B2 B3'));
  });

  it('1F1B: p - s - 1 warm-up forwards, then one forward one backward, then the remaining backwards', () => {
    expect(order(oneFOneBSchedule(2, 3))).toEqual(['F0 F1 B0 F2 B1 B2', 'F0 B0 F1 B1 F2 B2']);
    expect(order(oneFOneBSchedule(3, 4))).toEqual(['F0 F1 F2 B0 F3 B1 B2 B3', 'F0 F1 B0 F2 B1 F3 B2 B3', 'F0 B0 F1 B1 F2 B2 F3 B3']);
    // Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM",
    // Figure 4, devices 1 to 4 (micro-batches numbered from 0 here).
    expect(order(oneFOneBSchedule(4, 8))).toEqual([
      'F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7',
      'F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7',
      'F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7',
      'F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7',
    ]);
    expect(order(gpipeSchedule(4, 8))[0]).toBe('F0 F1 F2 F3 F4 F5 F6 F7 B0 B1 B2 B3 B4 B5 B6 B7');
  });

  it('fewer micro-batches than stages: 1F1B warms up with all of them', () => {
    expect(order(oneFOneBSchedule(4, 2))).toEqual(['F0 F1 B0 B1', 'F0 F1 B0 B1', 'F0 F1 B0 B1', 'F0 B0 F1 B1']);
    expect(order(oneFOneBSchedule(1, 3))).toEqual(['F0 B0 F1 B1 F2 B2']);
  });
});

describe('simulated timelines', () => {
  const cases: [number, number][] = [[2, 3], [3, 4], [4, 8], [4, 2], [1, 5], [5, 1], [8, 32]];

  for (const [name, make] of [['GPipe', gpipeSchedule], ['1F1B', oneFOneBSchedule]] as const) {
    for (const [forwardMs, backwardMs] of [[1, 1], [1, 2], [3, 5]]) {
      it(`${name}, F = ${forwardMs} ms, B = ${backwardMs} ms: dependencies hold and the bubble is (p - 1)/(m + p - 1)`, () => {
        for (const [p, m] of cases) {
          const t = simulateSchedule(make(p, m), { forwardMs, backwardMs });
          expect(timelineViolations(t)).toEqual([]);
          expect(t.makespan).toBe((m + p - 1) * (forwardMs + backwardMs));
          expect(t.busy).toEqual(Array(p).fill(m * (forwardMs + backwardMs)));
          expect(t.theory).toBe((p - 1) / (m + p - 1));
          expect(t.bubble).toBeCloseTo(t.theory, 12);
          // Each stage ran its ops in its listed order, one at a time.
          expect(t.ops.map((l) => l.map((o) => `${o.kind}${o.microBatch}`).join(' '))).toEqual(order(make(p, m)));
        }
      });
    }
  }

  it('the p = 2, m = 3 GPipe timeline, op by op (F = 1, B = 2)', () => {
    const t = simulateSchedule(gpipeSchedule(2, 3), { forwardMs: 1, backwardMs: 2 });
    const span = (s: number) => t.ops[s].map((o) => `${o.kind}${o.microBatch}@${o.start}-${o.end}`).join(' ');
    expect(span(0)).toBe('F0@0-1 F1@1-2 F2@2-3 B0@6-8 B1@8-10 B2@10-12');
    expect(span(1)).toBe('F0@1-2 F1@2-3 F2@3-4 B0@4-6 B1@6-8 B2@8-10');
    expect(t.makespan).toBe(12);
    expect(t.idle).toBe(6);
    expect(t.bubble).toBe(0.25);
  });

  it('activations in flight: GPipe holds all m on every stage, 1F1B at most p - s', () => {
    expect(simulateSchedule(gpipeSchedule(4, 8)).peakInFlight).toEqual([8, 8, 8, 8]);
    expect(simulateSchedule(oneFOneBSchedule(4, 8)).peakInFlight).toEqual([4, 3, 2, 1]);
    expect(simulateSchedule(oneFOneBSchedule(4, 2)).peakInFlight).toEqual([2, 2, 2, 1]);
    expect(simulateSchedule(gpipeSchedule(3, 4), { forwardMs: 1, backwardMs: 1 }).peakInFlight).toEqual([4, 4, 4]);
  });

  it('an unbalanced stage makes the measured bubble exceed the theory', () => {
    const t = simulateSchedule(oneFOneBSchedule(4, 8), (op, stage) => (stage === 2 ? 2 : 1) * (op.kind === 'F' ? 1 : 2));
    expect(timelineViolations(t)).toEqual([]);
    expect(t.bubble).toBeGreaterThan(t.theory);
  });

  it('a schedule whose order deadlocks is refused', () => {
    // Stage 0 wants B0 before F1; stage 1 wants F1 before B0: each waits on the other.
    const ops = (l: string) => l.split(' ').map((k) => ({ kind: k[0] as 'F' | 'B', microBatch: Number(k.slice(1)) }));
    const bad: PipelineSchedule = { name: 'bad', stages: 2, microBatches: 2, ops: [ops('F0 B0 F1 B1'), ops('F1 B1 F0 B0')] };
    expect(() => simulateSchedule(bad)).toThrow(/deadlocks/);
    const with1 = (l: string) => checkSchedule({ ...bad, ops: [ops('F0 F1 B0 B1'), ops(l)] });
    expect(() => with1('F0 B0 F1')).toThrow(/stage 1 runs 3 ops; it must run F and B of each of the 2 micro-batches/);
    expect(() => with1('F0 F0 B0 F1 B1')).toThrow(/stage 1 runs F0 twice/);
    expect(() => with1('B0 F0 F1 B1')).toThrow(/stage 1 runs B0 before F0/);
    expect(() => with1('F0 B0 F1 B2')).toThrow(/bad op/);
    expect(() => checkSchedule({ ...bad, ops: [ops('F0 F1 B0 B1')] })).toThrow(/must list 2 stages/);
  });
});

describe('measured timelines', () => {
  it('records from a run (any order, any clock origin) are analysed like a simulation', () => {
    const sim = simulateSchedule(oneFOneBSchedule(3, 4), { forwardMs: 1, backwardMs: 2 });
    const origin = 1.7e12;
    const records: TimedOp[] = sim.ops.flat().map((o) => ({ ...o, start: origin + o.start, end: origin + o.end })).reverse();
    const t = measuredTimeline(oneFOneBSchedule(3, 4), records);
    expect(t.source).toBe('measured');
    expect(timelineViolations(t)).toEqual([]);
    const a = analyzeTimeline(t);
    expect(a.makespan).toBeCloseTo(sim.makespan, 3);
    expect(a.bubble).toBeCloseTo(sim.bubble, 6);
    expect(a.peakInFlight).toEqual(sim.peakInFlight);
  });

  it('a missing op, or one out of dependency order, is caught', () => {
    const sched = gpipeSchedule(2, 2);
    const sim = simulateSchedule(sched, { forwardMs: 1, backwardMs: 1 });
    expect(() => measuredTimeline(sched, sim.ops.flat().slice(1))).toThrow(ServelabError);
    const early = sim.ops.flat().map((o) => (o.stage === 1 && o.kind === 'F' && o.microBatch === 0 ? { ...o, start: 0.5, end: 1.5 } : o));
    expect(timelineViolations(measuredTimeline(sched, early))).toEqual(['stage 1: F0 starts before F0 on stage 0 ends']);
  });
});

describe('bubble arithmetic', () => {
  it('bubbleFraction and the fewest micro-batches for a bubble', () => {
    expect(bubbleFraction(4, 8)).toBe(3 / 11);
    expect(bubbleFraction(1, 1)).toBe(0);
    expect(microBatchesForBubble(4, 0.25)).toBe(9);
    expect(bubbleFraction(4, 9)).toBe(0.25);
    expect(bubbleFraction(4, 8)).toBeGreaterThan(0.25);
    expect(microBatchesForBubble(8, 0.1)).toBe(63);
    expect(microBatchesForBubble(4, 1)).toBe(1);
    expect(microBatchesForBubble(1, 0)).toBe(1);
    for (const p of [2, 3, 4, 8, 16]) {
      for (const b of [0.5, 0.2, 0.1, 0.05, 1 / 3, 0.01]) {
        const m = microBatchesForBubble(p, b);
        expect(bubbleFraction(p, m)).toBeLessThanOrEqual(b);
        if (m > 1) expect(bubbleFraction(p, m - 1)).toBeGreaterThan(b);
      }
    }
  });

  it('bad input is a ServelabError naming the argument', () => {
    for (const f of [gpipeSchedule, oneFOneBSchedule, bubbleFraction]) {
      expect(() => f(0, 4)).toThrow(ServelabError);
      expect(() => f(2, 0)).toThrow(/m \(micro-batches\) must be an integer >= 1/);
      expect(() => f(2.5, 4)).toThrow(/p \(stages\)/);
      expect(() => f(2, 1.5)).toThrow(ServelabError);
      expect(() => f(NaN, 4)).toThrow(ServelabError);
    }
    expect(() => microBatchesForBubble(4, 0)).toThrow(/maxBubble must be > 0/);
    expect(() => microBatchesForBubble(4, 1.5)).toThrow(ServelabError);
    expect(() => microBatchesForBubble(0, 0.5)).toThrow(ServelabError);
    expect(() => simulateSchedule(gpipeSchedule(2, 2), { forwardMs: -1, backwardMs: 1 })).toThrow(/duration -1/);
  });
});
