#!/usr/bin/env node
// servelab's command line. Sources are TypeScript, run through a loader that erases their types, so there is no build step.
import { register } from './ts_loader.mjs';

register();
const { main } = await import('../kernel/cli.ts');
process.exitCode = await main(process.argv.slice(2));
