/** How a live chart looks: memory stacked by tag in binary units, pushed series against time or a swept variable. */
import { Figure, type Layout, type Trace } from './plotly.ts';
import { binaryTicks, formatNumber } from './format.ts';

/** The x axis of a chart that plots against the variable a sweep changes. */
export interface SweptAxis {
  /** Axis title; the key by default. */
  label: string;
  /** 'log' for a variable that doubles (batch sizes, sequence lengths). */
  type: 'linear' | 'log';
  /** Highest value on the left, for a sweep that goes down (a threshold). */
  reversed: boolean;
}

interface Points {
  /** Seconds since the chart started, or the swept variable. */
  t: number[];
  v: number[];
}

export interface LiveFigureState {
  title: string;
  height: number;
  uirevision: string;
  x: SweptAxis | null;
  /** Bytes by tag ('peak' drawn as a line over the stack), or null for a chart without memory. */
  memory: { device: string | null; budget: number | null; tags: (Points & { tag: string })[]; peak: number } | null;
  pushed: (Points & { label: string; unit: string; style: Record<string, unknown> })[];
}

export function liveFigure(s: LiveFigureState): Figure {
  const traces: Trace[] = [];
  const hasPushed = s.pushed.length > 0;
  // Exact bytes on hover: the axis ticks are rounded binary sizes.
  const hoverBytes = '%{y:,.0f} B';
  for (const p of s.memory?.tags ?? []) {
    traces.push(
      p.tag === 'peak'
        ? { type: 'scatter', mode: 'lines', name: 'peak', x: p.t, y: p.v, hovertemplate: hoverBytes, line: { dash: 'dot', width: 1, color: '#444' } }
        : { type: 'scatter', mode: 'lines', name: p.tag, x: p.t, y: p.v, hovertemplate: hoverBytes, stackgroup: 'memory', line: { width: 1 } },
    );
  }
  // A sweep has few points, each a measurement worth seeing; a time series has many.
  const mode = s.x ? 'lines+markers' : 'lines';
  for (const p of s.pushed) {
    traces.push({ type: 'scatter', mode, name: p.unit ? `${p.label} (${p.unit})` : p.label, x: p.t, y: p.v, yaxis: s.memory ? 'y2' : 'y', ...p.style });
  }
  const units = [...new Set(s.pushed.map((p) => p.unit).filter((u) => u))].join(', ');
  const margin = { t: 40, r: 20, b: 90, l: 70 };
  const layout: Layout = {
    title: { text: s.title },
    height: s.height,
    margin,
    xaxis: s.x ? sweptAxis(s.x, s.pushed) : { title: { text: 'time (s)' } },
    // Below the axis title, a fixed 62 px under the plot whatever the height: Plotly's default overlaps the title.
    legend: { orientation: 'h', x: 0, y: -62 / Math.max(60, s.height - margin.t - margin.b), yanchor: 'top' },
    // A constant uirevision keeps the reader's zoom across updates in renderers that redraw with Plotly.react.
    uirevision: s.uirevision,
  };
  if (s.memory) {
    const { device, budget, peak } = s.memory;
    // Binary units, as tables and the tracker count them: Plotly's own ticks would call 64 MiB "67MB".
    const ticks = binaryTicks(Math.max(peak, budget ?? 0));
    layout.yaxis = { title: { text: `memory${device ? ` on ${device}` : ''}` }, ...ticks, rangemode: 'tozero', domain: hasPushed ? [0.55, 1] : [0, 1] };
    if (budget !== null) {
      layout.shapes = [{ type: 'line', xref: 'paper', x0: 0, x1: 1, yref: 'y', y0: budget, y1: budget, line: { dash: 'dash', color: '#d62728', width: 1 } }];
    }
  }
  if (hasPushed) {
    const axis = { title: { text: units || 'value' }, rangemode: 'tozero' };
    if (s.memory) layout.yaxis2 = { ...axis, domain: [0, 0.42], anchor: 'x' };
    else layout.yaxis = axis;
  }
  return new Figure(traces, layout);
}

/** On a log scale, ticks at the swept values themselves (1, 2, 4, ... 64) when they are few. */
function sweptAxis(x: SweptAxis, pushed: readonly Points[]): Layout {
  const axis: Layout = { title: { text: x.label }, type: x.type, ...(x.reversed ? { autorange: 'reversed' } : {}) };
  const xs = [...new Set(pushed.flatMap((p) => p.t))].sort((a, b) => a - b);
  if (x.type === 'log' && xs.length > 0 && xs.length <= 12) Object.assign(axis, { tickvals: xs, ticktext: xs.map((v) => formatNumber(v, 4)) });
  return axis;
}
