// A worker thread of a WorkerGroup. Sources are TypeScript, run through tsx's loader (as bin/servelab.js does).
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
