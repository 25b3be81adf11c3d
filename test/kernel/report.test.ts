/** `servelab report`: a notebook executed through the real kernel into one standalone HTML file, plus an index; --solutions runs the reference solutions. */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

/** The titles of the figures a report drew, from its measured data. */
const figureTitles = (html: string): string[] =>
  JSON.parse(/<script type="application\/json" id="servelab-measurements">(.*?)<\/script>/s.exec(html)![1]).figures.map((f: { layout?: { title?: { text?: string } } }) => f.layout?.title?.text ?? '');
const environmentOf = (html: string) => JSON.parse(/<script type="application\/json" id="servelab-environment">(.*?)<\/script>/s.exec(html)![1]);

const DEMO = [
  '---',
  'title: Demo lesson',
  'objectives:',
  '  - Double a number',
  'lecture: Background',
  '---',
  '',
  '```ts',
  'const a = 21;',
  '```',
  '',
  '```ts exercise double',
  'const twice = NaN; // TODO',
  '```',
  '',
  '```ts check double',
  "check('twice', twice, 2 * a);",
  '```',
  '',
  '```ts exercise half',
  'const halfOf = NaN; // TODO',
  '```',
  '',
  '```ts check half',
  "check('half', halfOf, a / 2);",
  '```',
  '',
  '```ts exercise triple',
  'const thrice = NaN; // TODO',
  '```',
  '',
  '```ts check triple',
  "check('thrice', thrice, 3 * a);",
  '```',
  '',
  'The payoff, once the exercise is solved:',
  '',
  '```ts',
  'if (Number.isFinite(twice)) display(plot([{ x: [1, 2], y: [twice, 2 * twice], name: \'doubled\' }], { title: { text: \'the payoff\' } }));',
  'else display(md`Finish the exercise above to see the payoff.`);',
  '```',
].join('\n');

// `half` has a wrong solution, `triple` none: both are reported, and the rest still runs.
const DEMO_SOLUTIONS = ['```ts solution double', 'const twice = 2 * a;', '```', '', '```ts solution half', 'const halfOf = a;', '```'].join('\n');

describe('servelab report --solutions', () => {
  it('runs the reference solutions instead of the starter code, so the payoff appears; names a missing or failing solution; the default stays the learner\'s view', () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-solutions-'));
    mkdirSync(join(dir, 'lessons'));
    writeFileSync(join(dir, 'lessons', '03-demo.md'), DEMO);
    writeFileSync(join(dir, 'lessons', '03-demo.solutions.md'), DEMO_SOLUTIONS);
    // No Vulkan driver anywhere: the report says so in one line, and nothing native reaches stderr.
    const env: NodeJS.ProcessEnv = { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' };
    delete env.SERVELAB_DEVICE;
    const report = (...args: string[]) => spawnSync('node', ['bin/servelab.js', 'report', join(dir, 'lessons', '03-demo.md'), ...args], { encoding: 'utf8', timeout: 120_000, env });

    const learner = report('-o', join(dir, 'learner'));
    expect(learner.status, learner.stderr).toBe(0);
    expect(learner.stderr).toMatch(/^no GPU adapter: using the cpu backend/m);
    expect(learner.stderr).not.toMatch(/\.cpp:\d+|^Warning:/m);
    const plain = readFileSync(join(dir, 'learner', '03-demo.html'), 'utf8');
    expect(figureTitles(plain)).not.toContain('the payoff');
    // Checked with booleans: a failing toContain would print the whole page, plotly.js included.
    const finish = /<p>Finish the exercise above to see the payoff\.<\/p>/;
    expect(finish.test(plain), 'the learner is asked to finish the exercise').toBe(true);
    expect(plain.includes('const twice = NaN; // TODO'), 'the starter code is shown').toBe(true);
    expect(plain.includes('const twice = 2 * a;'), 'no solution in the learner\'s view').toBe(false);
    expect(plain.includes('class="banner"'), 'no failure in the learner\'s view').toBe(false);

    const reference = report('--solutions', '-o', join(dir, 'reference'));
    expect(reference.status).toBe(1);
    expect(reference.stderr).toMatch(/03-demo: cell \d+: check failed with the reference solution: ❌ half /);
    expect(reference.stderr).toMatch(/03-demo: cell \d+: no reference solution: exercise 'triple' ran its starter code: add a ```ts solution triple block to .*lessons\/03-demo\.solutions\.md/);
    // The check of an unsolved exercise fails on its starter code, as expected: only the missing solution is named.
    expect(reference.stderr).not.toMatch(/❌ thrice/);
    const html = readFileSync(join(dir, 'reference', '03-demo.html'), 'utf8');
    expect(figureTitles(html)).toContain('the payoff');
    expect(finish.test(html), 'the payoff replaces the request to finish').toBe(false);
    expect(html.includes('const twice = 2 * a;'), 'the solution is shown').toBe(true);
    expect(html).toMatch(/<title>Demo lesson \(reference solutions\)<\/title>/);
    expect(html).toMatch(/class="banner">2 cells failed: .*no reference solution: exercise &#39;triple&#39;/);
    expect(environmentOf(html).solutions).toMatchObject({ solved: ['double', 'half'], missing: ['triple'] });
    expect(readFileSync(join(dir, 'reference', 'index.html'), 'utf8')).toMatch(/Demo lesson \(reference solutions\)<\/a><\/td><td>2 failing cells/);

    // A notebook built from the lesson finds the lesson's solutions through its metadata.
    expect(spawnSync('node', [join(process.cwd(), 'bin/servelab.js'), 'build'], { cwd: dir, encoding: 'utf8' }).status).toBe(0);
    const fromNotebook = spawnSync('node', ['bin/servelab.js', 'report', '--solutions', join(dir, 'notebooks', '03-demo.ipynb'), '-o', join(dir, 'notebook')], { encoding: 'utf8', timeout: 120_000, env });
    expect(fromNotebook.status).toBe(1);
    expect(figureTitles(readFileSync(join(dir, 'notebook', '03-demo.html'), 'utf8'))).toContain('the payoff');
    expect(fromNotebook.stderr).toMatch(/no reference solution: exercise 'triple'/);
  }, 240_000);

  it('lesson 00 with its reference solution shows the cost chart the learner\'s report lacks, every check passing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-solutions-00-'));
    const lesson = 'lessons/00-why-serving-is-costly.md';
    const reference = spawnSync('node', ['bin/servelab.js', 'report', '--solutions', lesson, '-o', join(dir, 'reference')], { encoding: 'utf8', timeout: 300_000 });
    expect(reference.status, reference.stderr).toBe(0);
    const html = readFileSync(join(dir, 'reference', '00-why-serving-is-costly.html'), 'utf8');
    expect(figureTitles(html)).toContain('$ per 1M output tokens');
    expect(html.includes('✅'), 'a passed check').toBe(true);
    expect(html.includes('❌'), 'a failed check').toBe(false);
    expect(environmentOf(html).solutions).toMatchObject({ solved: ['cost'], missing: [] });
    const learner = spawnSync('node', ['bin/servelab.js', 'report', lesson, '-o', join(dir, 'learner')], { encoding: 'utf8', timeout: 300_000 });
    expect(learner.status, learner.stderr).toBe(0);
    expect(figureTitles(readFileSync(join(dir, 'learner', '00-why-serving-is-costly.html'), 'utf8'))).not.toContain('$ per 1M output tokens');
  }, 600_000);
});
