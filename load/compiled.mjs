// The TypeScript sources compiled to JavaScript once, in a mirror beside the dependencies
// (node_modules/.cache/servelab/), so that the command line and the kernel run without module hooks: Node 20 runs
// hooks on a thread of their own (an isolate and the transformer, about 20 MB a process) and every module's load
// crosses to it. A file is compiled again when its source changed. Each compiled module keeps its source's
// import.meta.url, so paths built from it (lessons, models, worker scripts) are the sources'; its relative imports
// name the mirror's files, and its source map the source. A source tree that cannot be written (an install owned
// by another user) runs through the hooks instead (ts_hooks.mjs).
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { eraseTypes } from './erase.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TRANSFORMER = createRequire(import.meta.url)('oxc-transform/package.json').version;

/**
 * servelab's tree: the folders whose sources run (the command line, the kernel, the engine, the benchmarks and
 * scripts) and where their mirror lives.
 */
export const SERVELAB = { root: ROOT, dirs: ['bench', 'engine', 'kernel', 'scripts'], mirror: join(ROOT, 'node_modules', '.cache', 'servelab') };

const mirrorPath = (tree, source) => join(tree.mirror, relative(tree.root, source)).replace(/\.ts$/, '.js');

/** Whether a file is one of the sources the mirror holds. */
function mirrored(tree, source) {
  return source.endsWith('.ts') && !source.endsWith('.d.ts') && tree.dirs.includes(relative(tree.root, source).split(sep)[0]);
}

function sources(tree, dir) {
  let out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out = out.concat(sources(tree, p));
    else if (mirrored(tree, p)) out.push(p);
  }
  return out;
}

/**
 * One source -> its mirror module, written aside and renamed (a kernel starting meanwhile never reads half a file).
 * A source that does not parse becomes a module that throws its SyntaxError, as loading the source would.
 */
function compile(tree, source, mtime) {
  const url = pathToFileURL(source).href;
  // A relative import of anything but another source (a .mjs beside it) names the source tree's file, so that it is
  // one module whichever side imports it.
  const rewrite = (code) =>
    code.replace(/(\bfrom\s*|\bimport\s*\(\s*)"(\.{1,2}\/[^"]+)"/g, (m, head, spec) =>
      spec.endsWith('.js') && mirrored(tree, fileURLToPath(new URL(spec.replace(/\.js$/, '.ts'), url))) ? m : `${head}${JSON.stringify(new URL(spec, url).href)}`);
  let text;
  try {
    text = eraseTypes(source, readFileSync(source, 'utf8'), { typescript: { rewriteImportExtensions: 'rewrite' }, define: { 'import.meta.url': JSON.stringify(url) } }, rewrite);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    text = `throw new SyntaxError(${JSON.stringify(e.message)});\n`;
  }
  const target = mirrorPath(tree, source);
  mkdirSync(dirname(target), { recursive: true });
  const tmp = `${target}.${process.pid}`;
  writeFileSync(tmp, text);
  // The mirror file carries its source's modification time: a different one means the source changed.
  utimesSync(tmp, mtime, mtime);
  renameSync(tmp, target);
}

/**
 * Brings a tree's mirror up to date (about 10 ms when nothing changed, 0.3 s for every file) and says whether it can
 * be used: false where it cannot be written.
 */
export function updateMirror(tree = SERVELAB) {
  // The mirror names its sources by absolute URL, and the transformer's output may change with its version: a
  // stamp of both, and a different one compiles every file again.
  const stamp = JSON.stringify({ type: 'module', root: tree.root, transformer: TRANSFORMER });
  const pkg = join(tree.mirror, 'package.json');
  try {
    mkdirSync(tree.mirror, { recursive: true });
    const all = readText(pkg) !== stamp;
    for (const source of tree.dirs.flatMap((d) => sources(tree, join(tree.root, d)))) {
      const { mtime } = statSync(source);
      let current = false;
      try {
        // utimes keeps milliseconds, through a float: equal to within one.
        current = !all && Math.abs(statSync(mirrorPath(tree, source)).mtimeMs - mtime.getTime()) < 1;
      } catch {
        current = false;
      }
      if (!current) compile(tree, source, mtime);
    }
    if (all) writeFileSync(pkg, stamp);
    return true;
  } catch {
    return false;
  }
}

function readText(file) {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

let active = null;

/** Runs a tree's mirror modules from now on (after updateMirror said it can). */
export function useMirror(tree = SERVELAB) {
  active = tree;
  process.setSourceMapsEnabled(true);
}

/**
 * The URL to import a file by: a source the mirror holds is imported from the mirror, so that a cell's
 * `import 'servelab'` shares the modules the kernel itself runs; any other TypeScript file (a notebook's own) starts
 * the type-erasing hooks on first use, which hand servelab's sources back from the mirror too.
 */
export async function moduleUrl(path) {
  if (active && mirrored(active, path)) return pathToFileURL(mirrorPath(active, path)).href;
  if (/\.m?ts$/.test(path)) {
    const { register } = await import('./ts_hooks.mjs');
    register(active ?? undefined);
  }
  return pathToFileURL(path).href;
}
