/**
 * Plotly figures as one MIME bundle: application/vnd.plotly.v1+json for frontends with a Plotly renderer
 * (JupyterLab's extension, VS Code), an offline text/html fallback that carries plotly.js once per kernel, and text.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import type { MimeBundle } from './sink.ts';
import { MIME } from './mime.ts';
import { scriptJson } from './format.ts';

export const PLOTLY_MIME = 'application/vnd.plotly.v1+json';

export type Trace = Record<string, unknown>;
export type Layout = Record<string, unknown>;
export type PlotConfig = Record<string, unknown>;
export interface FigureJson {
  data: Trace[];
  layout: Layout;
  config: PlotConfig;
}

/** Draw functions of fallbacks that ran before plotly.js did wait here; the embedding output drains it. */
const QUEUE = '__servelabPlotlyQueue';

/**
 * Which HTML fallback carries plotly.js (4.8 MB minified, 1.5 MB gzipped). The first one built in this kernel
 * process embeds it and defines window.Plotly; every later one only calls Plotly.newPlot on its own div, queueing
 * the call until plotly.js has run. Outputs stay small and the page loads plotly.js once, but the trade-off is that
 * a notebook saved and reopened renders all its plots from the first plot's output: if that output is cleared, or
 * its cell re-run while the kernel lives (the new output no longer embeds), the saved notebook has no plotly.js and
 * its fallbacks say so; run the notebook from the top after a restart to embed it again. The kernel calls reset()
 * on restart. Frontends with a Plotly renderer (JupyterLab's extension, VS Code) use the JSON mimetype and run none
 * of this; a saved notebook's scripts run only once it is trusted.
 */
export class PlotlyEmbedding {
  private done = false;
  private cached: string | null = null;

  get embedded(): boolean {
    return this.done;
  }

  /** True once, for the output that is to embed plotly.js; false for every output after it until reset(). */
  claim(): boolean {
    if (this.done) return false;
    this.done = true;
    return true;
  }

  reset(): void {
    this.done = false;
  }

  /** plotly.js from npm plotly.js-dist-min, read once; a `</script` inside could end the element, so it is escaped. */
  source(): string {
    if (this.cached === null) {
      const path = createRequire(import.meta.url).resolve('plotly.js-dist-min');
      this.cached = readFileSync(path, 'utf8').replace(/<\/(script)/gi, '<\\/$1');
    }
    return this.cached;
  }
}

export const plotlyJs = new PlotlyEmbedding();

/** The scripts that define window.Plotly and then draw every figure that was waiting for it. */
export function loaderHtml(): string {
  // MathJaxConfig 'local' keeps plotly.js from reconfiguring the notebook's own MathJax.
  return (
    `<script type="text/javascript">window.PlotlyConfig = window.PlotlyConfig || { MathJaxConfig: 'local' };</script>\n` +
    `<script type="text/javascript">\n${plotlyJs.source()}\n</script>\n` +
    `<script type="text/javascript">(function () { var q = window.${QUEUE} || []; window.${QUEUE} = []; ` +
    `for (var i = 0; i < q.length; i++) { try { q[i](); } catch (e) { console.error(e); } } })();</script>`
  );
}

/** An output that only loads plotly.js, for a live chart (its own output is replaced on every update). */
export function loaderBundle(): MimeBundle {
  return { 'text/html': loaderHtml(), 'text/plain': '' };
}

const MISSING =
  'plotly.js is not loaded in this page: it is embedded in the first plot this kernel displayed. ' +
  'Re-run the notebook from the top to draw this plot.';

export function figureHtml(fig: FigureJson, embed: boolean): string {
  const id = `servelab-plot-${randomUUID()}`;
  const height = typeof fig.layout.height === 'number' ? fig.layout.height : 450;
  const div =
    `<div id="${id}" class="servelab-plot" style="width:100%;min-height:${height}px">` +
    `<div style="font:12px sans-serif;color:#888">Loading plotly.js&hellip;</div></div>\n`;
  const draw =
    `<script type="text/javascript">(function () {\n` +
    `  var fig = ${scriptJson(fig)};\n` +
    `  var id = ${JSON.stringify(id)};\n` +
    // Some frontends run an output's scripts before attaching it to the page: look for the div a while.
    `  function draw(tries) {\n` +
    `    var el = document.getElementById(id);\n` +
    `    if (!el) { if ((tries || 0) < 100) setTimeout(function () { draw((tries || 0) + 1); }, 50); return; }\n` +
    `    el.innerHTML = ''; window.Plotly.newPlot(el, fig.data, fig.layout, fig.config);\n` +
    `  }\n` +
    `  if (window.Plotly) { draw(); return; }\n` +
    `  (window.${QUEUE} = window.${QUEUE} || []).push(draw);\n` +
    `  setTimeout(function () { var el = document.getElementById(id); if (el && !window.Plotly && el.firstChild) el.firstChild.textContent = ${JSON.stringify(MISSING)}; }, 10000);\n` +
    `})();</script>`;
  return div + (embed ? loaderHtml() + '\n' : '') + draw;
}

