/**
 * A pipeline-parallel timeline drawn as the papers draw it (GPipe, Huang et al. 2019, Figure 2; the Megatron-LM paper,
 * Narayanan et al. 2021, Figures 3 and 4): one row per stage, time running right, one bar per op labelled F<j> or B<j>, forwards and
 * backwards in two colours, and the idle time (the bubble) shaded. Takes a simulated or a measured timeline alike:
 * `timelineChart(simulateSchedule(oneFOneBSchedule(4, 8)))` in a cell shows it.
 */
import { analyzeTimeline, type PipelineTimeline, type TimedOp } from '../../engine/parallel/pipeline_schedule.ts';
import { plot, type Figure, type Trace } from './plotly.ts';

export interface TimelineChartOptions {
  /** The figure's title; by default the schedule, p, m and the bubble measured against the theory. */
  title?: string;
  /** Pixels; by default grows with the number of stages. */
  height?: number;
  /** Bar colours of forwards and backwards. */
  colors?: { F?: string; B?: string; idle?: string };
}

const COLORS = { F: '#1f77b4', B: '#2ca02c', idle: '#e5e5e5' };

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const ms = (x: number) => `${Number(x.toFixed(3))} ms`;

/** Stage labels, top to bottom. */
const stageLabel = (s: number) => `stage ${s}`;

interface Bar {
  stage: number;
  start: number;
  length: number;
  text: string;
  hover: string;
}

function barTrace(name: string, bars: Bar[], color: string, extra: Trace = {}): Trace {
  return {
    type: 'bar',
    orientation: 'h',
    name,
    y: bars.map((b) => stageLabel(b.stage)),
    base: bars.map((b) => b.start),
    x: bars.map((b) => b.length),
    text: bars.map((b) => b.text),
    hovertext: bars.map((b) => b.hover),
    hoverinfo: 'text',
    textposition: 'inside',
    insidetextanchor: 'middle',
    marker: { color, line: { color: '#ffffff', width: 1 } },
    ...extra,
  };
}

/** The gaps on each stage between t0 and t1 where it ran nothing. */
function idleBars(t: PipelineTimeline, t0: number, t1: number): Bar[] {
  const eps = 1e-9 * Math.max(1, t1 - t0);
  const out: Bar[] = [];
  t.ops.forEach((list, s) => {
    let at = t0;
    for (const op of [...list].sort((a, b) => a.start - b.start)) {
      if (op.start - at > eps) out.push({ stage: s, start: at - t0, length: op.start - at, text: '', hover: `stage ${s} idle: ${ms(at - t0)} to ${ms(op.start - t0)}` });
      at = Math.max(at, op.end);
    }
    if (t1 - at > eps) out.push({ stage: s, start: at - t0, length: t1 - at, text: '', hover: `stage ${s} idle: ${ms(at - t0)} to ${ms(t1 - t0)}` });
  });
  return out;
}

/** A Plotly figure of a pipeline timeline: stages down, time (from the first op's start) across. */
export function timelineChart(t: PipelineTimeline, opts: TimelineChartOptions = {}): Figure {
  const a = analyzeTimeline(t);
  const all = t.ops.flat();
  const t0 = all.length ? Math.min(...all.map((o) => o.start)) : 0;
  const t1 = t0 + a.makespan;
  const colors = { ...COLORS, ...opts.colors };
  const opBar = (o: TimedOp): Bar => ({
    stage: o.stage,
    start: o.start - t0,
    length: o.end - o.start,
    text: `${o.kind}${o.microBatch}`,
    hover: `${o.kind === 'F' ? 'forward' : 'backward'} of micro-batch ${o.microBatch} on stage ${o.stage}: ${ms(o.start - t0)} to ${ms(o.end - t0)}`,
  });
  const traces: Trace[] = [
    barTrace('idle (bubble)', idleBars(t, t0, t1), colors.idle, { textposition: 'none' }),
    barTrace('forward', all.filter((o) => o.kind === 'F').map(opBar), colors.F),
    barTrace('backward', all.filter((o) => o.kind === 'B').map(opBar), colors.B),
  ];
  const labels = Array.from({ length: t.stages }, (_, s) => stageLabel(s));
  const title =
    opts.title ??
    `${t.schedule}${t.source === 'measured' ? ' (measured)' : ''}: p = ${t.stages} stages, m = ${t.microBatches} micro-batches; ` +
      `bubble ${pct(a.bubble)} (theory ${pct(a.theory)})`;
  return plot(traces, {
    title: { text: title },
    barmode: 'overlay',
    bargap: 0.25,
    height: opts.height ?? 160 + 50 * t.stages,
    xaxis: { title: { text: 'time (ms)' }, range: [0, a.makespan], zeroline: false },
    yaxis: { title: { text: 'pipeline stage' }, type: 'category', categoryorder: 'array', categoryarray: labels, autorange: 'reversed' },
    uniformtext: { mode: 'hide', minsize: 8 },
  });
}
