/**
 * Type-checks each cell against the cells before it with the native TypeScript compiler (tsgo), which runs as a
 * child process and holds the program: the kernel's own heap keeps no syntax trees, and a changed cell is checked in
 * a millisecond or two. Files are virtual (never written) and live in the notebook's folder, so './x.ts' imports
 * resolve as at run time. A cell is checked as a module; each earlier cell stays in the program as a module of its
 * own that declares its live names globally, typed by its own inference through aliases (cell_decls.ts:
 * augmentation), so no declaration has to be emitted and a later cell sees them as globals.
 */
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Tsgo, type Diagnostic, type TsgoProject } from './tsgo.ts';
import { augmentation, exportAll, shadow, toOriginal, topLevelNames, withModuleMarker, words, type TopLevel } from './cell_decls.ts';

export interface CellDiagnostic {
  line: number; // 1-based, in the cell
  column: number; // 1-based
  code: number;
  message: string;
}

/** What the checker holds, for `lab.kernelMemory()`. */
export interface CheckerStats {
  programFiles: number;
  /** Earlier cells whose names are still live, each a module in the program. */
  cellFiles: number;
  liveNames: number;
  /** Resident set of the compiler's process, bytes (null where /proc cannot tell). */
  processRss: number | null;
}

const SERVELAB_TYPES = dirname(dirname(createRequire(import.meta.url).resolve('@types/node/package.json')));

function compilerOptions(cwd: string, paths: Record<string, string>): Record<string, unknown> {
  return {
    target: 'es2022',
    module: 'esnext',
    moduleResolution: 'bundler',
    // No DOM: cells run in Node, whose globals (fetch, URL, AbortSignal, performance) @types/node declares; the DOM
    // library alone would double what every program parses and binds.
    lib: ['es2023', 'esnext.disposable'],
    types: ['node'],
    // The notebook's own @types first, then servelab's: a notebook in a folder without node_modules still knows Node.
    typeRoots: [join(cwd, 'node_modules', '@types'), SERVELAB_TYPES],
    strict: true,
    // Cells are exploratory: untyped parameters are allowed, everything else is checked.
    noImplicitAny: false,
    allowImportingTsExtensions: true,
    noEmit: true,
    esModuleInterop: true,
    skipLibCheck: true,
    resolveJsonModule: true,
    paths: Object.fromEntries(Object.entries(paths).map(([k, v]) => [k, [v]])),
  };
}

/** Cannot find module '{0}' (and its variants that suggest a fix). */
const MODULE_NOT_FOUND = new Set([2307, 2792, 7016]);
/** The compiler's DiagnosticCategory.Error. */
const ERROR = 1;
/** Cell module files added at a time. */
const SLOT_BLOCK = 32;
/**
 * An empty slot: a module that augments the global scope, as a filled one does. A file that starts augmenting it
 * changes the program's structure, and the next program resolves every module again.
 */
const EMPTY_MODULE = 'export {};\ndeclare global {}';

/** A diagnostic's message with its chain, indented by depth as tsc prints it. */
function flatten(d: Diagnostic, depth = 0): string {
  let out = `${'  '.repeat(depth)}${d.text}`;
  for (const c of d.messageChain ?? []) out += `\n${flatten(c, depth + 1)}`;
  return out;
}

export class CellChecker {
  private readonly tsgo: Tsgo;
  private current: TsgoProject | null = null;
  /** Virtual files by path, and the changes the compiler has not been told of yet. */
  private readonly files = new Map<string, string>();
  private readonly changed = new Set<string>();
  private invalidateAll = false;
  /**
   * Earlier cells' modules, one per cell whose names are still live: each file is the cell as it was checked, followed
   * by the global declarations of its live names. Files are root files that come in blocks of empty slots (a new
   * root file costs a new program's module resolution, a few hundred file lookups), and a cell whose names were all
   * declared again hands its slot to a later cell.
   */
  private readonly slots: { file: string; cell: { text: string; top: TopLevel; live: Set<string>; uses: Set<number> } | null }[] = [];
  /** Names earlier cells imported, by local name: import statements appended to later cells. */
  private readonly imported = new Map<string, string>();
  private readonly config: string;
  private readonly compilerOptions: Record<string, unknown>;
  private readonly prelude: string;
  readonly cellFile: string;
  /** Prelude lines by the global each declares, read into the program once a cell names that global. */
  private readonly preludeLines = new Map<string, string>();
  private readonly preludeAlways: string[] = [];
  private readonly preludeUsed = new Set<string>();
  private lastNames: { code: string; names: TopLevel } | null = null;

