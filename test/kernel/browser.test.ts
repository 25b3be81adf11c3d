/**
 * Plots as a person sees them, in headless Chromium (Debian's, driven by playwright-core):
 *   (a) the classic notebook UI (`jupyter notebook`, notebook 6.4) opens a signed notebook whose plot cells were
 *       executed by the servelab kernel; the text/html fallback (plotly.js embedded in the first plot's output) runs
 *       because the notebook is trusted, and every plot draws; an unsigned copy runs none of it;
 *   (b) a `servelab report` (direct mode) opened from file:// draws its plots offline.
 * A plot counts as drawn when Plotly made its graph div with the figure's data, and a screenshot of it is not blank:
 * mostly non-white, with pixels of the trace's own colour. Screenshots go to screenshots/.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inflateSync } from 'node:zlib';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JUPYTER, PYTHON, REPO, requireJupyter, scratchJupyter, type ScratchJupyter } from './jupyter_env.ts';
import { startJupyterServer, type JupyterServer } from './jupyter_server.ts';
import { runCommand } from '../helpers/process.ts';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO, 'screenshots');
/** The traces' colours, so that the screenshot can be searched for them. */
const RED = '#d62728';
const GREEN = '#2ca02c';

/**
 * `jupyter trust` (nbformat's TrustNotebookApp). Debian ships its script in jupyter-nbformat, which the notebook
 * packages do not pull in; the module itself runs the same app.
 */
const TRUST: [string, string[]] = existsSync('/usr/bin/jupyter-trust') ? [JUPYTER, ['trust']] : [PYTHON, ['-m', 'nbformat.sign']];

const KERNELSPEC = { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' };

/** Two plots: the first output embeds plotly.js, the second only draws (it waits for the first if need be). */
function plotNotebook(title: string) {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: KERNELSPEC, servelab: { title } },
    cells: [
      { cell_type: 'markdown', id: 'intro', metadata: {}, source: `# ${title}\n\nTwo plots from the servelab kernel.` },
      {
        cell_type: 'code',
        id: 'first',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: [
          'const xs = Array.from({ length: 40 }, (_, i) => i);',
          `display(plot({ type: 'scatter', mode: 'lines+markers', name: 'sine', x: xs, y: xs.map((x) => Math.sin(x / 4)), line: { color: '${RED}', width: 4 }, marker: { size: 8 } }, { title: { text: 'first plot' }, height: 360, margin: { t: 40, r: 10, b: 30, l: 40 } }));`,
        ].join('\n'),
      },
      {
        cell_type: 'code',
        id: 'second',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: `display(plot({ type: 'bar', name: 'bars', x: ['a', 'b', 'c', 'd'], y: [4, 1, 3, 2], marker: { color: '${GREEN}' } }, { title: { text: 'second plot' }, height: 320 }));`,
      },
    ],
  };
}

/** RGBA pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are). */
export function decodePng(png: Buffer): { width: number; height: number; rgba: Uint8Array } {
  if (png.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (pos < png.length) {
    const len = png.readUInt32BE(pos);
    const type = png.toString('latin1', pos + 4, pos + 8);
    const data = png.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const [depth, colour, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || interlace !== 0 || (colour !== 2 && colour !== 6)) throw new Error(`PNG kind not handled: depth ${depth}, colour ${colour}, interlace ${interlace}`);
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const cur = new Uint8Array(stride);
  const prev = new Uint8Array(stride);
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? cur[i - channels] : 0;
      const b = prev[i];
      const c = i >= channels ? prev[i - channels] : 0;
      let v = line[i];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[i] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      rgba.set(cur.subarray(x * channels, x * channels + 3), (y * width + x) * 4);
      rgba[(y * width + x) * 4 + 3] = channels === 4 ? cur[x * channels + 3] : 255;
    }
    prev.set(cur);
  }
  return { width, height, rgba };
}

interface PixelStats {
  width: number;
  height: number;
  /** Share of pixels that are not (near) white. */
  inked: number;
  /** Pixels within a small distance of the given colour. */
  matching: number;
  /** Distinct colours (quantised to 5 bits a channel). */
  colours: number;
}

function pixelStats(png: Buffer, colour: string): PixelStats {
  const { width, height, rgba } = decodePng(png);
  const [r0, g0, b0] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  let inked = 0;
  let matching = 0;
  const colours = new Set<number>();
  for (let i = 0; i < rgba.length; i += 4) {
    const [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]];
    if (r < 235 || g < 235 || b < 235) inked++;
    if (Math.abs(r - r0) + Math.abs(g - g0) + Math.abs(b - b0) < 40) matching++;
    colours.add(((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3));
  }
  return { width, height, inked: inked / (width * height), matching, colours: colours.size };
}

