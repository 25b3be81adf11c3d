/** Runs cells: type-check against earlier cells, convert, run in the kernel's global scope, report in the cell's own lines. */
import vm from 'node:vm';
import { TraceMap, originalPositionFor } from '@jridgewell/trace-mapping';
import { CellChecker, type CellDiagnostic } from './typecheck.ts';
import { convertCell, IMPORT_FN } from './transform.ts';
import type { KernelStructures } from './memory.ts';
import { withSignal } from '../../engine/abort.ts';
import { cancelRun, cellContext, installRuntime, makeImporter, provideHelpers, type CellRun } from './runtime.ts';

export type Outcome =
  | { status: 'ok'; value: unknown; hasValue: boolean }
  | { status: 'error'; ename: string; evalue: string; traceback: string[] }
  | { status: 'aborted' };

export interface RunHooks {
  stream(name: 'stdout' | 'stderr', text: string): void;
  lateError(e: unknown): void;
}

export class Executor {
  private readonly checker: CellChecker;
  /**
   * Each cell's source map, for tracebacks through functions it defined; kept as the encoded string the compiler
   * wrote (tens of bytes a line) and decoded only when an error passes through the cell.
   */
  private readonly maps = new Map<string, { map: string | TraceMap; code: string }>();
  private current: CellRun | null = null;

  constructor(
    readonly cwd: string,
    aliases: Record<string, string>,
    prelude: string,
    /** Type-check cells before running them (on by default; off makes a cell start faster). */
    readonly typecheck = true,
  ) {
    installRuntime();
    this.checker = new CellChecker(cwd, aliases, prelude);
    (globalThis as Record<string, unknown>)[IMPORT_FN] = makeImporter(cwd, aliases);
  }

  /**
   * Starts the checker's process, builds its first program and checks and converts a typical cell, so that the
   * first real cell finds both warm.
   */
  warm(): void {
    // The kinds of statement cells are made of, so the converter's and the checker's paths for them run once now.
    // The display helpers are not named: their modules enter the checker's program when a cell first names them.
    const cell = [
      'interface Point { x: number; label?: string }',
      'type Pair<T> = [T, T];',
      'class Counter { n = 0; add(k: number): this { this.n += k; return this; } }',
      'function norm(p: Point): number { return Math.hypot(p.x, p.label?.length ?? 0); }',
      'const pts: Point[] = [1, 2].map((x) => ({ x }));',
      'const pair: Pair<string> = [`${pts.length}`, String(norm(pts[0]))];',
      'for (const p of pts) console.log(p.x, process.cwd());',
      'const kinds = [typeof console, new Counter().add(1).n];',
      'await Promise.resolve([pair, kinds])',
    ].join('\n');
    if (this.typecheck) this.checker.warm(cell);
    convertCell(cell, 'warm.ts');
  }

  /** The executor's share of `lab.kernelMemory()`. */
  structures(): Pick<KernelStructures, 'sourceMaps' | 'checker'> {
    let chars = 0;
    for (const { map, code } of this.maps.values()) chars += code.length + (typeof map === 'string' ? map.length : 0);
    return { sourceMaps: { cells: this.maps.size, chars }, checker: this.typecheck ? this.checker.stats() : null };
  }

  get running(): CellRun | null {
    return this.current;
  }

