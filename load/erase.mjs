// TypeScript -> JavaScript by erasing the types (oxc-transform; no type checking), with an inline source map back
// to the source: what the compiled mirror (compiled.mjs) and the module hooks (ts_hooks.mjs) both do to a module.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);

/**
 * The module's JavaScript, ending in its source map; `rewrite(code)` may change the code first (the source map
 * covers what the transformer printed). A source that does not parse throws a SyntaxError naming the file.
 */
export function eraseTypes(path, text, options = {}, rewrite = (code) => code) {
  // Loaded on first use: most starts find the mirror current and compile nothing.
  const { transformSync } = require('oxc-transform');
  const out = transformSync(path, text, { lang: 'ts', sourceType: 'module', sourcemap: true, ...options });
  if (out.errors.length) throw new SyntaxError(`${path}: ${out.errors[0].message}`);
  const map = Buffer.from(JSON.stringify({ ...out.map, sources: [pathToFileURL(path).href] })).toString('base64');
  return `${rewrite(out.code)}\n//# sourceMappingURL=data:application/json;base64,${map}\n`;
}