  constructor(
    private readonly cwd: string,
    /** Module name -> file, e.g. servelab -> engine/index.ts. */
    paths: Record<string, string>,
    /** Declarations every cell sees (display helpers and the like). */
    prelude: string,
  ) {
    this.config = join(cwd, '.servelab-tsconfig.json');
    this.prelude = join(cwd, '.servelab-prelude.d.ts');
    this.cellFile = join(cwd, '.servelab-cell.ts');
    for (const line of prelude.split('\n')) {
      const name = /^declare\s+(?:const|let|var|function|class)\s+([A-Za-z_$][\w$]*)/.exec(line)?.[1];
      if (name) this.preludeLines.set(name, line);
      else this.preludeAlways.push(line);
    }
    this.compilerOptions = compilerOptions(cwd, paths);
    // Virtual files are read from memory (null: no such file, without asking the disk), the rest from the disk. Only
    // reads call back: the virtual files are root files, never resolved as modules, so module resolution's file
    // lookups (hundreds per program) stay inside the compiler.
    const own = join(cwd, '.servelab-');
    this.tsgo = new Tsgo(cwd, (f) => this.files.get(f) ?? (f.startsWith(own) ? null : undefined));
    this.usePrelude([]);
    this.addSlots();
    this.set(this.cellFile, 'export {};');
  }

  private set(file: string, text: string): void {
    if (this.files.get(file) === text) return;
    this.files.set(file, text);
    if (this.current) this.changed.add(file);
  }

  /**
   * The program with every change made so far; the first call starts the compiler and builds the first program.
   * Changed files are handed over one at a time: a snapshot with two changed files resolves every module again
   * (a few hundred file lookups, 20-40 ms), one with a single file reuses the last program's.
   */
  private project(): TsgoProject {
    if (!this.current) {
      this.current = this.tsgo.update(this.config, { openProjects: [this.config] });
      this.changed.clear();
    }
    const updates = this.invalidateAll ? [{ invalidateAll: true as const }] : this.changed.has(this.config) ? [{ changed: [...this.changed] }] : [...this.changed].map((f) => ({ changed: [f] }));
    this.invalidateAll = false;
    this.changed.clear();
    for (const fileChanges of updates) this.current = this.tsgo.update(this.config, { fileChanges });
    return this.current;
  }

  /**
   * The prelude with the lines for these names added. A global's type may pull in a module and all it imports (the
   * display helpers the engine, `generateInCell` the model): a notebook that never names it never pays for it.
   */
  private usePrelude(names: Iterable<string>): void {
    for (const n of names) if (this.preludeLines.has(n)) this.preludeUsed.add(n);
    this.set(this.prelude, [...this.preludeAlways, ...[...this.preludeUsed].map((n) => this.preludeLines.get(n)!)].join('\n'));
  }

  /** A block of empty slots, and the configuration that lists them. */
  private addSlots(): void {
    for (let i = 0, n = this.slots.length; i < SLOT_BLOCK; i++) {
      this.slots.push({ file: join(this.cwd, `.servelab-cell-${n + i}.ts`), cell: null });
      this.set(this.slots[n + i].file, EMPTY_MODULE);
    }
    const files = [this.prelude, ...this.slots.map((x) => x.file), this.cellFile];
    this.set(this.config, JSON.stringify({ compilerOptions: this.compilerOptions, files }));
  }

  /** topLevelNames, remembered for the last cell: check and commit both ask for it. */
  private names(code: string): TopLevel {
    if (this.lastNames?.code !== code) this.lastNames = { code, names: topLevelNames(code) };
    return this.lastNames.names;
  }

  /** Import statements of earlier cells for the names this cell does not declare or import itself (and, if given, names). */
  private earlierImports(code: string, only?: Set<string>): string[] {
    const own = this.names(code);
    return [...this.imported].filter(([n]) => !own.declared.has(n) && !own.imports.has(n) && (!only || only.has(n))).map(([, stmt]) => stmt);
  }

  /** The cell as checked and as later cells see it: every declaration exported, followed by the earlier cells' imports it names. */
  private checkedText(code: string): { text: string; inserts: number[] } {
    const { text, inserts } = exportAll(code);
    const named = words(code);
    this.usePrelude(named);
    return { text: `${text}\n${this.earlierImports(code, named).join('\n')}`, inserts };
  }

  /**
   * fn on the current program. If the compiler's process fails (killed, out of memory), a new one is started with
   * every file as it stands and fn runs once more: the kernel keeps checking cells.
   */
  private withProgram<T>(fn: (p: TsgoProject) => T): T {
    try {
      return fn(this.project());
    } catch {
      this.close();
      return fn(this.project());
    }
  }

  /** Builds the first program and checks a cell, so that the first real cell finds the compiler warm. */
  warm(code: string): void {
    this.check(code);
  }

  /** Errors of a cell, against everything earlier cells declared. */
  check(code: string): CellDiagnostic[] {
    const { text, inserts } = this.checkedText(code);
    this.set(this.cellFile, text);
    const diags = this.withProgram((p) => p.diagnostics(this.cellFile));
    // A module the cell cannot find may exist by its next run (a file written, a package installed): the next
    // program looks again.
    if (diags.some((d) => MODULE_NOT_FOUND.has(d.code))) this.invalidateAll = true;
    return diags
      .filter((d) => d.category === ERROR)
      .map((d) => ({ d, at: toOriginal(d.pos, inserts) }))
      .filter(({ at }) => at < code.length)
      .map(({ d, at }) => ({ ...lineAndColumn(code, at), code: d.code, message: flatten(d) }));
  }