  async execute(code: string, count: number, hooks: RunHooks): Promise<Outcome> {
    if (code.trim() === '') return { status: 'ok', value: undefined, hasValue: false };
    const file = `cell[${count}]`;
    if (this.typecheck) {
      const diags = this.checker.check(code);
      if (diags.length) return typeError(file, code, diags);
    }
    let converted: ReturnType<typeof convertCell>;
    try {
      converted = convertCell(code, `${file}.ts`);
    } catch (e) {
      // A cell that does not parse (the checker, when on, reports it first).
      if (e instanceof SyntaxError) return { status: 'error', ename: 'SyntaxError', evalue: e.message, traceback: [`SyntaxError: ${e.message}`] };
      throw e;
    }
    const { js, map } = converted;
    provideHelpers(converted.helpers);
    this.maps.set(file, { map, code });
    const run: CellRun = { count, controller: new AbortController(), timers: new Set(), cancelled: false, stream: hooks.stream, lateError: hooks.lateError };
    this.current = run;
    try {
      const aborted = new Promise<'aborted'>((res) => run.controller.signal.addEventListener('abort', () => res('aborted'), { once: true }));
      const value = await withSignal(run.controller.signal, () => cellContext.run(run, async () => {
        const p = new vm.Script(js, { filename: file }).runInThisContext({ breakOnSigint: true, displayErrors: false }) as Promise<unknown>;
        return Promise.race([p, aborted]);
      }));
      if (value === 'aborted' && run.controller.signal.aborted) return { status: 'aborted' };
      return { status: 'ok', value, hasValue: value !== undefined };
    } catch (e) {
      if (isSigintBreak(e)) {
        cancelRun(run);
        return { status: 'aborted' };
      }
      return this.errorOutcome(e);
    } finally {
      this.current = null;
      // The cell passed the checker and ran, perhaps only part way: what it declared exists now, so later cells
      // are checked against it.
      if (this.typecheck) this.checker.commit(code);
    }
  }

  /** Stops the running cell: its AbortSignal fires, its timers are cleared, its later output is dropped. */
  interrupt(): boolean {
    if (!this.current) return false;
    cancelRun(this.current);
    return true;
  }

  completions(code: string, pos: number) {
    return this.checker.completions(code, pos);
  }

  inspect(code: string, pos: number): string | null {
    return this.checker.inspect(code, pos);
  }

  /** ename, evalue and a traceback whose frames in cells name the cell's own line, with that line shown. */
  errorOutcome(e: unknown): Outcome & { status: 'error' } {
    const err = e instanceof Error ? e : new Error(String(e));
    const ename = err instanceof Error && e instanceof Error ? err.name : typeof e;
    const evalue = err.message;
    const frames = (err.stack ?? '').split('\n').slice(1).map((l) => l.trim()).filter((l) => l.startsWith('at '));
    const traceback = [`${ename}: ${evalue}`];
    let inCell = false;
    for (const f of frames) {
      const m = /(cell\[\d+\]):(\d+):(\d+)/.exec(f);
      if (!m) {
        // Below the cell's frames lies the kernel that called it: noise to a learner.
        if (inCell || /kernel\/exec\/|node:internal|node:vm|node:async_hooks/.test(f)) continue;
        traceback.push(`    ${f}`);
        continue;
      }
      inCell = true;
      const cell = this.maps.get(m[1]);
      if (cell && typeof cell.map === 'string') cell.map = new TraceMap(cell.map);
      const pos = cell ? originalPositionFor(cell.map as TraceMap, { line: Number(m[2]), column: Number(m[3]) - 1 }) : null;
      const line = pos?.line ?? null;
      const src = line !== null ? cell?.code.split('\n')[line - 1] : undefined;
      // The wrapper that makes top-level await work has no line of its own in the cell.
      if (src === undefined) continue;
      const fn = f.replace(/^at /, '').replace(/\(?cell\[\d+\]:\d+:\d+\)?/, '').replace(/^async /, '').trim();
      traceback.push(`    at ${fn && fn !== '<anonymous>' ? fn : '<cell>'} (${m[1]} line ${line})`, `      ${line} | ${src}`);
    }
    return { status: 'error', ename, evalue, traceback };
  }
}

function isSigintBreak(e: unknown): boolean {
  return e instanceof Error && /Script execution was interrupted by `SIGINT`/.test(e.message);
}

function typeError(file: string, code: string, diags: CellDiagnostic[]): Outcome {
  const lines = code.split('\n');
  const traceback = [`TypeScriptError: ${diags.length} type error${diags.length > 1 ? 's' : ''} in ${file}`];
  for (const d of diags) {
    traceback.push(`${file} line ${d.line}, column ${d.column}: ${d.message} (TS${d.code})`);
    traceback.push(`  ${d.line} | ${lines[d.line - 1] ?? ''}`);
    traceback.push(`  ${' '.repeat(String(d.line).length)} | ${' '.repeat(Math.max(0, d.column - 1))}^`);
  }
  return { status: 'error', ename: 'TypeScriptError', evalue: diags.map((d) => `line ${d.line}: ${d.message}`).join('; '), traceback };
}
