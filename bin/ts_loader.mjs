// Runs TypeScript sources in Node without a build step: module hooks that erase types with oxc-transform as each
// .ts module loads (no type checking here: the kernel's checker and `tsc` do that). Types are erased in well under a
// millisecond a module, so nothing is cached on disk; the hooks' thread holds only this file and the transformer.
import { register as registerHooks } from 'node:module';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const TS = /\.[cm]?ts$/;

/** Installs the hooks for every later import of this thread, and maps stack traces back to the sources. */
export function register() {
  registerHooks(import.meta.url);
  process.setSourceMapsEnabled(true);
}

/** './x.js' written for './x.ts' (TypeScript's ESM convention) and './x' without an extension resolve to './x.ts'. */
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !/^\.{1,2}\//.test(specifier) || !context.parentURL?.startsWith('file:')) throw e;
    for (const alt of [specifier.replace(/\.([cm]?)js$/, '.$1ts'), `${specifier}.ts`, `${specifier}/index.ts`]) {
      if (alt === specifier) continue;
      try {
        return await next(alt, context);
      } catch {
        // The next candidate.
      }
    }
    throw e;
  }
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !TS.test(new URL(url).pathname)) return next(url, context);
  const { transformSync } = await import('oxc-transform');
  const path = fileURLToPath(url);
  const out = transformSync(path, await readFile(path, 'utf8'), { lang: 'ts', sourceType: 'module', sourcemap: true });
  if (out.errors.length) {
    const e = out.errors[0];
    throw new SyntaxError(`${path}: ${e.message}`);
  }
  const map = Buffer.from(JSON.stringify({ ...out.map, sources: [url] })).toString('base64');
  return { format: url.endsWith('.cts') ? 'commonjs' : 'module', source: `${out.code}\n//# sourceMappingURL=data:application/json;base64,${map}`, shortCircuit: true };
}
