/**
 * Type-checks each cell against the cells before it with the TypeScript language service. A cell is checked as a
 * module; what earlier cells declared reaches it as globals, from declaration files the compiler emits for them.
 * The same service answers completion and inspection requests.
 */
import ts from 'typescript';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export interface CellDiagnostic {
  line: number; // 1-based, in the cell
  column: number; // 1-based
  code: number;
  message: string;
}

const OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts', 'lib.dom.d.ts'],
  types: ['node'],
  strict: true,
  // Cells are exploratory: untyped parameters are allowed, everything else is checked.
  noImplicitAny: false,
  allowImportingTsExtensions: true,
  declaration: true,
  emitDeclarationOnly: true,
  esModuleInterop: true,
  skipLibCheck: true,
  resolveJsonModule: true,
};

interface CellDecls {
  imports: string[];
  /** name -> declaration text for inside `declare global { }` */
  decls: Map<string, string>;
}

export class CellChecker {
  private readonly dir: string;
  private readonly files = new Map<string, { text: string; version: number }>();
  private readonly cells: CellDecls[] = [];
  /** Names earlier cells imported, by local name: import statements appended to later cells. */
  private readonly imported = new Map<string, string>();
  private readonly service: ts.LanguageService;
  readonly cellFile: string;

  constructor(
    cwd: string,
    /** Module name -> file, e.g. servelab -> engine/index.ts. */
    paths: Record<string, string>,
    /** Declarations every cell sees (display helpers and the like). */
    prelude: string,
  ) {
    // Virtual files (never written) in the notebook's own folder, so './x.ts' imports resolve as at run time.
    this.dir = cwd;
    this.cellFile = join(cwd, '.servelab-cell.ts');
    this.set(join(cwd, '.servelab-prelude.d.ts'), prelude);
    this.set(this.cellFile, 'export {};');
    const options = { ...OPTIONS, paths: Object.fromEntries(Object.entries(paths).map(([k, v]) => [k, [v]])) };
    const host: ts.LanguageServiceHost = {
      getScriptFileNames: () => [...this.files.keys()],
      getScriptVersion: (f) => String(this.files.get(f)?.version ?? 0),
      getScriptSnapshot: (f) => {
        const v = this.files.get(f);
        if (v) return ts.ScriptSnapshot.fromString(v.text);
        const text = ts.sys.readFile(f);
        return text === undefined ? undefined : ts.ScriptSnapshot.fromString(text);
      },
      getCurrentDirectory: () => cwd,
      getCompilationSettings: () => options,
      getDefaultLibFileName: (o) => ts.getDefaultLibFilePath(o),
      fileExists: (f) => this.files.has(f) || ts.sys.fileExists(f),
      readFile: (f) => this.files.get(f)?.text ?? ts.sys.readFile(f),
      directoryExists: (d) => d === this.dir || ts.sys.directoryExists(d),
      getDirectories: (d) => (existsSync(d) ? ts.sys.getDirectories(d) : []),
      readDirectory: ts.sys.readDirectory,
    };
    this.service = ts.createLanguageService(host, ts.createDocumentRegistry());
  }

  /**
   * The cell as checked: a module (so top-level await is allowed), followed by the imports of earlier cells that
   * it does not redefine. Everything is appended, so the cell's own lines and columns do not move.
   */
  private withContext(code: string): string {
    return `${withModuleMarker(code)}\n${this.earlierImports(code).join('\n')}`;
  }

  /** Import statements of earlier cells for the names this cell does not declare or import itself. */
  private earlierImports(code: string): string[] {
    const own = topLevelNames(code);
    return [...this.imported].filter(([n]) => !own.declared.has(n) && !own.imports.has(n)).map(([, stmt]) => stmt);
  }

  private set(file: string, text: string): void {
    const prev = this.files.get(file);
    if (prev?.text === text) return;
    this.files.set(file, { text: text, version: (prev?.version ?? 0) + 1 });
  }

  /** Errors of a cell, against everything earlier cells declared. */
  check(code: string): CellDiagnostic[] {
    this.set(this.cellFile, this.withContext(code));
    const sf = this.service.getProgram()!.getSourceFile(this.cellFile)!;
    const diags = [...this.service.getSyntacticDiagnostics(this.cellFile), ...this.service.getSemanticDiagnostics(this.cellFile)];
    return diags
      .filter((d) => d.category === ts.DiagnosticCategory.Error && d.start !== undefined && d.start < code.length)
      .map((d) => {
        const { line, character } = sf.getLineAndCharacterOfPosition(d.start!);
        return { line: line + 1, column: character + 1, code: d.code, message: ts.flattenDiagnosticMessageText(d.messageText, '\n') };
      });
  }

  /** Records what a cell that ran declared, so later cells are checked against it. */
  commit(code: string): void {
    const own = topLevelNames(code);
    // Declarations are emitted with the earlier cells' imports in scope: a value made from an imported function
    // keeps its type instead of becoming any.
    const context = this.earlierImports(code);
    for (const n of [...own.declared, ...own.imports.keys()]) this.imported.delete(n);
    for (const [n, stmt] of own.imports) this.imported.set(n, stmt);
    for (const c of this.cells) for (const n of own.imports.keys()) c.decls.delete(n);
    this.set(this.cellFile, `${exportAll(code)}\n${context.join('\n')}`);
    const out = this.service.getEmitOutput(this.cellFile, true);
    const dts = out.outputFiles.find((f) => f.name.endsWith('.d.ts'))?.text ?? '';
    const mine = splitDeclarations(dts);
    // A name declared again takes over: earlier cells stop declaring it.
    this.cells.forEach((c) => {
      for (const n of mine.decls.keys()) c.decls.delete(n);
    });
    this.cells.push(mine);
    this.cells.forEach((c, i) => this.set(join(this.dir, `.servelab-cell-${i}.d.ts`), render(c)));
    this.set(this.cellFile, 'export {};');
  }

