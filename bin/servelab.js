#!/usr/bin/env node
// servelab's command line. Sources are TypeScript: run from their compiled mirror (load/compiled.mjs), brought
// up to date here, or through type-erasing module hooks where the mirror cannot be written. No build step either way.
import { moduleUrl, updateMirror, useMirror } from '../load/compiled.mjs';
import { register } from '../load/ts_hooks.mjs';

if (updateMirror()) useMirror();
else register();
const { main } = await import(await moduleUrl(new URL('../kernel/cli.ts', import.meta.url).pathname));
process.exitCode = await main(process.argv.slice(2));
