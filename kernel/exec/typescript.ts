/**
 * The TypeScript compiler, loaded on first use as CommonJS with a V8 code cache (the technique of v8-compile-cache
 * and Node 22's module.enableCompileCache, which Node 20 lacks). `import ts from 'typescript'` would cost far more:
 * Node's ESM loader runs its CommonJS export lexer over the whole 9 MB bundle first, and V8 then parses and compiles
 * every function the checker touches, in every new kernel. The cache keeps the bytecode of the functions a warm
 * checker has compiled, so the next kernel starts with them.
 */
import { createRequire, Module } from 'node:module';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import vm from 'node:vm';
import type TS from 'typescript';

const require = createRequire(import.meta.url);

let loaded: { ts: typeof TS; script: vm.Script | null; cacheFile: string | null; hit: boolean } | null = null;

/** Where the bytecode cache lives: per user, per TypeScript build and per V8 version (V8 also rejects a cache made under other flags). */
function cachePath(file: string): string | null {
  try {
    const { size, mtimeMs } = statSync(file);
    const dir = process.env.SERVELAB_CACHE_DIR ?? join(tmpdir(), `servelab-${userInfo().uid}`);
    return join(dir, `typescript-${size}-${Math.round(mtimeMs)}-v8-${process.versions.v8}.cache`);
  } catch {
    return null;
  }
}

function load(): NonNullable<typeof loaded> {
  const file = require.resolve('typescript');
  const cacheFile = cachePath(file);
  let cachedData: Buffer | undefined;
  try {
    cachedData = cacheFile ? readFileSync(cacheFile) : undefined;
  } catch {
    cachedData = undefined;
  }
  try {
    const script = new vm.Script(Module.wrap(readFileSync(file, 'utf8')), { filename: file, cachedData });
    const mod = { exports: {} as typeof TS, id: file, filename: file, loaded: false };
    (script.runInThisContext() as (...a: unknown[]) => void).call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file));
    return { ts: mod.exports, script, cacheFile, hit: cachedData !== undefined && !script.cachedDataRejected };
  } catch {
    // A sandbox without vm or a bundle that will not wrap: the plain loader still works, only slower.
    return { ts: require('typescript') as typeof TS, script: null, cacheFile: null, hit: false };
  }
}

/** The compiler, loaded once. */
export function typescript(): typeof TS {
  loaded ??= load();
  return loaded.ts;
}

/** Whether this process started from a cache, and where it lives. */
export function compilerCache(): { file: string | null; hit: boolean } {
  return { file: loaded?.cacheFile ?? null, hit: loaded?.hit ?? false };
}

/**
 * Writes the bytecode compiled so far, once the checker is warm. Best effort: a read-only or full disk costs the next
 * kernel its head start, nothing else. Written aside and renamed, so a kernel starting meanwhile never reads half a file.
 */
export function saveCompilerCache(): void {
  if (!loaded?.script || !loaded.cacheFile || loaded.hit) return;
  try {
    mkdirSync(dirname(loaded.cacheFile), { recursive: true });
    const tmp = `${loaded.cacheFile}.${process.pid}`;
    writeFileSync(tmp, loaded.script.createCachedData());
    renameSync(tmp, loaded.cacheFile);
  } catch {
    // Nothing to do: see above.
  }
}