  /** Records what a cell that ran declared, so later cells are checked against it. */
  commit(code: string): void {
    const own = this.names(code);
    // A cell that declares and imports nothing leaves nothing for later cells.
    if (own.declared.size === 0 && own.imports.size === 0) return;
    // The earlier names this cell uses keep, in its module, the types they had now: it declares them from the
    // namespaces of the cells that declared them, and those cells' modules stay as long as it does.
    const used = words(code);
    const uses = new Set<number>();
    const shadows: string[] = [];
    if (own.declared.size) {
      this.slots.forEach((slot, i) => {
        for (const n of slot.cell?.live ?? []) {
          if (!used.has(n) || own.declared.has(n) || own.imports.has(n)) continue;
          uses.add(i);
          shadows.push(...shadow(i, slot.cell!.top, n));
        }
      });
    }
    for (const n of own.imports.keys()) this.imported.set(n, own.imports.get(n)!);
    for (const n of own.declared) this.imported.delete(n);
    // A name declared or imported again takes over: earlier cells stop declaring it.
    const taken = [...own.declared, ...own.imports.keys()];
    for (const slot of this.slots) if (slot.cell && taken.some((n) => slot.cell!.live.has(n))) for (const n of taken) slot.cell.live.delete(n);
    if (own.declared.size) {
      if (!this.slots.some((x) => x.cell === null)) this.addSlots();
      const slot = this.slots.find((x) => x.cell === null)!;
      // The cell's module, with the earlier imports in scope: a value made from an imported function keeps its type.
      slot.cell = { text: `${this.checkedText(code).text}\n${shadows.join('\n')}`, top: own, live: new Set(own.declared), uses };
    }
    // A cell with live names, or one a kept cell uses, keeps its slot; the others are freed for later cells.
    const kept = new Set<number>();
    const keep = (i: number) => {
      if (kept.has(i)) return;
      kept.add(i);
      for (const j of this.slots[i].cell!.uses) keep(j);
    };
    this.slots.forEach((slot, i) => slot.cell?.live.size && keep(i));
    this.slots.forEach((slot, i) => {
      if (!kept.has(i)) slot.cell = null;
      this.set(slot.file, slot.cell ? `${slot.cell.text}\n${augmentation(i, slot.cell.top, slot.cell.live)}` : EMPTY_MODULE);
    });
  }

  /** The cell with every earlier import in scope and its positions as typed: what completion and inspection read. */
  private atCursor(code: string): void {
    this.usePrelude(this.preludeLines.keys());
    this.set(this.cellFile, `${withModuleMarker(code)}\n${this.earlierImports(code).join('\n')}`);
  }

  completions(code: string, pos: number): { matches: string[]; start: number; end: number } {
    this.atCursor(code);
    const names = this.withProgram((p) => p.completions(this.cellFile, pos));
    let start = pos;
    while (start > 0 && /[\w$]/.test(code[start - 1])) start--;
    const prefix = code.slice(start, pos);
    return { matches: [...new Set(names.filter((n) => n.startsWith(prefix)))].sort((a, b) => a.localeCompare(b)), start, end: pos };
  }

  /** The signature (or type) of the name at a position, and its documentation. */
  inspect(code: string, pos: number): string | null {
    this.atCursor(code);
    let at = pos;
    // A cursor just after a name (the usual shift-tab position) inspects that name.
    if (at > 0 && !/[\w$]/.test(code[at] ?? '') && /[\w$]/.test(code[at - 1])) at--;
    const found = this.withProgram((p) => p.describe(this.cellFile, at));
    if (!found) return null;
    return found.doc ? `${found.signature}\n\n${found.doc}` : found.signature;
  }

  stats(): CheckerStats {
    return {
      programFiles: this.current?.sourceFileCount() ?? 0,
      cellFiles: this.slots.filter((x) => x.cell).length,
      liveNames: this.slots.reduce((n, x) => n + (x.cell?.live.size ?? 0), 0) + this.imported.size,
      processRss: compilerRss(),
    };
  }

  /** Stops the compiler's process (a new one starts on the next check). */
  close(): void {
    this.tsgo.close();
    this.current = null;
  }
}

/** Resident set of this process's tsgo child, from /proc. */
function compilerRss(): number | null {
  try {
    const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    for (const pid of children) {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      if (/^Name:\s+tsgo/m.test(status)) return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    }
    return null;
  } catch {
    return null;
  }
}

/** 1-based line and column of an offset. */
function lineAndColumn(code: string, at: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = code.indexOf('\n'); i !== -1 && i < at; i = code.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, column: at - start + 1 };
}
