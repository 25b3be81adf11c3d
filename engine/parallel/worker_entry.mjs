// A worker thread of a WorkerGroup. Sources are TypeScript: the worker runs the compiled mirror the command line runs
// (load/compiled.mjs; no module hooks, so no hooks thread per worker), or the type-erasing hooks where the mirror
// cannot be written.
import { moduleUrl, updateMirror, useMirror } from '../../load/compiled.mjs';
import { register } from '../../load/ts_hooks.mjs';

if (updateMirror()) useMirror();
else register();
await import(await moduleUrl(new URL('./worker.ts', import.meta.url).pathname));
