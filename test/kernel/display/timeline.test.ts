/** The pipeline timeline chart: one bar per op labelled F<j>/B<j> in two colours, idle time shaded, stages down, time across. */
import { beforeEach, describe, expect, it } from 'vitest';
import { gpipeSchedule, measuredTimeline, oneFOneBSchedule, simulateSchedule } from '../../../engine/parallel/pipeline_schedule.ts';
import { timelineChart } from '../../../kernel/display/timeline.ts';
import { PLOTLY_MIME, plotlyJs, type FigureJson } from '../../../kernel/display/plotly.ts';
import { toMimeBundle } from '../../../kernel/display/mime.ts';
import { labGlobals, labPrelude } from '../../../kernel/lab_globals.ts';

beforeEach(() => plotlyJs.reset());

type Bars = { name: string; type: string; orientation: string; y: string[]; base: number[]; x: number[]; text: string[]; marker: { color: string } };

describe('timelineChart', () => {
  it('GPipe, p = 2, m = 3, F = 1 ms, B = 2 ms: bars, labels, colours, idle gaps and axes', () => {
    const fig = timelineChart(simulateSchedule(gpipeSchedule(2, 3), { forwardMs: 1, backwardMs: 2 })).toJSON();
    const [idle, fwd, bwd] = fig.data as unknown as Bars[];
    expect(fig.data.map((t) => t.name)).toEqual(['idle (bubble)', 'forward', 'backward']);
    for (const t of [idle, fwd, bwd]) expect([t.type, t.orientation]).toEqual(['bar', 'h']);
    expect(fwd.text).toEqual(['F0', 'F1', 'F2', 'F0', 'F1', 'F2']);
    expect(fwd.y).toEqual(['stage 0', 'stage 0', 'stage 0', 'stage 1', 'stage 1', 'stage 1']);
    expect(fwd.base).toEqual([0, 1, 2, 1, 2, 3]);
    expect(fwd.x).toEqual([1, 1, 1, 1, 1, 1]);
    expect(bwd.text).toEqual(['B0', 'B1', 'B2', 'B0', 'B1', 'B2']);
    expect(bwd.base).toEqual([6, 8, 10, 4, 6, 8]);
    expect(bwd.x).toEqual([2, 2, 2, 2, 2, 2]);
    expect(fwd.marker.color).not.toBe(bwd.marker.color);
    // Stage 0 waits 3 ms for the backward to come back; stage 1 waits 1 ms to start and 2 ms at the end: 6 of 24 ms.
    expect(idle.y).toEqual(['stage 0', 'stage 1', 'stage 1']);
    expect(idle.base).toEqual([3, 0, 10]);
    expect(idle.x).toEqual([3, 1, 2]);
    expect(idle.text).toEqual(['', '', '']);
    expect(fig.layout).toMatchObject({
      title: { text: 'GPipe: p = 2 stages, m = 3 micro-batches; bubble 25.0% (theory 25.0%)' },
      barmode: 'overlay',
      xaxis: { title: { text: 'time (ms)' }, range: [0, 12] },
      yaxis: { title: { text: 'pipeline stage' }, categoryarray: ['stage 0', 'stage 1'], autorange: 'reversed' },
    });
  });

  it('a measured timeline is drawn from its first op, and says it was measured', () => {
    const sched = oneFOneBSchedule(3, 4);
    const sim = simulateSchedule(sched, { forwardMs: 1, backwardMs: 2 });
    const t = measuredTimeline(sched, sim.ops.flat().map((o) => ({ ...o, start: 5000 + o.start, end: 5000 + o.end })));
    const fig = timelineChart(t, { height: 300 }).toJSON();
    const fwd = fig.data[1] as unknown as Bars;
    expect(Math.min(...fwd.base)).toBe(0);
    expect(fig.layout.height).toBe(300);
    expect((fig.layout.title as { text: string }).text).toBe('1F1B (measured): p = 3 stages, m = 4 micro-batches; bubble 33.3% (theory 33.3%)');
    expect((fig.data[2] as unknown as Bars).text).toHaveLength(12);
  });

  it('displays as a Plotly bundle, and cells have it as a global', () => {
    const sim = simulateSchedule(oneFOneBSchedule(4, 8));
    const b = toMimeBundle(timelineChart(sim, { title: '1F1B' }));
    const data = (b[PLOTLY_MIME] as FigureJson).data as unknown as Bars[];
    expect(data.map((t) => t.name)).toEqual(['idle (bubble)', 'forward', 'backward']);
    // The shaded gaps add up to the timeline's idle time.
    expect(data[0].x.reduce((a, x) => a + x, 0)).toBeCloseTo(sim.idle, 9);
    expect(b['text/plain']).toMatch(/^Plotly figure '1F1B': 3 traces: bar 'idle \(bubble\)' \(\d+ points\), bar 'forward' \(32 points\), bar 'backward' \(32 points\)$/);
    expect(labGlobals()).toMatchObject({ timelineChart });
    expect(labPrelude()).toMatch(/declare const timelineChart: typeof import\(".*timeline\.ts"\)\["timelineChart"\];/);
  });
});
