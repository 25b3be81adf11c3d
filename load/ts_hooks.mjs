// Runs TypeScript files in Node as they load: module hooks that erase types with oxc-transform (no type checking
// here: the kernel's checker and `tsc` do that), well under a millisecond a module, so nothing is cached on disk.
// Node 20 runs hooks on a thread of their own; the command line and the kernel run servelab's own sources from the
// compiled mirror instead (compiled.mjs) and start the hooks only for other TypeScript files (a notebook's own), or
// where the mirror cannot be written.
import { register as registerHooks } from 'node:module';
import { readFile } from 'node:fs/promises';
import { relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { eraseTypes } from './erase.mjs';

/** ES module TypeScript: .ts and .mts (a .cts is CommonJS, which these hooks do not convert). */
const TS = /\.m?ts$/;
let registered = false;
/** Set in the hooks' thread: the mirror whose modules stand for servelab's sources, if one is in use. */
let mirror = null;

/**
 * Installs the hooks for every later import of this thread (once), and maps stack traces back to the sources. With a
 * mirrored tree ({ root, dirs, mirror }: compiled.mjs), a file that imports one of its sources gets the mirror's
 * module, the one the kernel itself runs.
 */
export function register(withMirror) {
  if (registered) return;
  registered = true;
  registerHooks(import.meta.url, { data: withMirror ?? null });
  process.setSourceMapsEnabled(true);
}

export function initialize(data) {
  mirror = data;
}

function toMirror(resolved) {
  if (!mirror || !resolved.url.startsWith('file:') || !resolved.url.endsWith('.ts') || resolved.url.endsWith('.d.ts')) return resolved;
  const rel = relative(mirror.root, fileURLToPath(resolved.url));
  if (!mirror.dirs.includes(rel.split(sep)[0])) return resolved;
  return { ...resolved, url: pathToFileURL(`${mirror.mirror}${sep}${rel.replace(/\.ts$/, '.js')}`).href, format: 'module' };
}

/** './x.js' written for './x.ts' (TypeScript's ESM convention) and './x' without an extension resolve to './x.ts'. */
export async function resolve(specifier, context, next) {
  try {
    return toMirror(await next(specifier, context));
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !/^\.{1,2}\//.test(specifier) || !context.parentURL?.startsWith('file:')) throw e;
    for (const alt of [specifier.replace(/\.(m?)js$/, '.$1ts'), `${specifier}.ts`, `${specifier}/index.ts`]) {
      if (alt === specifier) continue;
      try {
        return toMirror(await next(alt, context));
      } catch {
        // The next candidate.
      }
    }
    throw e;
  }
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !TS.test(new URL(url).pathname)) return next(url, context);
  const path = fileURLToPath(url);
  return { format: 'module', source: eraseTypes(path, await readFile(path, 'utf8')), shortCircuit: true };
}
