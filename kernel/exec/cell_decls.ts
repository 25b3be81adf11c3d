/**
 * What a cell leaves to later cells, read from its syntax: the names it declares (values with the keyword later
 * cells see them under, types with their type parameters), its imports as one statement per local name, the cell
 * with every declaration exported, and the declarations through which the checker's program shows those names to
 * later cells as globals, as a REPL's "everything is global" would (typecheck.ts).
 */
import { parseSync } from 'oxc-parser';

type Node = { type: string; start: number; end: number; [k: string]: unknown };

/** A type a cell declares: its type parameters as written (`<T extends X = Y>`) and as arguments (`<T>`). */
export interface DeclaredType {
  params: string;
  args: string;
}

export interface TopLevel {
  /** Values by name, with the keyword of their global: functions, classes and enums are reassignable globals. */
  values: Map<string, 'const' | 'let' | 'var'>;
  /** Types by name: interfaces, type aliases, classes and enums. */
  types: Map<string, DeclaredType>;
  /** Every name declared, values and types. */
  declared: Set<string>;
  /** Import statements, one per local name. */
  imports: Map<string, string>;
}

const DECLARATIONS = new Set(['VariableDeclaration', 'FunctionDeclaration', 'TSDeclareFunction', 'ClassDeclaration', 'TSInterfaceDeclaration', 'TSTypeAliasDeclaration', 'TSEnumDeclaration']);

function statements(code: string): Node[] {
  return parseSync('cell.ts', code).program.body as unknown as Node[];
}

function bindingNames(n: Node | null, out: string[]): void {
  if (!n) return;
  if (n.type === 'Identifier') out.push(n.name as string);
  else if (n.type === 'ObjectPattern') for (const p of n.properties as Node[]) bindingNames(p.type === 'RestElement' ? (p.argument as Node) : (p.value as Node), out);
  else if (n.type === 'ArrayPattern') for (const e of n.elements as (Node | null)[]) bindingNames(e?.type === 'RestElement' ? (e.argument as Node) : e, out);
  else if (n.type === 'AssignmentPattern') bindingNames(n.left as Node, out);
  else if (n.type === 'RestElement') bindingNames(n.argument as Node, out);
}

function typeParameters(code: string, d: Node): DeclaredType {
  const params = (d.typeParameters as { params: Node[] } | null)?.params ?? [];
  if (params.length === 0) return { params: '', args: '' };
  return { params: `<${params.map((p) => code.slice(p.start, p.end)).join(', ')}>`, args: `<${params.map((p) => (p.name as Node).name).join(', ')}>` };
}

/** Top-level names a cell declares, and its imports as one statement per local name. */
export function topLevelNames(code: string): TopLevel {
  const values = new Map<string, 'const' | 'let' | 'var'>();
  const types = new Map<string, DeclaredType>();
  const imports = new Map<string, string>();
  for (const s of statements(code)) {
    if (s.type === 'ImportDeclaration') {
      const from = code.slice((s.source as Node).start, (s.source as Node).end);
      const type = s.importKind === 'type' ? 'type ' : '';
      for (const sp of (s.specifiers as Node[]) ?? []) {
        const local = (sp.local as Node).name as string;
        if (sp.type === 'ImportDefaultSpecifier') imports.set(local, `import ${type}${local} from ${from};`);
        else if (sp.type === 'ImportNamespaceSpecifier') imports.set(local, `import ${type}* as ${local} from ${from};`);
        else imports.set(local, `import ${type}{ ${code.slice(sp.start, sp.end)} } from ${from};`);
      }
      continue;
    }
    const d = s.type === 'ExportNamedDeclaration' ? (s.declaration as Node | null) : s;
    if (!d) continue;
    const name = (d.id as Node | null)?.name as string | undefined;
    if (d.type === 'VariableDeclaration') {
      // `using` bindings are the cell's own: disposed when it ends, never seen by later cells.
      if (d.kind !== 'var' && d.kind !== 'let' && d.kind !== 'const') continue;
      const kind = d.kind === 'const' ? 'const' : d.kind === 'let' ? 'let' : 'var';
      const names: string[] = [];
      for (const v of d.declarations as Node[]) bindingNames(v.id as Node, names);
      for (const n of names) values.set(n, kind);
    } else if (!name) continue;
    else if (d.type === 'FunctionDeclaration' || d.type === 'TSDeclareFunction') values.set(name, 'var');
    else if (d.type === 'ClassDeclaration' || d.type === 'TSEnumDeclaration') {
      values.set(name, 'var');
      types.set(name, typeParameters(code, d));
    } else if (d.type === 'TSInterfaceDeclaration' || d.type === 'TSTypeAliasDeclaration') types.set(name, typeParameters(code, d));
  }
  return { values, types, declared: new Set([...values.keys(), ...types.keys()]), imports };
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
  // A decorated class is exported before its decorators, which the parser counts as part of the statement.
  const inserts = statements(code)
    .filter((s) => DECLARATIONS.has(s.type) && !(s.type === 'VariableDeclaration' && s.kind !== 'var' && s.kind !== 'let' && s.kind !== 'const'))
    .map((s) => s.start);
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

/** The global namespace in which the cell module in slot `slot` keeps the types of all its names. */
const namespace = (slot: number) => `__servelab_cell${slot}`;

/**
 * How the cell module in slot `slot` shows its names to the cells after it, appended to the module: for each name,
 * a module-level alias of its inferred type (inside `declare global` the name itself would mean the global being
 * declared); a global namespace with all of them, which a later cell's module names to keep the types it saw
 * (`shadows`); and the global declarations of its still-live names.
 */
export function augmentation(slot: number, top: Pick<TopLevel, 'values' | 'types'>, live: Set<string>): string {
  const ns = namespace(slot);
  const aliases: string[] = [];
  const members: string[] = [];
  const globals: string[] = [];
  for (const [n, kind] of top.values) {
    aliases.push(`type ${ALIAS}v_${n} = typeof ${n};`);
    members.push(`export type v_${n} = ${ALIAS}v_${n};`);
    if (live.has(n)) globals.push(`${kind} ${n}: ${ns}.v_${n};`);
  }
  for (const [n, t] of top.types) {
    aliases.push(`type ${ALIAS}t_${n}${t.params} = ${n}${t.args};`);
    members.push(`export type t_${n}${t.params} = ${ALIAS}t_${n}${t.args};`);
    if (live.has(n)) globals.push(`type ${n}${t.params} = ${ns}.t_${n}${t.args};`);
  }
  return `${aliases.join('\n')}\ndeclare global {\nnamespace ${ns} {\n${members.join('\n')}\n}\n${globals.join('\n')}\n}\n`;
}

/**
 * Module-level declarations that keep, in a later cell's module, the type an earlier name `n` had when that cell
 * ran (`slot`: where the earlier cell's module is): a global declared again later would otherwise change it.
 */
export function shadow(slot: number, top: Pick<TopLevel, 'values' | 'types'>, n: string): string[] {
  const ns = namespace(slot);
  const out: string[] = [];
  if (top.values.has(n)) out.push(`declare const ${n}: ${ns}.v_${n};`);
  const t = top.types.get(n);
  if (t) out.push(`type ${n}${t.params} = ${ns}.t_${n}${t.args};`);
  return out;
}

const ALIAS = '__servelab_';
