/** An executed notebook -> one standalone, offline HTML file: markdown rendered, plotly.js embedded once, data as JSON. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Marked } from 'marked';
import type { Output } from './outputs.ts';
import { sourceOf, type Notebook } from './execute.ts';

const PLOTLY = 'application/vnd.plotly.v1+json';
const PLOTLY_BANNER = /\* plotly\.js v\d+\.\d+/;
const marked = new Marked({ gfm: true });
const require = createRequire(import.meta.url);
let plotlySource: string | null = null;

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '');
/** JSON inside <script>: '</' must not close the element. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
const text = (v: unknown) => (Array.isArray(v) ? v.join('') : String(v ?? ''));

export interface ReportMeta {
  title: string;
  environment: Record<string, unknown>;
  source: string;
  seconds: number;
  failed: { index: number; ename: string; evalue: string }[];
}

function renderOutput(o: Output, figures: unknown[]): string {
  if (o.output_type === 'stream') return `<pre class="stream ${o.name}">${esc(stripAnsi(o.text))}</pre>`;
  if (o.output_type === 'error') return `<pre class="error">${esc(stripAnsi(o.traceback.join('\n') || `${o.ename}: ${o.evalue}`))}</pre>`;
  const d = o.data;
  if (d[PLOTLY]) {
    const fig = d[PLOTLY] as { data?: unknown[]; layout?: unknown; config?: unknown };
    const id = `plot-${figures.length}`;
    figures.push(fig);
    return `<div class="plot" id="${id}"></div><script>Plotly.newPlot(${JSON.stringify(id)}, ${scriptJson(fig.data ?? [])}, ${scriptJson(fig.layout ?? {})}, ${scriptJson({ responsive: true, displaylogo: false, ...((fig.config as object) ?? {}) })});</script>`;
  }
  if (d['image/png']) return `<img alt="" src="data:image/png;base64,${text(d['image/png']).trim()}">`;
  if (d['image/jpeg']) return `<img alt="" src="data:image/jpeg;base64,${text(d['image/jpeg']).trim()}">`;
  if (d['image/svg+xml']) return `<div class="svg">${text(d['image/svg+xml'])}</div>`;
  // The kernel's own plotly.js loader output: the report embeds plotly.js once in <head> instead.
  if (d['text/html'] && PLOTLY_BANNER.test(text(d['text/html']))) return '';
  if (d['text/html']) return `<div class="html">${text(d['text/html'])}</div>`;
  if (d['text/markdown']) return `<div class="markdown">${marked.parse(text(d['text/markdown'])) as string}</div>`;
  if (d['text/plain'] !== undefined) return `<pre class="result">${esc(stripAnsi(text(d['text/plain'])))}</pre>`;
  if (d['application/json'] !== undefined) return `<pre class="result">${esc(JSON.stringify(d['application/json'], null, 2))}</pre>`;
  return '';
}

const CSS = `
body{font:15px/1.55 system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#1d2330}
h1,h2,h3{line-height:1.25} code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;padding:.6rem .8rem;border-radius:6px;overflow-x:auto;white-space:pre-wrap}
.cell{margin:1rem 0}.code{border-left:3px solid #4b7bec}.prompt{color:#8a93a5;font-size:12px}
pre.error{background:#fff1f0;border-left:3px solid #e5484d}pre.stderr{background:#fff8e6}
.plot{width:100%;min-height:380px}table{border-collapse:collapse}td,th{border:1px solid #d9dde5;padding:.25rem .5rem}
.banner{padding:.6rem .8rem;border-radius:6px;background:#fff1f0;border:1px solid #e5484d;margin:1rem 0}
details{margin-top:2rem}`;

export function renderReport(nb: Notebook, meta: ReportMeta): string {
  const figures: unknown[] = [];
  const cells = nb.cells.map((c, i) => {
    const src = sourceOf(c);
    if (c.cell_type === 'markdown') return `<div class="cell markdown">${marked.parse(src) as string}</div>`;
    if (c.cell_type !== 'code') return `<pre class="cell raw">${esc(src)}</pre>`;
    const outs = (c.outputs ?? []).map((o) => renderOutput(o, figures)).join('\n');
    const failed = meta.failed.some((f) => f.index === i) ? ' failed' : '';
    return `<div class="cell${failed}"><div class="prompt">In [${c.execution_count ?? ' '}]</div><pre class="code"><code>${esc(src)}</code></pre>${outs}</div>`;
  });
  if (figures.length) plotlySource ??= readFileSync(require.resolve('plotly.js-dist-min/plotly.min.js'), 'utf8');
  const banner = meta.failed.length
    ? `<div class="banner">${meta.failed.length} cell${meta.failed.length > 1 ? 's' : ''} failed: ${meta.failed.map((f) => esc(`${f.ename}: ${f.evalue}`)).join('; ')}</div>`
    : '';
  const measured = { figures, results: nb.cells.flatMap((c) => (c.outputs ?? []).flatMap((o) => ('data' in o && o.data['application/json'] !== undefined ? [o.data['application/json']] : []))) };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(meta.title)}</title><style>${CSS}</style>
${figures.length ? `<script>${plotlySource!.replace(/<\/script/gi, '<\\/script')}</script>` : ''}
</head><body>
<p class="prompt">servelab report of ${esc(meta.source)}, executed in ${meta.seconds.toFixed(1)} s</p>
${banner}
${cells.join('\n')}
<details><summary>Environment and measured data</summary>
<pre>${esc(JSON.stringify(meta.environment, null, 2))}</pre></details>
<script type="application/json" id="servelab-environment">${scriptJson(meta.environment)}</script>
<script type="application/json" id="servelab-measurements">${scriptJson(measured)}</script>
</body></html>
`;
}

export function renderIndex(entries: { file: string; title: string; failed: number; seconds: number; error?: string }[], environment: Record<string, unknown>): string {
  const rows = entries.map((e) => `<tr><td><a href="${esc(e.file)}">${esc(e.title)}</a></td><td>${e.error ? `could not run: ${esc(e.error)}` : e.failed ? `${e.failed} failing cell${e.failed > 1 ? 's' : ''}` : 'ok'}</td><td>${e.seconds.toFixed(1)} s</td></tr>`);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>servelab reports</title><style>${CSS}</style></head><body>
<h1>servelab reports</h1><table><tr><th>lesson</th><th>status</th><th>time</th></tr>${rows.join('')}</table>
<details><summary>Environment</summary><pre>${esc(JSON.stringify(environment, null, 2))}</pre></details>
<script type="application/json" id="servelab-environment">${scriptJson(environment)}</script></body></html>
`;
}
