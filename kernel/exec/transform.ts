/**
 * A TypeScript cell -> a script that runs in the kernel's global scope: top-level declarations become globals
 * (so later cells see them and may redeclare them), imports become dynamic imports, the body runs inside an async
 * function (top-level await), and the last expression is returned as the cell's result.
 *
 * oxc-transform erases the types and lowers what Node 20 cannot run (`using` declarations, to a try block around
 * the cell's statements); the JavaScript it prints is then parsed again and its top-level statements are rewritten
 * in place with magic-string, so that everything the rewrite leaves alone keeps its position.
 */
import { transformSync, type HelperMode, type OxcError } from 'oxc-transform';
import { parseSync, type BindingPattern, type Class as ClassNode, type Declaration, type Function as FunctionNode, type ImportDeclaration } from 'oxc-parser';
import MagicString from 'magic-string';
import { composeMaps, lineStarts } from './compose_map.ts';

export interface Converted {
  /** The script to run; evaluates to a Promise of the cell's last expression (undefined if none). */
  js: string;
  /** Source map from js back to the cell's own lines, for tracebacks. */
  map: string;
  /** Names the cell declares at top level (values only; types are erased). */
  declared: string[];
  /** Runtime helpers the lowered syntax calls (`usingCtx` for `using`), as globalThis.babelHelpers must hold them. */
  helpers: string[];
}

export const IMPORT_FN = '__servelab_import';

/** The names a binding pattern binds, in order. */
function names(p: BindingPattern, out: string[]): void {
  switch (p.type) {
    case 'Identifier':
      out.push(p.name);
      break;
    case 'ObjectPattern':
      for (const prop of p.properties) names(prop.type === 'RestElement' ? prop.argument : prop.value, out);
      break;
    case 'ArrayPattern':
      for (const e of p.elements) if (e) names(e.type === 'RestElement' ? e.argument : e, out);
      break;
    case 'AssignmentPattern':
      names(p.left, out);
      break;
  }
}

/**
 * `import d, { a as b } from 'm'` -> `({ default: d, "a": b } = await __servelab_import("m"));`: the bindings are
 * assigned to globals, without a temporary. A namespace import assigns the module itself first.
 */
function importStatement(d: ImportDeclaration, declared: string[]): string {
  const load = `await ${IMPORT_FN}(${JSON.stringify(d.source.value)})`;
  if (d.specifiers.length === 0) return `${load};`;
  let ns = '';
  const props: string[] = [];
  for (const s of d.specifiers) {
    declared.push(s.local.name);
    if (s.type === 'ImportNamespaceSpecifier') ns = s.local.name;
    else if (s.type === 'ImportDefaultSpecifier') props.push(`default: ${s.local.name}`);
    else props.push(`${JSON.stringify(s.imported.type === 'Identifier' ? s.imported.name : s.imported.value)}: ${s.local.name}`);
  }
  if (!props.length) return `${ns} = ${load};`;
  return `({ ${props.join(', ')} } = ${ns ? `${ns} = ` : ''}${load});`;
}

/** A parse error -> a SyntaxError naming where it is in the cell (1-based line and column). */
function syntaxError(code: string, fileName: string, e: OxcError): SyntaxError {
  const at = e.labels[0]?.start ?? 0;
  const starts = lineStarts(code);
  let line = 0;
  while (line + 1 < starts.length && starts[line + 1] <= at) line++;
  return new SyntaxError(`${e.message} (${fileName} line ${line + 1}, column ${at - starts[line] + 1})`);
}

/**
 * A top-level declaration (its `export` already removed) -> assignments to globals, in place. Returns false for a
 * function declaration, which moves to the top of the cell: declarations are hoisted, so a cell may call a function
 * it defines further down.
 */
function declare(s: MagicString, d: Declaration | FunctionNode | ClassNode, declared: string[]): boolean {
  if (d.type === 'VariableDeclaration') {
    // `using` has no assignment form: it stays local to the cell.
    if (d.kind !== 'var' && d.kind !== 'let' && d.kind !== 'const') return true;
    const decls = d.declarations;
    s.remove(d.start, decls[0].start);
    decls.forEach((v, i) => {
      names(v.id, declared);
      // A declaration without initializer only declares: the prefix's `var` does that.
      if (!v.init) s.remove(v.start, v.end);
      // A pattern stays a pattern: `const {a, b: [c]} = o` -> `({a, b: [c]} = o)`.
      else if (v.id.type !== 'Identifier') s.prependRight(v.start, '(').appendLeft(v.end, ')');
      if (i + 1 < decls.length) s.overwrite(v.end, decls[i + 1].start, '; ', { contentOnly: true });
    });
  } else if (d.type === 'FunctionDeclaration' && d.id) {
    declared.push(d.id.name);
    s.prependRight(d.start, `${d.id.name} = `).appendLeft(d.end, ';');
    if (d.start > 0) s.move(d.start, d.end, 0);
    return false;
  } else if (d.type === 'ClassDeclaration' && d.id) {
    declared.push(d.id.name);
    s.prependRight(d.start, `${d.id.name} = `).appendLeft(d.end, ';');
  }
  return true;
}

