/**
 * Type-checks each cell against the cells before it with one long-lived TypeScript language service (the way an
 * editor checks the file being typed). A cell is checked as a module; what earlier cells declared reaches it as
 * globals, from declaration files the compiler emitted for them. Each cell costs one program, built incrementally
 * from the last: the set of root files only changes when a cell declares something, files on disk are read and
 * resolved once, and the declarations a cell leaves behind are emitted from the very program that checked it.
 */
import type TS from 'typescript';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { typescript } from './typescript.ts';
import { docComment } from './doc_comment.ts';
import { exportAll, render, splitDeclarations, toOriginal, topLevelNames, withModuleMarker, words, type CellDecls } from './cell_decls.ts';

export interface CellDiagnostic {
  line: number; // 1-based, in the cell
  column: number; // 1-based
  code: number;
  message: string;
}

/** What the checker holds, for `lab.kernelMemory()`. */
export interface CheckerStats {
  programFiles: number;
  /** Characters of source across the program (lib files, @types/node, imported modules, cells' declarations). */
  programChars: number;
  /** Declaration files kept for earlier cells (one per cell whose names are still live). */
  cellFiles: number;
  liveNames: number;
  diskFilesCached: number;
}

function options(ts: typeof TS, cwd: string, paths: Record<string, string>): TS.CompilerOptions {
  return {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    // No DOM: cells run in Node, whose globals (fetch, URL, AbortSignal, performance) @types/node declares; the DOM
    // library alone would double what every program parses and binds.
    lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    // The notebook's own @types first, then servelab's: a notebook in a folder without node_modules still knows Node.
    typeRoots: [join(cwd, 'node_modules', '@types'), SERVELAB_TYPES],
    strict: true,
    // Cells are exploratory: untyped parameters are allowed, everything else is checked.
    noImplicitAny: false,
    allowImportingTsExtensions: true,
    declaration: true,
    emitDeclarationOnly: true,
    esModuleInterop: true,
    skipLibCheck: true,
    resolveJsonModule: true,
    paths: Object.fromEntries(Object.entries(paths).map(([k, v]) => [k, [v]])),
  };
}

const SERVELAB_TYPES = dirname(dirname(createRequire(import.meta.url).resolve('@types/node/package.json')));

/** Cannot find module '{0}' (and its variants that suggest a fix). */
const MODULE_NOT_FOUND = new Set([2307, 2792, 7016]);
/** Declaration slots added at a time. */
const SLOT_BLOCK = 32;

export class CellChecker {
  private readonly ts = typescript();
  private readonly files = new Map<string, { text: string; version: number }>();
  /** Files read from disk (lib files, @types, imported sources): read once, as a cell's import of them is. */
  private readonly disk = new Map<string, TS.IScriptSnapshot>();
  private readonly resolution: TS.ModuleResolutionCache;
  private readonly typeResolution: TS.TypeReferenceDirectiveResolutionCache;
  /**
   * Declaration files of earlier cells, one per cell whose names are still live. A program whose root files differ
   * from the last one's is built from scratch (every file found, every import resolved again), so files come in
   * blocks of empty slots, and a cell whose names were all declared again hands its slot to a later cell.
   */
  private readonly slots: { file: string; decls: CellDecls | null }[] = [];
  /** Names earlier cells imported, by local name: import statements appended to later cells. */
  private readonly imported = new Map<string, string>();
  private readonly service: TS.LanguageService;
  private readonly prelude: string;
  /** Prelude lines by the global each declares, read into the program once a cell names that global. */
  private readonly preludeLines = new Map<string, string>();
  private readonly preludeAlways: string[] = [];
  private readonly preludeUsed = new Set<string>();
  private lastNames: { code: string; names: ReturnType<typeof topLevelNames> } | null = null;
  readonly cellFile: string;

