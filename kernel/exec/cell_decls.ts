/**
 * What a cell leaves to later cells, as text the type checker reads: its top-level names and imports, the cell with
 * every declaration exported (so declaration emit covers them all, as a REPL's "everything is global" would), and
 * the emitted declarations split by name, so a name declared again in a later cell replaces the earlier one.
 */
import { typescript } from './typescript.ts';

/** Declarations of one cell: its import lines and, by name, what goes inside `declare global { }`. */
export interface CellDecls {
  imports: string[];
  decls: Map<string, string>;
}

/** Top-level names a cell declares, and its imports as one statement per local name. */
export function topLevelNames(code: string): { declared: Set<string>; imports: Map<string, string> } {
  const ts = typescript();
  const sf = ts.createSourceFile('cell.ts', code, ts.ScriptTarget.ES2022, true);
  const declared = new Set<string>();
  const imports = new Map<string, string>();
  const bind = (n: import('typescript').BindingName) => {
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

/** Every identifier-like word in the cell: an earlier import the cell never names cannot change its types. */
export function words(code: string): Set<string> {
  return new Set(code.match(/[A-Za-z_$][\w$]*/g) ?? []);
}

/** A trailing marker makes the cell a module (so top-level await is allowed) without moving any of its lines. */
export const withModuleMarker = (code: string) => `${code}\n;export {};`;

const EXPORT = 'export ';

/**
 * The cell with every top-level declaration exported, and where the `export ` keywords went (offsets in the
 * original text): the checker reads this form, and `toOriginal` maps its diagnostics back to the cell's own columns.
 */
export function exportAll(code: string): { text: string; inserts: number[] } {
  const ts = typescript();
  const sf = ts.createSourceFile('cell.ts', code, ts.ScriptTarget.ES2022, true);
  const inserts: number[] = [];
  for (const s of sf.statements) {
    const declares = ts.isVariableStatement(s) || ts.isFunctionDeclaration(s) || ts.isClassDeclaration(s) || ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s) || ts.isEnumDeclaration(s);
    const exported = ts.canHaveModifiers(s) && ts.getModifiers(s)?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (declares && !exported) inserts.push(s.getStart(sf));
  }
  let out = code;
  for (const at of [...inserts].reverse()) out = `${out.slice(0, at)}${EXPORT}${out.slice(at)}`;
  return { text: withModuleMarker(out), inserts };
}

/** A position in the exported form -> the same character in the cell as written. */
export function toOriginal(pos: number, inserts: number[]): number {
  let shift = 0;
  for (const at of inserts) {
    const start = at + shift;
    if (pos < start) break;
    // Inside an inserted keyword: the declaration it was put in front of.
    if (pos < start + EXPORT.length) return at;
    shift += EXPORT.length;
  }
  return pos - shift;
}

export function splitDeclarations(dts: string): CellDecls {
  const ts = typescript();
  const sf = ts.createSourceFile('cell.d.ts', dts, ts.ScriptTarget.ES2022, true);
  const imports: string[] = [];
  const decls = new Map<string, string>();
  const strip = (text: string) => text.replace(/^export\s+/, '').replace(/^declare\s+/, '');
  for (const s of sf.statements) {
    if (ts.isImportDeclaration(s) || ts.isImportEqualsDeclaration(s)) imports.push(s.getText(sf));
    else if (ts.isVariableStatement(s)) {
      const kind = s.declarationList.flags & ts.NodeFlags.Const ? 'const' : s.declarationList.flags & ts.NodeFlags.Let ? 'let' : 'var';
      for (const d of s.declarationList.declarations) if (ts.isIdentifier(d.name)) decls.set(d.name.text, `${kind} ${d.getText(sf)};`);
    } else if (ts.isExportDeclaration(s)) continue;
    else {
      const name = ts.getNameOfDeclaration(s as import('typescript').DeclarationStatement);
      if (name && ts.isIdentifier(name)) decls.set(name.text, (decls.has(name.text) ? decls.get(name.text) + '\n' : '') + strip(s.getText(sf)));
    }
  }
  return { imports, decls };
}

export function render(c: CellDecls): string {
  return `${c.imports.join('\n')}\ndeclare global {\n${[...c.decls.values()].join('\n')}\n}\nexport {};\n`;
}
