/**
 * `servelab report <lesson.md|notebook.ipynb>... [-o DIR] [--all] [--solutions] [--server URL --token T]`: executes
 * every cell through the real kernel and writes one standalone HTML report per input, plus an index. A failing cell
 * is shown with its error, the rest still runs and is written, and the command exits 1. With --solutions the
 * exercises run their reference solutions (lessons/NN-slug.solutions.md) instead of the learner's starter code.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { adapterInfo, autoDevice, cpuInfo, webgpuUnavailable } from '../../engine/index.ts';
import { executeNotebook, type Notebook } from '../report/execute.ts';
import { renderIndex, renderReport } from '../report/html.ts';
import { DirectRunner, ServerRunner, type CellRunner } from '../report/runners.ts';
import { lessonFiles } from '../lesson/build.ts';
import { readSolutions, solutionsPath, withSolutions } from '../lesson/solutions.ts';
import { commandUsage } from './usage.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function loadNotebook(path: string): Promise<Notebook> {
  if (path.endsWith('.ipynb')) return JSON.parse(readFileSync(path, 'utf8')) as Notebook;
  if (path.endsWith('.md')) {
    const { lessonNotebook } = await import('../lesson/build.ts');
    return lessonNotebook(path) as unknown as Notebook;
  }
  throw new Error(`${path}: expected a lesson (.md) or a notebook (.ipynb)`);
}

/** The lesson a notebook was built from (its metadata names it), for its solutions file; null if there is none. */
function lessonOf(input: string, nb: Notebook): string | null {
  if (input.endsWith('.md')) return input;
  const source = (nb.metadata.servelab as { source?: string } | undefined)?.source;
  if (!source) return null;
  // notebooks/ sits beside lessons/; a notebook copied elsewhere still finds the project's lessons.
  return [resolve(dirname(input), '..', source), resolve(ROOT, source)].find((p) => existsSync(p)) ?? null;
}

type Failure = { index: number; ename: string; evalue: string };

/**
 * The notebook with its exercises' reference solutions in place of their starter code. A missing solution leaves
 * the starter code and becomes a failure to show, not an error that stops the report.
 */
function solve(input: string, nb: Notebook, name: string) {
  const lesson = lessonOf(input, nb);
  const solutions = lesson ? readSolutions(lesson) : null;
  const sub = withSolutions(nb, solutions);
  const where = lesson ? relative(process.cwd(), solutionsPath(lesson)) : 'the solutions file of the lesson this notebook was built from';
  const missing: Failure[] = sub.missing.map((id) => ({
    index: sub.notebook.cells.findIndex((c) => (c.metadata.servelab as { exercise?: string } | undefined)?.exercise === id),
    ename: 'no reference solution',
    evalue: `exercise '${id}' ran its starter code: add a \`\`\`ts solution ${id} block to ${where}`,
  }));
  for (const s of sub.unknown) console.error(`${name}: ${relative(process.cwd(), solutions!.file)}:${s.line}: solution '${s.id}' matches no exercise of ${basename(input)}`);
  return {
    notebook: sub.notebook,
    missing,
    unknown: sub.unknown.length,
    summary: { file: solutions ? relative(process.cwd(), solutions.file) : null, solved: sub.solved, missing: sub.missing },
  };
}

/** Checks that showed a failure, but for those of exercises in `unsolved` (their starter code is expected to fail). */
function failedChecks(nb: Notebook, unsolved: ReadonlySet<string>): Failure[] {
  return nb.cells.flatMap((c, index) =>
    unsolved.has(String((c.metadata.servelab as { check?: string } | undefined)?.check)) ? [] : (c.outputs ?? []).flatMap((o) => {
      const meta = 'metadata' in o ? (o.metadata.servelab as { check?: string; ok?: boolean } | undefined) : undefined;
      if (meta?.ok !== false) return [];
      const text = String(('data' in o && o.data['text/markdown']) || '').split('\n')[0].replace(/[*`]/g, '');
      return [{ index, ename: 'check failed with the reference solution', evalue: text }];
    }),
  );
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

export async function environment(): Promise<Record<string, unknown> & { backend: { requested: string; resolved: string; webgpu: string } }> {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const ort = (await import('onnxruntime-node')).env.versions;
  const why = await webgpuUnavailable();
  const auto = await autoDevice();
  const requested = process.env.SERVELAB_DEVICE ?? 'auto';
  return {
    date: new Date().toISOString(),
    servelab: pkg.version,
    versions: { node: process.versions.node, typescript: (createRequire(import.meta.url)('@typescript/native-preview/package.json') as { version: string }).version, onnxruntime: ort.node ?? ort.common },
    cpu: cpuInfo(),
    gpu: adapterInfo(),
    backend: { requested, resolved: requested === 'auto' ? auto.kind : requested, webgpu: why === null ? 'available' : why, ...(requested === 'auto' && auto.why ? { why: auto.why } : {}) },
  };
}

export async function reportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { out: { type: 'string', short: 'o', default: 'reports' }, all: { type: 'boolean' }, solutions: { type: 'boolean' }, server: { type: 'string' }, token: { type: 'string', default: '' } },
  });
  const inputs = [...positionals];
  if (values.all) inputs.push(...lessonFiles(ROOT).map((f) => join(ROOT, f)));
  if (inputs.length === 0) {
    console.error(commandUsage('report'));
    return 2;
  }
  const out = resolve(values.out!);
  mkdirSync(out, { recursive: true });
  const env = await environment();
  if (env.backend.requested === 'auto' && env.backend.resolved === 'cpu') {
    process.stderr.write(env.backend.webgpu === 'available' ? 'a software GPU adapter only: using the cpu backend (`servelab device` says why)\n' : 'no GPU adapter: using the cpu backend (`servelab device` says why)\n');
  }
  const entries: Parameters<typeof renderIndex>[0] = [];
  let failures = 0;
  for (const input of inputs) {
    const name = basename(input).replace(/\.(md|ipynb)$/, '');
    const file = `${name}.html`;
    let runner: CellRunner | null = null;
    try {
      let nb = await loadNotebook(input);
      let title = String((nb.metadata.servelab as { title?: string } | undefined)?.title ?? name);
      let solved: ReturnType<typeof solve> | null = null;
      if (values.solutions) {
        solved = solve(input, nb, name);
        nb = solved.notebook;
        title += ' (reference solutions)';
      }
      runner = values.server ? new ServerRunner(values.server, values.token!) : new DirectRunner({ cwd: dirname(resolve(input)) });
      await runner.start();
      const ex = await executeNotebook(nb, runner, progress(name));
      // With the reference solutions in place, a check that fails is a wrong solution (or a wrong check).
      const notes = solved ? [...solved.missing, ...failedChecks(ex.notebook, new Set(solved.summary.missing))].sort((a, b) => a.index - b.index) : [];
      const failed = [...ex.failed, ...notes].sort((a, b) => a.index - b.index);
      const reportEnv = { ...env, ...(solved ? { solutions: solved.summary } : {}), kernel: runner.description };
      writeFileSync(join(out, file), renderReport(ex.notebook, { title, environment: reportEnv, source: basename(input), seconds: ex.seconds, failed }));
      entries.push({ file, title, failed: failed.length, seconds: ex.seconds });
      if (failed.length || solved?.unknown) failures++;
      for (const f of ex.failed) console.error(`${name}: cell ${f.index + 1} failed: ${f.ename}: ${f.evalue}`);
      for (const f of notes) console.error(`${name}: cell ${f.index + 1}: ${f.ename}: ${f.evalue}`);
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