  constructor(
    private readonly cwd: string,
    /** Module name -> file, e.g. servelab -> engine/index.ts. */
    paths: Record<string, string>,
    /** Declarations every cell sees (display helpers and the like). */
    prelude: string,
  ) {
    const ts = this.ts;
    // Virtual files (never written) in the notebook's own folder, so './x.ts' imports resolve as at run time.
    this.cellFile = join(cwd, '.servelab-cell.ts');
    this.prelude = join(cwd, '.servelab-prelude.d.ts');
    for (const line of prelude.split('\n')) {
      const name = /^declare\s+(?:const|let|var|function|class)\s+([A-Za-z_$][\w$]*)/.exec(line)?.[1];
      if (name) this.preludeLines.set(name, line);
      else this.preludeAlways.push(line);
    }
    this.usePrelude([]);
    this.set(this.cellFile, 'export {};');
    const opts = options(ts, cwd, paths);
    this.resolution = ts.createModuleResolutionCache(cwd, (f) => f, opts);
    this.typeResolution = ts.createTypeReferenceDirectiveResolutionCache(cwd, (f) => f, opts, this.resolution.getPackageJsonInfoCache());
    const moduleHost: TS.ModuleResolutionHost = { fileExists: (f) => this.fileExists(f), readFile: (f) => this.readFile(f), directoryExists: (d) => d === cwd || ts.sys.directoryExists(d), realpath: ts.sys.realpath, getCurrentDirectory: () => cwd };
    const host: TS.LanguageServiceHost & { getModuleResolutionCache(): TS.ModuleResolutionCache } = {
      // Root files in a fixed order, so that a program whose files are the same reuses the last one's structure.
      getScriptFileNames: () => [this.prelude, ...this.slots.map((c) => c.file), this.cellFile],
      getScriptVersion: (f) => String(this.files.get(f)?.version ?? 0),
      getScriptSnapshot: (f) => this.snapshot(f),
      getCurrentDirectory: () => cwd,
      getCompilationSettings: () => opts,
      getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
      fileExists: (f) => this.fileExists(f),
      readFile: (f) => this.readFile(f),
      directoryExists: moduleHost.directoryExists,
      getDirectories: (d) => (ts.sys.directoryExists(d) ? ts.sys.getDirectories(d) : []),
      readDirectory: ts.sys.readDirectory,
      realpath: ts.sys.realpath,
      // JSDoc is parsed only where it changes types (as tsc does): most of @types/node is documentation, and parsing
      // it would double what the first program costs. inspect() reads a declaration's comment from its text instead.
      jsDocParsingMode: ts.JSDocParsingMode.ParseForTypeErrors,
      // One cache for module and type-reference resolution and package.json lookups, kept across programs: a
      // program whose root files changed (a cell declared something) would otherwise resolve everything again.
      getModuleResolutionCache: () => this.resolution,
      resolveModuleNameLiterals: (literals, containingFile, redirected, o, containingSourceFile) =>
        literals.map((lit) => ts.resolveModuleName(lit.text, containingFile, o, moduleHost, this.resolution, redirected, ts.getModeForUsageLocation(containingSourceFile, lit, o))),
      resolveTypeReferenceDirectiveReferences: (refs, containingFile, redirected, o) =>
        refs.map((ref) => ts.resolveTypeReferenceDirective(typeof ref === 'string' ? ref : ref.fileName.toLowerCase(), containingFile, o, moduleHost, redirected, this.typeResolution, typeof ref === 'string' ? undefined : ref.resolutionMode)),
    };
    this.service = ts.createLanguageService(host, ts.createDocumentRegistry(true, cwd, ts.JSDocParsingMode.ParseForTypeErrors));
  }

  private fileExists(f: string): boolean {
    return this.files.has(f) || this.disk.has(f) || this.ts.sys.fileExists(f);
  }

  private readFile(f: string): string | undefined {
    const v = this.files.get(f);
    if (v) return v.text;
    const s = this.snapshot(f);
    return s ? s.getText(0, s.getLength()) : undefined;
  }

  private snapshot(f: string): TS.IScriptSnapshot | undefined {
    const v = this.files.get(f);
    if (v) return this.ts.ScriptSnapshot.fromString(v.text);
    let s = this.disk.get(f);
    if (!s) {
      const text = this.ts.sys.readFile(f);
      if (text === undefined) return undefined;
      s = this.ts.ScriptSnapshot.fromString(text);
      this.disk.set(f, s);
    }
    return s;
  }

  /**
   * The prelude with the lines for these names added. A global's type may pull in a module and all it imports (the
   * display helpers the engine, `generateInCell` the model): a notebook that never names it never pays for it.
   */
  private usePrelude(names: Iterable<string>): void {
    for (const n of names) if (this.preludeLines.has(n)) this.preludeUsed.add(n);
    this.set(this.prelude, [...this.preludeAlways, ...[...this.preludeUsed].map((n) => this.preludeLines.get(n)!)].join('\n'));
  }

  private set(file: string, text: string): void {
    const prev = this.files.get(file);
    if (prev?.text === text) return;
    this.files.set(file, { text, version: (prev?.version ?? 0) + 1 });
  }

  /** topLevelNames, remembered for the last cell: check and commit both ask for it. */
  private names(code: string): ReturnType<typeof topLevelNames> {
    if (this.lastNames?.code !== code) this.lastNames = { code, names: topLevelNames(code) };
    return this.lastNames.names;
  }

  /** Import statements of earlier cells for the names this cell does not declare or import itself (and, if given, names). */
  private earlierImports(code: string, only?: Set<string>): string[] {
    const own = this.names(code);
    return [...this.imported].filter(([n]) => !own.declared.has(n) && !own.imports.has(n) && (!only || only.has(n))).map(([, stmt]) => stmt);
  }

  /**
   * The cell as checked and as its declarations are emitted: every declaration exported, followed by the imports of
   * earlier cells that it names. Check and commit set the same text, so the declarations come from the program that
   * checked the cell.
   */
  private checkedText(code: string): { text: string; inserts: number[] } {
    const { text, inserts } = exportAll(code);
    const named = words(code);
    this.usePrelude(named);
    return { text: `${text}\n${this.earlierImports(code, named).join('\n')}`, inserts };
  }