  completions(code: string, pos: number): { matches: string[]; start: number; end: number } {
    this.set(this.cellFile, this.withContext(code));
    const info = this.service.getCompletionsAtPosition(this.cellFile, pos, { includeCompletionsWithInsertText: true });
    let start = pos;
    while (start > 0 && /[\w$]/.test(code[start - 1])) start--;
    const prefix = code.slice(start, pos);
    const matches = (info?.entries ?? []).map((e) => e.name).filter((n) => n.startsWith(prefix));
    return { matches: [...new Set(matches)].sort((a, b) => a.localeCompare(b)), start, end: pos };
  }

  /** Quick info at a position: the signature and its documentation. */
  inspect(code: string, pos: number): string | null {
    this.set(this.cellFile, this.withContext(code));
    let p = pos;
    // A cursor just after a name (the usual shift-tab position) inspects that name.
    if (p > 0 && !/[\w$]/.test(code[p] ?? '') && /[\w$]/.test(code[p - 1])) p--;
    const q = this.service.getQuickInfoAtPosition(this.cellFile, p);
    if (!q) return null;
    const sig = ts.displayPartsToString(q.displayParts);
    const doc = ts.displayPartsToString(q.documentation);
    return doc ? `${sig}\n\n${doc}` : sig;
  }
}

/** Top-level names a cell declares, and its imports as one statement per local name. */
function topLevelNames(code: string): { declared: Set<string>; imports: Map<string, string> } {
  const sf = ts.createSourceFile('cell.ts', code, ts.ScriptTarget.ES2022, true);
  const declared = new Set<string>();
  const imports = new Map<string, string>();
  const bind = (n: ts.BindingName) => {
    if (ts.isIdentifier(n)) declared.add(n.text);
    else for (const e of n.elements) if (!ts.isOmittedExpression(e)) bind(e.name);
  };
  for (const s of sf.statements) {
    if (ts.isImportDeclaration(s) && s.importClause) {
      const from = s.moduleSpecifier.getText(sf);
      const c = s.importClause;
      const type = c.isTypeOnly ? 'type ' : '';
      if (c.name) imports.set(c.name.text, `import ${type}${c.name.text} from ${from};`);
      const nb = c.namedBindings;
      if (nb && ts.isNamespaceImport(nb)) imports.set(nb.name.text, `import ${type}* as ${nb.name.text} from ${from};`);
      if (nb && ts.isNamedImports(nb)) {
        for (const e of nb.elements) imports.set(e.name.text, `import ${type}{ ${e.getText(sf)} } from ${from};`);
      }
    } else if (ts.isVariableStatement(s)) for (const d of s.declarationList.declarations) bind(d.name);
    else if ((ts.isFunctionDeclaration(s) || ts.isClassDeclaration(s) || ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s) || ts.isEnumDeclaration(s)) && s.name) declared.add(s.name.text);
  }
  return { declared, imports };
}

/** A trailing marker makes the cell a module (so top-level await is allowed) without moving any of its lines. */
const withModuleMarker = (code: string) => `${code}\n;export {};`;

/** The cell with every top-level declaration exported, so declaration emit covers all of them. */
function exportAll(code: string): string {
  const sf = ts.createSourceFile('cell.ts', code, ts.ScriptTarget.ES2022, true);
  const edits: number[] = [];
  for (const s of sf.statements) {
    const declares = ts.isVariableStatement(s) || ts.isFunctionDeclaration(s) || ts.isClassDeclaration(s) || ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s) || ts.isEnumDeclaration(s);
    const exported = ts.canHaveModifiers(s) && ts.getModifiers(s)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (declares && !exported) edits.push(s.getStart(sf));
  }
  let out = code;
  for (const at of edits.reverse()) out = `${out.slice(0, at)}export ${out.slice(at)}`;
  return withModuleMarker(out);
}

function splitDeclarations(dts: string): CellDecls {
  const sf = ts.createSourceFile('cell.d.ts', dts, ts.ScriptTarget.ES2022, true);
  const imports: string[] = [];
  const decls = new Map<string, string>();
  const strip = (text: string) => text.replace(/^export\s+/, '').replace(/^declare\s+/, '');
  for (const s of sf.statements) {
    if (ts.isImportDeclaration(s) || ts.isImportEqualsDeclaration(s)) imports.push(s.getText(sf));
    else if (ts.isVariableStatement(s)) {
      const kind = s.declarationList.flags & ts.NodeFlags.Const ? 'const' : s.declarationList.flags & ts.NodeFlags.Let ? 'let' : 'var';
      for (const d of s.declarationList.declarations) {
        const ns: string[] = [];
        if (ts.isIdentifier(d.name)) ns.push(d.name.text);
        for (const n of ns) decls.set(n, `${kind} ${d.getText(sf)};`);
      }
    } else if (ts.isExportDeclaration(s)) continue;
    else {
      const name = ts.getNameOfDeclaration(s as ts.DeclarationStatement);
      if (name && ts.isIdentifier(name)) decls.set(name.text, (decls.has(name.text) ? decls.get(name.text) + '\n' : '') + strip(s.getText(sf)));
    }
  }
  return { imports, decls };
}

function render(c: CellDecls): string {
  return `${c.imports.join('\n')}\ndeclare global {\n${[...c.decls.values()].join('\n')}\n}\nexport {};\n`;
}
