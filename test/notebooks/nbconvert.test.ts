/**
 * Every notebook in notebooks/ executes from top to bottom under nbconvert (nbclient, the tool CI systems and
 * Jupyter Book use) with the servelab kernelspec: exit 0, outputs present, no error output. A small notebook built
 * here runs too, so that this file checks the kernel under nbconvert even before a lesson exists, and a failing
 * cell is shown to fail the run.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { JUPYTER, REPO, requireJupyter, scratchJupyter, type ScratchJupyter } from '../kernel/jupyter_env.ts';
import { reapKernels } from '../kernel/jupyter_server.ts';
import { runCommand } from '../helpers/process.ts';

const NOTEBOOKS = join(REPO, 'notebooks');
const notebooks = existsSync(NOTEBOOKS)
  ? readdirSync(NOTEBOOKS)
      .filter((f) => f.endsWith('.ipynb'))
      .sort()
  : [];
// A lesson measures real kernels; on two busy cores it may take minutes.
const CELL_TIMEOUT_S = 300;
const RUN_MS = 400_000;

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, unknown>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  source: string | string[];
  execution_count?: number | null;
  outputs?: Output[];
}
interface Nb {
  metadata: { kernelspec?: { name?: string } };
  cells: Cell[];
}

const nbconvert = (input: string, outDir: string) => [
  'nbconvert',
  '--to',
  'notebook',
  '--execute',
  '--ExecutePreprocessor.kernel_name=servelab',
  `--ExecutePreprocessor.timeout=${CELL_TIMEOUT_S}`,
  '--output-dir',
  outDir,
  input,
];

const text = (v: unknown) => (Array.isArray(v) ? v.join('') : String(v ?? ''));

/** What is wrong with an executed notebook: unexecuted code cells, error outputs, no outputs at all. */
function problems(nb: Nb): string[] {
  const out: string[] = [];
  const code = nb.cells.filter((c) => c.cell_type === 'code');
  code.forEach((c, i) => {
    if (typeof c.execution_count !== 'number') out.push(`code cell ${i + 1} was not executed`);
    for (const o of c.outputs ?? []) {
      if (o.output_type === 'error') out.push(`code cell ${i + 1}: ${o.ename}: ${o.evalue}`);
    }
  });
  if (!code.some((c) => (c.outputs ?? []).length > 0)) out.push('no code cell has an output');
  return out;
}

requireJupyter('notebooks execute under jupyter nbconvert --execute', () => {
  let scratch: ScratchJupyter | undefined;
  let tmp = '';
  beforeAll(() => {
    scratch = scratchJupyter();
    tmp = mkdtempSync(join(tmpdir(), 'servelab-nbconvert-'));
  });
  afterAll(async () => {
    const leftover = scratch ? await reapKernels(scratch) : [];
    scratch?.cleanup();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    expect(leftover, 'kernels left running after nbconvert').toEqual([]);
  }, 30_000);

  it.runIf(process.env.CI === 'true')('notebooks/ holds at least one notebook (CI)', () => {
    expect(notebooks, `no .ipynb in ${NOTEBOOKS}: run servelab build`).not.toHaveLength(0);
  });

  it('a notebook built here runs: streams, displays, an engine import and a plot, no errors', async () => {
    const dir = join(tmp, 'small');
    const nb = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' } },
      cells: [
        { cell_type: 'markdown', id: 'm', metadata: {}, source: '# A small notebook' },
        { cell_type: 'code', id: 'a', metadata: {}, execution_count: null, outputs: [], source: "import { createDevice } from 'servelab';\nconst dev = await createDevice('cpu');\nconst t = dev.tensor([1, 2, 3, 4], [2, 2], 'fp32');\nconsole.log('bytes', t.bytes);" },
        { cell_type: 'code', id: 'b', metadata: {}, execution_count: null, outputs: [], source: "const h = display(md`counting`, { displayId: true });\nh.update(md`counted`);\ndisplay(plot({ x: [1, 2, 3], y: [3, 1, 2] }));\nt.shape" },
      ],
    };
    const input = join(tmp, 'small.ipynb');
    writeFileSync(input, JSON.stringify(nb));
    const r = await runCommand(JUPYTER, nbconvert(input, dir), { env: scratch!.env, cwd: tmp, timeoutMs: 120_000 });
    expect(r.code, r.output).toBe(0);
    const done = JSON.parse(readFileSync(join(dir, 'small.ipynb'), 'utf8')) as Nb;
    expect(problems(done)).toEqual([]);
    const [a, b] = done.cells.filter((c) => c.cell_type === 'code');
    expect(a.outputs!.map((o) => [o.output_type, o.name, text(o.text)])).toEqual([['stream', 'stdout', 'bytes 16\n']]);
    expect(b.outputs!.map((o) => o.output_type)).toEqual(['display_data', 'display_data', 'execute_result']);
    // nbclient applied the update to the output shown under that display_id.
    expect(text(b.outputs![0].data!['text/markdown'])).toBe('counted');
    expect(Object.keys(b.outputs![1].data!)).toEqual(expect.arrayContaining(['application/vnd.plotly.v1+json', 'text/html', 'text/plain']));
    expect(text(b.outputs![2].data!['text/plain'])).toBe('[ 2, 2 ]');
  }, 150_000);

  it('a failing cell fails the run (exit 1, the error named)', async () => {
    const nb = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' } },
      cells: [{ cell_type: 'code', id: 'x', metadata: {}, execution_count: null, outputs: [], source: "throw new RangeError('deliberate failure')" }],
    };
    const input = join(tmp, 'failing.ipynb');
    writeFileSync(input, JSON.stringify(nb));
    const r = await runCommand(JUPYTER, nbconvert(input, join(tmp, 'failing')), { env: scratch!.env, cwd: tmp, timeoutMs: 120_000 });
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/CellExecutionError|RangeError: deliberate failure/);
    expect(r.output).toContain('deliberate failure');
  }, 150_000);

  for (const file of notebooks) {
    it(`notebooks/${file} executes with exit 0, outputs and no error output`, async () => {
      const source = JSON.parse(readFileSync(join(NOTEBOOKS, file), 'utf8')) as Nb;
      expect(source.metadata.kernelspec?.name).toBe('servelab');
      const outDir = join(tmp, 'lessons');
      const r = await runCommand(JUPYTER, nbconvert(join(NOTEBOOKS, file), outDir), { env: scratch!.env, cwd: REPO, timeoutMs: RUN_MS });
      expect(r.code, r.output).toBe(0);
      const done = JSON.parse(readFileSync(join(outDir, basename(file)), 'utf8')) as Nb;
      expect(problems(done)).toEqual([]);
      const code = done.cells.filter((c) => c.cell_type === 'code');
      expect(code.length).toBe(source.cells.filter((c) => c.cell_type === 'code').length);
      expect(code.every((c, i) => c.execution_count === i + 1)).toBe(true);
    }, RUN_MS + 30_000);
  }
});
