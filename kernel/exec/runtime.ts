/**
 * What a running cell sees of the process: console output routed to its own execute request, timers it starts
 * tracked so an interrupt can cancel them, and an import function that resolves npm packages, local .ts files and
 * servelab itself. AsyncLocalStorage carries the cell through its callbacks, so late output lands under the cell
 * that produced it, and output of an interrupted cell is dropped instead of printing into the next one.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Console } from 'node:console';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { join, resolve } from 'node:path';
import { moduleUrl } from '../../load/compiled.mjs';

export interface CellRun {
  readonly count: number;
  readonly controller: AbortController;
  readonly timers: Set<NodeJS.Timeout | NodeJS.Immediate>;
  /** Publishes a stream message under this cell's request. */
  stream(name: 'stdout' | 'stderr', text: string): void;
  /** An error raised in a callback the cell left behind, after the cell itself finished. */
  lateError(e: unknown): void;
  cancelled: boolean;
}

export const cellContext = new AsyncLocalStorage<CellRun>();

/** The kernel's own console and streams, untouched by cells. */
export const kernelConsole = new Console({ stdout: process.stdout, stderr: process.stderr });

function routed(name: 'stdout' | 'stderr', fallback: NodeJS.WriteStream): Writable {
  return new Writable({
    decodeStrings: false,
    write(chunk: string | Buffer, _enc, cb) {
      const run = cellContext.getStore();
      const text = typeof chunk === 'string' ? chunk : chunk.toString('utf8');
      if (!run) fallback.write(text);
      else if (!run.cancelled) run.stream(name, text);
      cb();
    },
  });
}

const helpers: Record<string, unknown> = {};
const requireHere = createRequire(import.meta.url);

/**
 * Makes the runtime helpers a converted cell calls (oxc's, for syntax Node 20 lacks) available as
 * globalThis.babelHelpers, where the converter's output looks for them.
 */
export function provideHelpers(names: string[]): void {
  if (!('babelHelpers' in globalThis)) Object.defineProperty(globalThis, 'babelHelpers', { value: helpers, enumerable: false });
  for (const n of names) helpers[n] ??= requireHere(`@oxc-project/runtime/helpers/${n}`);
}

let installed = false;

/** Installs the routing into the process's globals. Idempotent. */
export function installRuntime(): void {
  if (installed) return;
  installed = true;
  // colorMode false: ANSI escapes have no place in text/plain outputs.
  globalThis.console = new Console({ stdout: routed('stdout', process.stdout), stderr: routed('stderr', process.stderr), colorMode: false });

  const { setTimeout: st, setInterval: si, setImmediate: sim } = globalThis;
  const guard = (run: CellRun, fn: (...a: unknown[]) => unknown, once: boolean, handle: () => NodeJS.Timeout | NodeJS.Immediate) =>
    function (this: unknown, ...args: unknown[]) {
      if (once) run.timers.delete(handle());
      if (run.cancelled) return;
      try {
        return fn.apply(this, args);
      } catch (e) {
        run.lateError(e);
      }
    };
  const track = <H extends NodeJS.Timeout | NodeJS.Immediate>(make: (cb: (...a: unknown[]) => unknown) => H, fn: unknown, once: boolean): H => {
    const run = cellContext.getStore();
    if (!run || typeof fn !== 'function') return make(fn as never);
    let h: H;
    h = make(guard(run, fn as (...a: unknown[]) => unknown, once, () => h));
    run.timers.add(h);
    return h;
  };
  globalThis.setTimeout = ((fn: unknown, ms?: number, ...a: unknown[]) => track((cb) => st(cb, ms, ...a), fn, true)) as typeof setTimeout;
  globalThis.setInterval = ((fn: unknown, ms?: number, ...a: unknown[]) => track((cb) => si(cb, ms, ...a), fn, false)) as typeof setInterval;
  globalThis.setImmediate = ((fn: unknown, ...a: unknown[]) => track((cb) => sim(cb, ...a), fn, true)) as typeof setImmediate;
}

/** Stops everything a cell left running: its timers, and any output it would still produce. */
export function cancelRun(run: CellRun): void {
  run.cancelled = true;
  run.controller.abort(new Error('interrupted'));
  for (const t of run.timers) {
    clearTimeout(t as NodeJS.Timeout);
    clearImmediate(t as NodeJS.Immediate);
  }
  run.timers.clear();
}

/**
 * import() for cells: `servelab` is the engine; './x.ts' is relative to the notebook's folder; a package name is
 * looked up from the notebook's folder first, then from servelab's own dependencies. A file is imported by the URL
 * moduleUrl gives it: servelab's own sources from the mirror the kernel runs (one engine, not two), a notebook's
 * TypeScript through the type-erasing hooks.
 */
export function makeImporter(cwd: string, aliases: Record<string, string>): (spec: string) => Promise<unknown> {
  const req = createRequire(join(cwd, 'notebook.js'));
  return async (spec: string) => {
    if (aliases[spec]) return import(await moduleUrl(aliases[spec]));
    if (spec.startsWith('./') || spec.startsWith('../') || spec.startsWith('/')) return import(await moduleUrl(resolve(cwd, spec)));
    if (spec.startsWith('node:')) return import(spec);
    try {
      return await import(await moduleUrl(req.resolve(spec)));
    } catch {
      return import(spec);
    }
  };
}
