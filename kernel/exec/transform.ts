/**
 * A TypeScript cell -> a script that runs in the kernel's global scope: top-level declarations become globals
 * (so later cells see them and may redeclare them), imports become dynamic imports, the body runs inside an async
 * function (top-level await), and the last expression is returned as the cell's result.
 */
import type TS from 'typescript';
import { typescript } from './typescript.ts';

export interface Converted {
  /** The script to run; evaluates to a Promise of the cell's last expression (undefined if none). */
  js: string;
  /** Source map from js back to the cell's own lines, for tracebacks. */
  map: string;
  /** Names the cell declares at top level (values only; types are erased). */
  declared: string[];
}

export const IMPORT_FN = '__servelab_import';

function names(n: TS.BindingName, out: string[]): void {
  const ts = typescript();
  if (ts.isIdentifier(n)) out.push(n.text);
  else for (const e of n.elements) if (!ts.isOmittedExpression(e)) names(e.name, out);
}

/** Binding pattern -> assignment target ({a, b: [c]} stays a pattern, identifiers stay identifiers). */
function toTarget(f: TS.NodeFactory, n: TS.BindingName): TS.Expression {
  const ts = typescript();
  if (ts.isIdentifier(n)) return f.createIdentifier(n.text);
  if (ts.isObjectBindingPattern(n)) {
    return f.createObjectLiteralExpression(
      n.elements.map((e) => {
        const target = e.initializer ? f.createAssignment(toTarget(f, e.name), e.initializer) : toTarget(f, e.name);
        if (e.dotDotDotToken) return f.createSpreadAssignment(toTarget(f, e.name));
        const key = e.propertyName ?? (ts.isIdentifier(e.name) ? e.name : undefined);
        return key && !(ts.isIdentifier(e.name) && !e.propertyName && !e.initializer)
          ? f.createPropertyAssignment(key as TS.PropertyName, target)
          : f.createShorthandPropertyAssignment((e.name as TS.Identifier).text, e.initializer);
      }),
    );
  }
  return f.createArrayLiteralExpression(
    n.elements.map((e) => {
      if (ts.isOmittedExpression(e)) return f.createOmittedExpression();
      const t = toTarget(f, e.name);
      if (e.dotDotDotToken) return f.createSpreadElement(t);
      return e.initializer ? f.createAssignment(t, e.initializer) : t;
    }),
  );
}

function importToStatements(f: TS.NodeFactory, d: TS.ImportDeclaration, declared: string[]): TS.Statement[] {
  const ts = typescript();
  const spec = (d.moduleSpecifier as TS.StringLiteral).text;
  const load = f.createAwaitExpression(f.createCallExpression(f.createIdentifier(IMPORT_FN), undefined, [f.createStringLiteral(spec)]));
  const clause = d.importClause;
  if (!clause) return [f.createExpressionStatement(load)];
  const mod = f.createUniqueName('mod');
  const out: TS.Statement[] = [f.createVariableStatement(undefined, f.createVariableDeclarationList([f.createVariableDeclaration(mod, undefined, undefined, load)], ts.NodeFlags.Const))];
  const assign = (name: string, value: TS.Expression) => {
    declared.push(name);
    out.push(f.createExpressionStatement(f.createAssignment(f.createIdentifier(name), value)));
  };
  if (clause.name) assign(clause.name.text, f.createPropertyAccessExpression(mod, 'default'));
  const nb = clause.namedBindings;
  if (nb && ts.isNamespaceImport(nb)) assign(nb.name.text, mod);
  if (nb && ts.isNamedImports(nb)) {
    for (const el of nb.elements) assign(el.name.text, f.createElementAccessExpression(mod, f.createStringLiteral((el.propertyName ?? el.name).text)));
  }
  return out;
}

/** Runs after TypeScript erased the types: statements are plain JavaScript. */
function topLevel(declared: string[]): TS.TransformerFactory<TS.SourceFile> {
  const ts = typescript();
  return (ctx) => (sf) => {
    const f = ctx.factory;
    const hoisted: TS.Statement[] = [];
    const body: TS.Statement[] = [];
    for (const s of sf.statements) {
      // The "use strict" prologue the emitter adds is not the cell's last expression (a cell that is just a
      // string, like "servelab", is).
      if (ts.isExpressionStatement(s) && ts.isStringLiteral(s.expression) && s.expression.text === 'use strict') continue;
      if (ts.isImportDeclaration(s)) {
        body.push(...importToStatements(f, s, declared));
      } else if (ts.isVariableStatement(s)) {
        for (const d of s.declarationList.declarations) {
          names(d.name, declared);
          if (!d.initializer) continue;
          const target = toTarget(f, d.name);
          const e = f.createAssignment(target, d.initializer);
          body.push(ts.setTextRange(f.createExpressionStatement(ts.isIdentifier(target) ? e : f.createParenthesizedExpression(e)), d));
        }
      } else if (ts.isFunctionDeclaration(s) && s.name) {
        // Function declarations are hoisted: define them before the rest of the body runs.
        declared.push(s.name.text);
        const fn = f.createFunctionExpression(s.modifiers?.filter((m) => m.kind === ts.SyntaxKind.AsyncKeyword) as TS.Modifier[], s.asteriskToken, s.name, s.typeParameters, s.parameters, s.type, s.body!);
        hoisted.push(ts.setTextRange(f.createExpressionStatement(f.createAssignment(f.createIdentifier(s.name.text), fn)), s));
      } else if (ts.isClassDeclaration(s) && s.name) {
        declared.push(s.name.text);
        const cls = f.createClassExpression(undefined, s.name, s.typeParameters, s.heritageClauses, s.members);
        body.push(ts.setTextRange(f.createExpressionStatement(f.createAssignment(f.createIdentifier(s.name.text), cls)), s));
      } else if (ts.isExportDeclaration(s) || ts.isExportAssignment(s)) {
        continue;
      } else {
        body.push(s);
      }
    }
    const last = body[body.length - 1];
    if (last && ts.isExpressionStatement(last)) body[body.length - 1] = ts.setTextRange(f.createReturnStatement(last.expression), last);
    return f.updateSourceFile(sf, [...hoisted, ...body]);
  };
}

/** An identifier JavaScript allows as a var name (a cell's names become globals). */
const safe = (n: string) => /^[A-Za-z_$][\w$]*$/.test(n);

export function convertCell(code: string, fileName: string): Converted {
  const ts = typescript();
  const declared: string[] = [];
  // verbatimModuleSyntax keeps an import that this cell does not use: a later cell may.
  const out = ts.transpileModule(code, {
    fileName,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, sourceMap: true, removeComments: false, esModuleInterop: true, verbatimModuleSyntax: true },
    transformers: { after: [topLevel(declared)] },
    reportDiagnostics: false,
  });
  const unique = [...new Set(declared)].filter(safe);
  // One line of prefix keeps the cell's lines where they were; the source map covers the rest.
  const prefix = `${unique.length ? `var ${unique.join(', ')}; ` : ''}(async () => {`;
  const js = `${prefix}${out.outputText.replace(/\/\/# sourceMappingURL=.*$/m, '')}\n})()`;
  return { js, map: out.sourceMapText!, declared: unique };
}
