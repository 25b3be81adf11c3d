import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { beforeEach, describe, expect, it } from 'vitest';
import { PLOTLY_MIME, plot, plotlyJs, type FigureJson } from '../../../kernel/display/plotly.ts';
import { toMimeBundle } from '../../../kernel/display/mime.ts';

const PLOTLY_SOURCE = readFileSync(createRequire(import.meta.url).resolve('plotly.js-dist-min'), 'utf8');
const VERSION = /plotly\.js v(\d+\.\d+\.\d+)/.exec(PLOTLY_SOURCE)![1];

/** The figure JSON as the draw script carries it inside the HTML fallback. */
function figureInHtml(html: string): FigureJson {
  const m = /var fig = (.*);\n/.exec(html);
  return JSON.parse(m![1]);
}

beforeEach(() => plotlyJs.reset());

describe('plot()', () => {
  it('one bundle with the plotly JSON, an HTML fallback and text', () => {
    const fig = plot([{ type: 'scatter', x: [1, 2, 3], y: [2, 4, 8], name: 'fp32' }], { title: { text: 'GEMM' } });
    const b = toMimeBundle(fig);
    expect(Object.keys(b).sort()).toEqual([PLOTLY_MIME, 'text/html', 'text/plain'].sort());
    expect(b[PLOTLY_MIME]).toEqual({
      data: [{ type: 'scatter', x: [1, 2, 3], y: [2, 4, 8], name: 'fp32' }],
      layout: { title: { text: 'GEMM' } },
      config: { responsive: true, displaylogo: false },
    });
    expect(b['text/plain']).toBe("Plotly figure 'GEMM': 1 trace: scatter 'fp32' (3 points)");
    expect(figureInHtml(String(b['text/html']))).toEqual(b[PLOTLY_MIME]);
  });

  it('the first HTML fallback embeds plotly.js; the second only draws, waiting for window.Plotly', () => {
    const first = String(toMimeBundle(plot({ y: [1, 2] }))['text/html']);
    const second = String(toMimeBundle(plot({ y: [3, 4] }))['text/html']);
    expect(first).toContain(`plotly.js v${VERSION}`);
    expect(first).toContain('window.Plotly = Plotly');
    expect(first.length).toBeGreaterThan(PLOTLY_SOURCE.length);
    expect(second).not.toContain(`plotly.js v${VERSION}`);
    expect(second.length).toBeLessThan(2000);
    expect(second).toContain('window.__servelabPlotlyQueue');
    expect(second).toContain('window.Plotly.newPlot(el, fig.data, fig.layout, fig.config)');
    expect(plotlyJs.embedded).toBe(true);
  });

  it('reset() (a kernel restart) makes the next figure embed plotly.js again', () => {
    toMimeBundle(plot({ y: [1] }));
    plotlyJs.reset();
    expect(String(toMimeBundle(plot({ y: [1] }))['text/html'])).toContain(`plotly.js v${VERSION}`);
  });

  it('embed "never" draws without embedding and leaves the embedding to a later figure', () => {
    const b = plot({ y: [1] }).bundle({ embed: 'never' });
    expect(String(b['text/html'])).not.toContain(`plotly.js v${VERSION}`);
    expect(plotlyJs.embedded).toBe(false);
  });

  it('embedded plotly.js cannot end its script element early; figure text cannot either', () => {
    const h = String(toMimeBundle(plot({ y: [1], name: '</script><script>alert(1)</script>' }))['text/html']);
    const scripts = h.match(/<script\b/g)!.length;
    expect(h.match(/<\/script>/g)!.length).toBe(scripts);
    expect(h).not.toContain('</script><script>alert');
    expect(figureInHtml(h).data[0].name).toBe('</script><script>alert(1)</script>');
  });

  it('typed arrays become arrays and non-finite numbers gaps (null), as Plotly reads JSON', () => {
    const b = toMimeBundle(plot({ x: Float32Array.of(0.5, 1), y: [1, NaN], z: BigInt64Array.of(3n) }));
    expect((b[PLOTLY_MIME] as FigureJson).data[0]).toEqual({ x: [0.5, 1], y: [1, null], z: [3] });
  });

  it('a trace must be an object', () => {
    expect(() => plot([1 as never])).toThrow(/trace 0 must be an object/);
  });
});

describe('plot() title shorthand', () => {
  it('turns string titles of the figure and its axes into { text }, which plotly.js 3+ requires', () => {
    const f = plot([{ x: [1], y: [2] }], { title: 'GEMM', xaxis: { title: 'n' }, yaxis2: { title: { text: 'ms' } } }).toJSON();
    expect(f.layout).toEqual({ title: { text: 'GEMM' }, xaxis: { title: { text: 'n' } }, yaxis2: { title: { text: 'ms' } } });
  });
});
