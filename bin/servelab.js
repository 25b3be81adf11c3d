#!/usr/bin/env node
// servelab's command line. Sources are TypeScript, run through tsx's loader so there is no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../kernel/cli.ts');
process.exitCode = await main(process.argv.slice(2));