/** What the page-side callbacks read, typed here since the project compiles without the DOM library. */
interface PlotDiv {
  data?: { type?: string; y: unknown[] }[];
  querySelector(selector: string): unknown;
  querySelectorAll(selector: string): { length: number };
}
interface PageWindow {
  document: { querySelectorAll(selector: string): Iterable<PlotDiv> };
  Plotly?: { newPlot?: unknown };
  Jupyter?: { notebook?: { _fully_loaded?: boolean; trusted?: boolean } };
}

interface DrawnPlot {
  traces: number;
  points: number;
  type: string;
  /** Trace groups Plotly drew in its SVG. */
  drawn: number;
}

/** Waits until Plotly has drawn n graph divs (each with its data and a trace in its SVG), then reads what they hold. */
async function drawnPlots(page: Page, n: number, timeoutMs: number): Promise<DrawnPlot[]> {
  await page.waitForFunction(
    (count) => {
      const els = [...(globalThis as unknown as PageWindow).document.querySelectorAll('.js-plotly-plot')];
      return els.length >= count && els.every((el) => Array.isArray(el.data) && el.data.length > 0 && el.querySelector('.main-svg .trace') !== null);
    },
    n,
    { timeout: timeoutMs, polling: 100 },
  );
  return page.evaluate(() =>
    [...(globalThis as unknown as PageWindow).document.querySelectorAll('.js-plotly-plot')].map((el) => ({
      traces: el.data!.length,
      points: el.data![0].y.length,
      type: el.data![0].type ?? 'scatter',
      drawn: el.querySelectorAll('.main-svg .trace').length,
    })),
  );
}

/** Screenshots each plot (and the page) into screenshots/, and returns each plot's pixel statistics. */
async function shoot(page: Page, prefix: string, colours: string[]): Promise<PixelStats[]> {
  mkdirSync(SHOTS, { recursive: true });
  // Let Plotly finish its transitions and fonts settle.
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(SHOTS, `${prefix}-page.png`), fullPage: true });
  const plots = page.locator('.js-plotly-plot');
  const stats: PixelStats[] = [];
  for (let i = 0; i < colours.length; i++) {
    const el = plots.nth(i);
    await el.scrollIntoViewIfNeeded();
    const png = await el.screenshot({ path: join(SHOTS, `${prefix}-plot-${i + 1}.png`) });
    stats.push(pixelStats(png, colours[i]));
  }
  return stats;
}

