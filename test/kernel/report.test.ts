/** `servelab report`: a notebook executed through the real kernel into one standalone HTML file, plus an index. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const cell = (source: string, id: string) => ({ cell_type: 'code', id, metadata: {}, source, outputs: [], execution_count: null });

describe('servelab report', () => {
  it('writes a standalone report with plotly.js once, the environment and the measured data; a failing cell is shown and the command exits 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-report-'));
    const nb = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { servelab: { title: 'Report test' } },
      cells: [
        { cell_type: 'markdown', id: 'm0', metadata: {}, source: '# Measured\nA *small* run.' },
        cell("import { createDevice, matmul } from 'servelab';\nconst dev = await createDevice('cpu');\nconst a = dev.tensor([1, 2, 3, 4], [2, 2]);\n(await matmul(a, a)).toArray()", 'c1'),
        // A live chart as the first plot: the kernel sends plotly.js in a loader output of its own, which the report
        // must not embed a second time.
        cell("const chart = live({ title: 'live first', series: { rate: { unit: '1/s' } } });\nfor (let i = 0; i < 5; i++) chart.push({ rate: i });\nchart.close();", 'c1b'),
        cell("display(plot([{ x: [1, 2, 3], y: [3, 1, 2], type: 'scatter', name: 'first' }]))", 'c2'),
        cell("display(plot([{ x: [1, 2], y: [5, 6], type: 'bar', name: 'second' }]))", 'c3'),
        cell("throw new RangeError('this cell fails on purpose')", 'c4'),
        cell("console.log('still ran after the failure')", 'c5'),
      ],
    };
    writeFileSync(join(dir, 'demo.ipynb'), JSON.stringify(nb));
    const r = spawnSync('node', ['bin/servelab.js', 'report', join(dir, 'demo.ipynb'), '-o', join(dir, 'out')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/6\/6 cells/);
    expect(r.stderr).toMatch(/demo: cell 6 failed: RangeError: this cell fails on purpose/);
    const html = readFileSync(join(dir, 'out', 'demo.html'), 'utf8');
    // plotly.js embedded exactly once, two figures drawn from it.
    expect(html.match(/\* plotly\.js v\d+\.\d+\.\d+/g)?.length).toBe(1);
    expect(html.split('Plotly.newPlot("plot-').length - 1).toBe(3);
    expect(html.length).toBeGreaterThan(1_000_000);
    expect(html.indexOf('<script src=')).toBe(-1); // offline: nothing loaded from elsewhere
    expect(html).toMatch(/<h1[^>]*>Measured<\/h1>/);
    expect(html).toMatch(/\[ 7, 10, 15, 22 \]/);
    expect(html).toMatch(/RangeError: this cell fails on purpose/);
    expect(html).toMatch(/still ran after the failure/);
    const env = JSON.parse(/<script type="application\/json" id="servelab-environment">(.*?)<\/script>/s.exec(html)![1]);
    expect(env.cpu.cores).toBeGreaterThan(0);
    expect(env.versions.onnxruntime).toMatch(/^1\.30/);
    expect(env.backend.requested).toBeDefined();
    const data = JSON.parse(/<script type="application\/json" id="servelab-measurements">(.*?)<\/script>/s.exec(html)![1]);
    expect(data.figures.slice(1).map((f: { data: { name: string }[] }) => f.data[0].name)).toEqual(['first', 'second']);
    const index = readFileSync(join(dir, 'out', 'index.html'), 'utf8');
    expect(index).toMatch(/<a href="demo.html">Report test<\/a><\/td><td>1 failing cell/);
  }, 180_000);

  it('a missing input is reported, the index still written, and the exit code is 1', () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-report-'));
    const r = spawnSync('node', ['bin/servelab.js', 'report', join(dir, 'nope.ipynb'), '-o', join(dir, 'out')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/nope: .*no such file/i);
    expect(readFileSync(join(dir, 'out', 'index.html'), 'utf8')).toMatch(/could not run/);
  });
});
