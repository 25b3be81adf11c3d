/**
 * `servelab report <lesson.md|notebook.ipynb>... [-o DIR] [--all] [--server URL --token T]`: executes every cell
 * through the real kernel and writes one standalone HTML report per input, plus an index. A failing cell is shown
 * with its error, the rest still runs and is written, and the command exits 1.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';
import { adapterInfo, cpuInfo, webgpuUnavailable } from '../../engine/index.ts';
import { executeNotebook, type Notebook } from '../report/execute.ts';
import { renderIndex, renderReport } from '../report/html.ts';
import { DirectRunner, ServerRunner, type CellRunner } from '../report/runners.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function loadNotebook(path: string): Promise<Notebook> {
  if (path.endsWith('.ipynb')) return JSON.parse(readFileSync(path, 'utf8')) as Notebook;
  if (path.endsWith('.md')) {
    const { lessonNotebook } = await import('../lesson/build.ts');
    return lessonNotebook(path) as unknown as Notebook;
  }
  throw new Error(`${path}: expected a lesson (.md) or a notebook (.ipynb)`);
}

function progress(name: string): (done: number, total: number) => void {
  const tty = process.stderr.isTTY;
  return (done, total) => {
    const width = 24;
    const filled = total ? Math.round((done / total) * width) : width;
    const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} cells  ${name}`;
    if (tty) process.stderr.write(`\r${line}${done === total ? '\n' : ''}`);
    else if (done === total || done === 0) process.stderr.write(`${line}\n`);
  };
}

export async function environment(): Promise<Record<string, unknown>> {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const ort = (await import('onnxruntime-node')).env.versions;
  const why = await webgpuUnavailable();
  const requested = process.env.SERVELAB_DEVICE ?? 'auto';
  return {
    date: new Date().toISOString(),
    servelab: pkg.version,
    versions: { node: process.versions.node, typescript: ts.version, onnxruntime: ort.node ?? ort.common },
    cpu: cpuInfo(),
    gpu: adapterInfo(),
    backend: { requested, resolved: requested === 'auto' ? (why === null ? 'webgpu' : 'cpu') : requested, webgpu: why === null ? 'available' : why },
  };
}

export async function reportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { out: { type: 'string', short: 'o', default: 'reports' }, all: { type: 'boolean' }, server: { type: 'string' }, token: { type: 'string', default: '' } },
  });
  const inputs = [...positionals];
  if (values.all) inputs.push(...readdirSync(join(ROOT, 'lessons')).filter((f) => /^\d\d-.*\.md$/.test(f)).sort().map((f) => join(ROOT, 'lessons', f)));
  if (inputs.length === 0) {
    console.error('usage: servelab report <lesson.md|notebook.ipynb>... [-o DIR] [--all] [--server URL --token TOKEN]');
    return 2;
  }
  const out = resolve(values.out!);
  mkdirSync(out, { recursive: true });
  const env = await environment();
  const entries: Parameters<typeof renderIndex>[0] = [];
  let failures = 0;
  for (const input of inputs) {
    const name = basename(input).replace(/\.(md|ipynb)$/, '');
    const file = `${name}.html`;
    let runner: CellRunner | null = null;
    try {
      const nb = await loadNotebook(input);
      runner = values.server ? new ServerRunner(values.server, values.token!) : new DirectRunner({ cwd: dirname(resolve(input)) });
      await runner.start();
      const ex = await executeNotebook(nb, runner, progress(name));
      const title = String((nb.metadata.servelab as { title?: string } | undefined)?.title ?? name);
      writeFileSync(join(out, file), renderReport(ex.notebook, { title, environment: { ...env, kernel: runner.description }, source: basename(input), seconds: ex.seconds, failed: ex.failed }));
      entries.push({ file, title, failed: ex.failed.length, seconds: ex.seconds });
      if (ex.failed.length) {
        failures++;
        for (const f of ex.failed) console.error(`${name}: cell ${f.index + 1} failed: ${f.ename}: ${f.evalue}`);
      }
    } catch (e) {
      failures++;
      const msg = (e as Error).message;
      console.error(`${name}: ${msg}`);
      entries.push({ file, title: name, failed: 0, seconds: 0, error: msg });
    } finally {
      await runner?.stop().catch(() => {});
    }
  }
  writeFileSync(join(out, 'index.html'), renderIndex(entries, env));
  console.log(`wrote ${entries.length} report${entries.length === 1 ? '' : 's'} and index.html to ${out}${failures ? ` (${failures} with failures)` : ''}`);
  return failures ? 1 : 0;
}