function expectDrawn(stats: PixelStats[]): void {
  for (const s of stats) {
    expect(s.width).toBeGreaterThan(200);
    expect(s.height).toBeGreaterThan(150);
    // Axes, grid, title and the trace: a blank or white frame would be near 0.
    expect(s.inked).toBeGreaterThan(0.02);
    expect(s.colours).toBeGreaterThan(8);
    // The trace itself, in its own colour.
    expect(s.matching).toBeGreaterThan(200);
  }
}

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe.skipIf(!existsSync(CHROMIUM) && process.env.CI !== 'true')(`plots in headless Chromium${existsSync(CHROMIUM) ? '' : ` (skipped: no ${CHROMIUM}; fix: bash scripts/jupyter-deps.sh)`}`, () => {
  let profile = '';
  let context: BrowserContext | undefined;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`CI=true but ${CHROMIUM} is missing; fix: bash scripts/jupyter-deps.sh`);
    profile = mkdtempSync(join(tmpdir(), 'servelab-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      // Chromium's crash-report database and caches go under the fresh profile too, not the user's ~/.config.
      env: { ...process.env, XDG_CONFIG_HOME: join(profile, 'xdg-config'), XDG_CACHE_HOME: join(profile, 'xdg-cache') },
      viewport: { width: 1200, height: 900 },
      timeout: 30_000,
    });
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  }, 30_000);

  async function newPage(): Promise<Page> {
    const page = await context!.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${page.url().split('?')[0]}: ${e.message}`));
    return page;
  }

  requireJupyter('the classic notebook UI (notebook 6.4)', () => {
    let scratch: ScratchJupyter | undefined;
    let server: JupyterServer | undefined;
    let root = '';

    beforeAll(async () => {
      scratch = scratchJupyter();
      root = mkdtempSync(join(tmpdir(), 'servelab-classic-'));
      // Executed by the servelab kernel, as a student would have saved it.
      const source = join(scratch.dir, 'plots.ipynb');
      writeFileSync(source, JSON.stringify(plotNotebook('Plots in the classic notebook')));
      const ex = await runCommand(JUPYTER, ['nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=servelab', '--output-dir', root, source], { env: scratch.env, cwd: root, timeoutMs: 120_000 });
      if (ex.code !== 0) throw new Error(`nbconvert --execute failed:\n${ex.output}`);
      // A copy that differs (signatures are by content), left unsigned.
      const executed = JSON.parse(readFileSync(join(root, 'plots.ipynb'), 'utf8')) as { metadata: Record<string, unknown> };
      executed.metadata.servelab = { title: 'unsigned copy' };
      writeFileSync(join(root, 'unsigned.ipynb'), JSON.stringify(executed));
      const trust = await runCommand(TRUST[0], [...TRUST[1], join(root, 'plots.ipynb')], { env: scratch.env, cwd: root, timeoutMs: 60_000 });
      if (trust.code !== 0 || !/Signing notebook/.test(trust.output)) throw new Error(`jupyter trust failed:\n${trust.output}`);
      server = await startJupyterServer(scratch, { app: 'notebook', root });
    }, 180_000);

    afterAll(async () => {
      const stopped = await server?.stop();
      scratch?.cleanup();
      if (root) rmSync(root, { recursive: true, force: true });
      if (stopped) expect(stopped.leftover, `kernels left running by jupyter notebook:\n${server!.log()}`).toEqual([]);
    }, 40_000);

    it('renders both plots of a signed, executed notebook from its HTML fallback', async () => {
      const page = await newPage();
      try {
        await page.goto(`${server!.url}notebooks/plots.ipynb?token=${server!.token}`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
        await page.waitForFunction(() => (globalThis as unknown as PageWindow).Jupyter?.notebook?._fully_loaded === true, null, { timeout: 30_000 });
        const trusted = await page.evaluate(() => (globalThis as unknown as PageWindow).Jupyter?.notebook?.trusted);
        expect(trusted).toBe(true);
        const plots = await drawnPlots(page, 2, 30_000);
        expect(plots).toEqual([
          { traces: 1, points: 40, type: 'scatter', drawn: 1 },
          { traces: 1, points: 4, type: 'bar', drawn: 1 },
        ]);
        // Drawn by the embedded plotly.js, not waiting for one, and nothing fell back to the notice.
        expect(await page.evaluate(() => typeof (globalThis as unknown as PageWindow).Plotly?.newPlot)).toBe('function');
        expect(await page.locator('text=plotly.js is not loaded').count()).toBe(0);
        expectDrawn(await shoot(page, 'classic-notebook', [RED, GREEN]));
      } finally {
        await page.close();
      }
    }, 90_000);

    it('runs none of it in an unsigned notebook (the trust boundary holds)', async () => {
      const page = await newPage();
      try {
        await page.goto(`${server!.url}notebooks/unsigned.ipynb?token=${server!.token}`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
        await page.waitForFunction(() => (globalThis as unknown as PageWindow).Jupyter?.notebook?._fully_loaded === true, null, { timeout: 30_000 });
        expect(await page.evaluate(() => (globalThis as unknown as PageWindow).Jupyter?.notebook?.trusted)).toBe(false);
        // The outputs are there (sanitised), yet no script of theirs ran.
        await page.waitForSelector('.output_html', { timeout: 10_000 });
        await page.waitForTimeout(1000);
        expect(await page.locator('.js-plotly-plot').count()).toBe(0);
        expect(await page.evaluate(() => typeof (globalThis as unknown as PageWindow).Plotly)).toBe('undefined');
      } finally {
        await page.close();
      }
    }, 60_000);
  });

  describe('a servelab report opened from file://', () => {
    let dir = '';
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'servelab-report-browser-'));
      const input = join(dir, 'plots.ipynb');
      writeFileSync(input, JSON.stringify(plotNotebook('Plots in a report')));
      const r = await runCommand(process.execPath, [join(REPO, 'bin', 'servelab.js'), 'report', input, '-o', join(dir, 'out')], { env: process.env, cwd: dir, timeoutMs: 120_000 });
      if (r.code !== 0) throw new Error(`servelab report failed (exit ${r.code}):\n${r.output}`);
    }, 150_000);

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('draws both plots offline', async () => {
      const file = join(dir, 'out', 'plots.html');
      expect(existsSync(file)).toBe(true);
      const page = await newPage();
      // Offline means offline: any request off file:// fails the test.
      const remote: string[] = [];
      await page.route(/^(?!file:|data:|blob:|about:)/, (route) => {
        remote.push(route.request().url());
        return route.abort();
      });
      try {
        await page.goto(pathToFileURL(file).href, { waitUntil: 'load', timeout: 30_000 });
        const plots = await drawnPlots(page, 2, 30_000);
        expect(plots).toEqual([
          { traces: 1, points: 40, type: 'scatter', drawn: 1 },
          { traces: 1, points: 4, type: 'bar', drawn: 1 },
        ]);
        expectDrawn(await shoot(page, 'report', [RED, GREEN]));
        expect(remote).toEqual([]);
        // The measure tells a blank area from a plot: the page's empty left margin fails it.
        const margin = pixelStats(await page.screenshot({ clip: { x: 0, y: 0, width: 60, height: 400 } }), RED);
        expect(margin.inked).toBeLessThan(0.001);
        expect(margin.matching).toBe(0);
      } finally {
        await page.close();
      }
    }, 60_000);
  });

  it('raised no uncaught errors in any page', () => {
    expect(pageErrors).toEqual([]);
  });
});