  /** Errors of a cell, against everything earlier cells declared. */
  check(code: string): CellDiagnostic[] {
    const ts = this.ts;
    const { text, inserts } = this.checkedText(code);
    this.set(this.cellFile, text);
    const program = this.service.getProgram()!;
    const sf = program.getSourceFile(this.cellFile)!;
    // The program's own semantic diagnostics: the service would add declaration-emit diagnostics, which concern
    // files that export to others, not a cell.
    const diags = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
    // A module the cell cannot find may exist by its next run (a file written, a package installed): forget what
    // resolution remembered, failures included.
    if (diags.some((d) => MODULE_NOT_FOUND.has(d.code))) {
      this.resolution.clear();
      this.typeResolution.clear();
    }
    return diags
      .filter((d) => d.category === ts.DiagnosticCategory.Error && d.start !== undefined)
      .map((d) => ({ d, at: toOriginal(d.start!, inserts) }))
      .filter(({ at }) => at < code.length)
      .map(({ d, at }) => {
        const { line, column } = lineAndColumn(code, at);
        return { line, column, code: d.code, message: ts.flattenDiagnosticMessageText(d.messageText, '\n') };
      });
  }

  /** Checks a cell and emits its declarations without recording them: the compiler's code paths run once, early. */
  warm(code: string): void {
    this.check(code);
    this.service.getEmitOutput(this.cellFile, true);
  }

  /** Records what a cell that ran declared, so later cells are checked against it. */
  commit(code: string): void {
    const own = this.names(code);
    // A cell that declares and imports nothing leaves nothing for later cells.
    if (own.declared.size === 0 && own.imports.size === 0) return;
    // Declarations are emitted with the earlier cells' imports in scope: a value made from an imported function
    // keeps its type instead of becoming any.
    this.set(this.cellFile, this.checkedText(code).text);
    const out = this.service.getEmitOutput(this.cellFile, true);
    for (const n of [...own.declared, ...own.imports.keys()]) this.imported.delete(n);
    for (const [n, stmt] of own.imports) this.imported.set(n, stmt);
    const dts = out.outputFiles.find((f) => f.name.endsWith('.d.ts'))?.text ?? '';
    const mine = splitDeclarations(dts);
    // A name declared again takes over: earlier cells stop declaring it; a cell left with nothing is dropped.
    for (const slot of this.slots) {
      for (const n of [...mine.decls.keys(), ...own.imports.keys()]) slot.decls?.decls.delete(n);
      if (slot.decls?.decls.size === 0) slot.decls = null;
    }
    if (mine.decls.size) {
      if (!this.slots.some((x) => x.decls === null)) {
        for (let i = 0, n = this.slots.length; i < SLOT_BLOCK; i++) this.slots.push({ file: join(this.cwd, `.servelab-cell-${n + i}.d.ts`), decls: null });
      }
      this.slots.find((x) => x.decls === null)!.decls = mine;
    }
    // An empty slot still augments the global scope: a file that starts or stops doing so changes the program's
    // structure, and the next program would be built from scratch.
    for (const slot of this.slots) this.set(slot.file, render(slot.decls ?? { imports: [], decls: new Map() }));
  }

  /** The cell with every earlier import in scope and its positions as typed: what completion and inspection read. */
  private atCursor(code: string): void {
    this.usePrelude(this.preludeLines.keys());
    this.set(this.cellFile, `${withModuleMarker(code)}\n${this.earlierImports(code).join('\n')}`);
  }

  completions(code: string, pos: number): { matches: string[]; start: number; end: number } {
    this.atCursor(code);
    const info = this.service.getCompletionsAtPosition(this.cellFile, pos, { includeCompletionsWithInsertText: true });
    let start = pos;
    while (start > 0 && /[\w$]/.test(code[start - 1])) start--;
    const prefix = code.slice(start, pos);
    const matches = (info?.entries ?? []).map((e) => e.name).filter((n) => n.startsWith(prefix));
    return { matches: [...new Set(matches)].sort((a, b) => a.localeCompare(b)), start, end: pos };
  }

  /** Quick info at a position: the signature and its documentation. */
  inspect(code: string, pos: number): string | null {
    this.atCursor(code);
    let p = pos;
    // A cursor just after a name (the usual shift-tab position) inspects that name.
    if (p > 0 && !/[\w$]/.test(code[p] ?? '') && /[\w$]/.test(code[p - 1])) p--;
    const q = this.service.getQuickInfoAtPosition(this.cellFile, p);
    if (!q) return null;
    const sig = this.ts.displayPartsToString(q.displayParts);
    const doc = this.ts.displayPartsToString(q.documentation) || docComment(this.ts, this.service, this.cellFile, p);
    return doc ? `${sig}\n\n${doc}` : sig;
  }

  stats(): CheckerStats {
    const files = this.service.getProgram()?.getSourceFiles() ?? [];
    return {
      programFiles: files.length,
      programChars: files.reduce((n, f) => n + f.text.length, 0),
      cellFiles: this.slots.filter((x) => x.decls).length,
      liveNames: this.slots.reduce((n, x) => n + (x.decls?.decls.size ?? 0), 0) + this.imported.size,
      diskFilesCached: this.disk.size,
    };
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