/** JSON as Plotly reads it: typed arrays as arrays, NaN and infinities as null (a gap), dates as ISO strings. */
function plain(v: unknown): unknown {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'bigint') return Number(v);
  if (v === null || typeof v !== 'object') return typeof v === 'function' ? undefined : v;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number | bigint>, (x) => plain(x));
  if (Array.isArray(v)) return v.map((x) => plain(x) ?? null);
  if (v instanceof Date) return v.toISOString();
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const p = plain(x);
    if (p !== undefined) out[k] = p;
  }
  return out;
}

function titleOf(layout: Layout): string {
  const t = layout.title;
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { text?: unknown }).text === 'string') return (t as { text: string }).text;
  return '';
}

export function describeFigure(fig: FigureJson): string {
  const title = titleOf(fig.layout);
  const traces = fig.data.map((t) => {
    const n = Array.isArray(t.y) ? t.y.length : Array.isArray(t.x) ? t.x.length : Array.isArray(t.values) ? t.values.length : null;
    return `${String(t.type ?? 'scatter')}${t.name !== undefined ? ` '${String(t.name)}'` : ''}${n !== null ? ` (${n} points)` : ''}`;
  });
  return `Plotly figure${title ? ` '${title}'` : ''}: ${traces.length} trace${traces.length === 1 ? '' : 's'}${traces.length ? `: ${traces.join(', ')}` : ''}`;
}

export class Figure {
  constructor(
    readonly data: Trace[],
    readonly layout: Layout = {},
    readonly config: PlotConfig = {},
  ) {}

  toJSON(): FigureJson {
    return {
      data: this.data.map((t) => plain(t) as Trace),
      layout: plain(this.layout) as Layout,
      config: { responsive: true, displaylogo: false, ...(plain(this.config) as PlotConfig) },
    };
  }

  /** embed 'auto': this bundle's HTML carries plotly.js if none has in this kernel yet; 'never': it only draws. */
  bundle(opts: { embed?: 'auto' | 'never' } = {}): MimeBundle {
    const json = this.toJSON();
    const embed = opts.embed !== 'never' && plotlyJs.claim();
    return { [PLOTLY_MIME]: json, 'text/html': figureHtml(json, embed), 'text/plain': describeFigure(json) };
  }

  [MIME](): MimeBundle {
    return this.bundle();
  }
}

/** plot({ x, y, name: 'fp32' }) or plot([trace, trace], { title: { text: 'GEMM' } }): a figure to display. */
export function plot(traces: Trace | readonly Trace[], layout: Layout = {}, config: PlotConfig = {}): Figure {
  const list = Array.isArray(traces) ? [...traces] : [traces as Trace];
  list.forEach((t, i) => {
    if (typeof t !== 'object' || t === null || Array.isArray(t)) throw new TypeError(`plot(): trace ${i} must be an object such as { x: [...], y: [...] }`);
  });
  return new Figure(list, titlesAsObjects(layout), config);
}

/**
 * plotly.js 3 and later ignore the old shorthand `title: 'text'` (on the figure and on its axes); people still write
 * it, so it becomes `{ text }` instead of silently vanishing.
 */
function titlesAsObjects(layout: Layout): Layout {
  const out: Layout = { ...layout };
  for (const [k, v] of Object.entries(out)) {
    if (k === 'title' && typeof v === 'string') out[k] = { text: v };
    else if (/^[xyz]axis\d*$/.test(k) && v && typeof v === 'object' && typeof (v as Layout).title === 'string') out[k] = { ...(v as Layout), title: { text: (v as Layout).title } };
  }
  return out;
}