/** An identifier JavaScript allows as a var name (a cell's names become globals). */
const safe = (n: string) => /^[A-Za-z_$][\w$]*$/.test(n);

export function convertCell(code: string, fileName: string): Converted {
  // onlyRemoveTypeImports keeps an import that this cell does not use: a later cell may.
  const erased = transformSync(fileName, code, { lang: 'ts', sourceType: 'module', sourcemap: true, target: 'es2022', helpers: { mode: 'External' as HelperMode }, typescript: { onlyRemoveTypeImports: true } });
  const err = erased.errors.find((e) => (e.severity as string) === 'Error');
  if (err) throw syntaxError(code, fileName, err);
  const src = erased.code;
  const { program } = parseSync('cell.js', src, { lang: 'js', sourceType: 'module' });

  const s = new MagicString(src);
  const declared: string[] = [];
  /** The last statement that runs where it stands (hoisted functions and dropped exports do not). */
  let last: (typeof program.body)[number] | null = null;
  for (const st of topLevel(program.body)) {
    let inPlace = true;
    if (st.type === 'ImportDeclaration') {
      s.overwrite(st.start, st.end, importStatement(st, declared));
    } else if (st.type === 'ExportNamedDeclaration' && st.declaration) {
      s.remove(st.start, st.declaration.start);
      inPlace = declare(s, st.declaration, declared);
    } else if (st.type === 'ExportDefaultDeclaration' && (st.declaration.type === 'FunctionDeclaration' || st.declaration.type === 'ClassDeclaration') && st.declaration.id) {
      s.remove(st.start, st.declaration.start);
      inPlace = declare(s, st.declaration, declared);
    } else if (st.type === 'ExportNamedDeclaration' || st.type === 'ExportDefaultDeclaration' || st.type === 'ExportAllDeclaration') {
      // `export { a }`, `export * from 'm'` and `export default <expression>` have nothing to run in a notebook.
      s.remove(st.start, st.end);
      inPlace = false;
    } else if (st.type === 'VariableDeclaration' || st.type === 'FunctionDeclaration' || st.type === 'ClassDeclaration') {
      inPlace = declare(s, st, declared);
    }
    if (inPlace) last = st;
  }
  // A cell that is only a string ("servelab") returns it: the directive is the cell's value.
  if (last?.type === 'ExpressionStatement') s.prependRight(last.start, 'return ');

  const unique = [...new Set(declared)].filter(safe);
  // One line of prefix keeps the cell's lines where they were; the source map covers the rest.
  s.prepend(`${unique.length ? `var ${unique.join(', ')}; ` : ''}(async () => {`).append('\n})()');
  return { js: s.toString(), map: composeMaps(s, src, erased.map!, fileName), declared: unique, helpers: Object.keys(erased.helpersUsed ?? {}) };
}

type Statement = ReturnType<typeof parseSync>['program']['body'][number];

/**
 * The cell's top-level statements. Lowered `using` declarations put the cell's statements in a try block whose first
 * statement makes the disposal context (`var _usingCtx = babelHelpers.usingCtx()`): those are the cell's, less the
 * context and the `using` bindings themselves, which stay local to the cell as the checker has them.
 */
function topLevel(body: Statement[]): Statement[] {
  return body.flatMap((st) => {
    if (st.type !== 'TryStatement') return [st];
    const [first, ...rest] = st.block.body;
    const ctx = first?.type === 'VariableDeclaration' && first.declarations[0]?.init?.type === 'CallExpression' && first.declarations[0].init.callee.type === 'MemberExpression' && first.declarations[0].init.callee.object.type === 'Identifier' && first.declarations[0].init.callee.object.name === 'babelHelpers' && first.declarations[0].id.type === 'Identifier' ? first.declarations[0].id.name : null;
    if (!ctx) return [st];
    const usesCtx = (d: Statement) => d.type === 'VariableDeclaration' && d.declarations.every((v) => v.init?.type === 'CallExpression' && v.init.callee.type === 'MemberExpression' && v.init.callee.object.type === 'Identifier' && v.init.callee.object.name === ctx);
    return rest.filter((d) => !usesCtx(d));
  });
}
