/**
 * Lesson sources (`lessons/NN-slug.md`): front matter, markdown, ```ts cells, ```ts exercise <id> blocks of starter
 * code and the ```ts check <id> blocks that give feedback on them. Parsed into the cells a notebook is built from.
 */
import { basename } from 'node:path';

export interface LessonMeta {
  title: string;
  objectives: string[];
  /** The lecture section the lesson follows. */
  lecture: string;
  estimated_minutes?: number;
}

export type LessonCell =
  | { kind: 'markdown'; source: string; line: number }
  | { kind: 'code'; source: string; line: number }
  | { kind: 'exercise'; id: string; source: string; line: number }
  | { kind: 'check'; id: string; source: string; line: number };

export interface Lesson {
  /** `00-why-serving-is-costly`: the file name without `.md`, and the notebook's name. */
  slug: string;
  file: string;
  meta: LessonMeta;
  cells: LessonCell[];
}

/** A mistake in a lesson source, with the file and 1-based line it is on. */
export class LessonError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | null,
    readonly reason: string,
  ) {
    super(`${file}${line === null ? '' : `:${line}`}: ${reason}`);
    this.name = 'LessonError';
  }
}

export const SLUG = /^\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*$/;
export const ID = /^[A-Za-z][\w-]*$/;
const KEYS = ['title', 'objectives', 'lecture', 'estimated_minutes'] as const;
type Key = (typeof KEYS)[number];
const REQUIRED: readonly Key[] = ['title', 'objectives', 'lecture'];

/** A quoted scalar loses its quotes ('' is a quote inside single quotes, as in YAML); a bare one is taken as it is. */
function scalar(raw: string, err: (m: string) => LessonError): string {
  const v = raw.trim();
  if (v.length >= 2 && v[0] === "'" && v.endsWith("'")) return v.slice(1, -1).replace(/''/g, "'");
  if (v.length >= 2 && v[0] === '"' && v.endsWith('"')) {
    try {
      return JSON.parse(v) as string;
    } catch {
      throw err(`cannot read the double-quoted string ${v}`);
    }
  }
  if (v[0] === "'" || v[0] === '"') throw err(`the string ${v} opens a quote it does not close`);
  return v;
}

/**
 * The front matter is a small YAML subset, on purpose: `key: value` lines, and `objectives:` followed by `- item`
 * lines. Anything else is an error naming its line, so a typo never passes silently as a missing field.
 */
function parseFrontMatter(lines: string[], file: string): { meta: LessonMeta; bodyStart: number } {
  if (lines[0]?.trim() !== '---') {
    throw new LessonError(file, 1, "a lesson starts with front matter: a '---' line, then title, objectives and lecture, then '---'");
  }
  const end = lines.findIndex((l, i) => i > 0 && l.trim() === '---');
  if (end < 0) throw new LessonError(file, 1, "the front matter opened here is never closed by a '---' line");

  const seen = new Map<Key, number>();
  const meta: Partial<Record<Key, unknown>> = {};
  let list: Key | null = null;
  for (let i = 1; i < end; i++) {
    const line = lines[i];
    const n = i + 1;
    const err = (m: string) => new LessonError(file, n, m);
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    const item = /^\s+-\s+(.*)$/.exec(line) ?? /^-\s+(.*)$/.exec(line);
    if (item) {
      if (list === null) throw err(`the list item '${line.trim()}' belongs to no key; write it under 'objectives:'`);
      const v = scalar(item[1], err);
      if (v === '') throw err('an empty objective');
      (meta[list] as string[]).push(v);
      continue;
    }
    if (/^\s/.test(line)) throw err(`an indented line that is not a '- item': keep each value on its key's line`);
    const kv = /^([A-Za-z_][\w-]*)\s*:(.*)$/.exec(line);
    if (!kv) throw err(`expected 'key: value', got '${line.trim()}'`);
    const key = kv[1] as Key;
    if (!KEYS.includes(key)) throw err(`unknown front matter key '${kv[1]}'; the keys are ${KEYS.join(', ')}`);
    if (seen.has(key)) throw err(`'${key}' is given twice (first on line ${seen.get(key)})`);
    seen.set(key, n);
    list = null;
    const raw = kv[2].trim();
    if (key === 'objectives') {
      if (raw !== '') throw err("objectives is a list: leave 'objectives:' alone on its line and write one '- objective' per line below it");
      meta.objectives = [];
      list = 'objectives';
    } else if (key === 'estimated_minutes') {
      const v = scalar(raw, err);
      if (!/^\d+$/.test(v) || Number(v) <= 0) throw err(`estimated_minutes must be a whole number of minutes above 0, got '${raw}'`);
      meta.estimated_minutes = Number(v);
    } else {
      const v = scalar(raw, err);
      if (v === '') throw err(`'${key}' is empty`);
      meta[key] = v;
    }
  }
  for (const key of REQUIRED) {
    if (!seen.has(key)) throw new LessonError(file, end + 1, `the front matter (lines 1-${end + 1}) lacks '${key}'`);
  }
  if ((meta.objectives as string[]).length === 0) {
    throw new LessonError(file, seen.get('objectives')!, "objectives lists nothing: write one '- objective' per line below it");
  }
  return { meta: meta as unknown as LessonMeta, bodyStart: end + 1 };
}

/** The text between two code cells, without its surrounding blank lines; null when nothing is left. */
function markdownCell(lines: string[], start: number): LessonCell | null {
  let a = 0;
  let b = lines.length;
  while (a < b && lines[a].trim() === '') a++;
  while (b > a && lines[b - 1].trim() === '') b--;
  return a === b ? null : { kind: 'markdown', source: lines.slice(a, b).join('\n'), line: start + a };
}

/** The fenced block that line `i` opens, if any: its indent, info words and the index of its closing line. */
export function fenceAt(lines: readonly string[], i: number, file: string): { indent: string; words: string[]; end: number } | null {
  const open = /^( {0,3})(`{3,}|~{3,})(.*)$/.exec(lines[i]);
  if (!open) return null;
  const [, indent, fence, info] = open;
  const close = (l: string) => {
    const m = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(l);
    return m !== null && m[1][0] === fence[0] && m[1].length >= fence.length;
  };
  let j = i + 1;
  while (j < lines.length && !close(lines[j])) j++;
  if (j >= lines.length) throw new LessonError(file, i + 1, `the code block opened here (${fence}${info.trim()}) is never closed`);
  return { indent, words: info.trim().split(/\s+/).filter((w) => w !== ''), end: j };
}

/** A ```ts block's code, without leading blank lines and trailing space. */
export function blockSource(lines: readonly string[], open: number, end: number): string {
  return lines.slice(open + 1, end).join('\n').replace(/^\s*\n/, '').trimEnd();
}

/**
 * The body: ```ts fences at the start of a line become code cells; every other fence (```sh, an indented ```ts
 * inside a list, a four-backtick block quoting a lesson) stays markdown, and its contents are never read as cells.
 */
function parseBody(lines: string[], bodyStart: number, file: string): LessonCell[] {
  const cells: LessonCell[] = [];
  const exercises = new Map<string, number>();
  const checks = new Map<string, number>();
  let prose: string[] = [];
  let proseStart = bodyStart + 1;
  const flush = () => {
    const c = markdownCell(prose, proseStart);
    if (c) cells.push(c);
    prose = [];
  };

  let i = bodyStart;
  while (i < lines.length) {
    const line = lines[i];
    const block = fenceAt(lines, i, file);
    if (!block) {
      if (prose.length === 0) proseStart = i + 1;
      prose.push(line);
      i++;
      continue;
    }
    const { indent, words, end: j } = block;
    const n = i + 1;
    const lang = words[0]?.toLowerCase();
    if (indent !== '' || (lang !== 'ts' && lang !== 'typescript')) {
      if (prose.length === 0) proseStart = i + 1;
      prose.push(...lines.slice(i, j + 1));
      i = j + 1;
      continue;
    }

    const err = (m: string) => new LessonError(file, n, m);
    const source = blockSource(lines, i, j);
    if (source.trim() === '') throw err('an empty ```ts block: a code cell needs code');
    const [, kind, id, ...extra] = words;
    let cell: LessonCell;
    if (kind === undefined) {
      cell = { kind: 'code', source, line: n };
    } else if (kind === 'exercise' || kind === 'check') {
      if (id === undefined) throw err(`\`\`\`ts ${kind} needs an id: \`\`\`ts ${kind} <id>, the ${kind === 'check' ? "id of the exercise it checks" : 'id its check refers to'}`);
      if (!ID.test(id)) throw err(`'${id}' is not a valid ${kind} id: a letter, then letters, digits, '_' or '-'`);
      if (extra.length) throw err(`unexpected '${extra.join(' ')}' after \`\`\`ts ${kind} ${id}`);
      if (kind === 'exercise') {
        if (exercises.has(id)) throw err(`exercise '${id}' is defined twice (first on line ${exercises.get(id)})`);
        exercises.set(id, n);
        cell = { kind: 'exercise', id, source, line: n };
      } else {
        if (!exercises.has(id)) throw err(`check '${id}' checks no exercise: a \`\`\`ts exercise ${id} block must come before it`);
        if (checks.has(id)) throw err(`exercise '${id}' already has a check (line ${checks.get(id)})`);
        checks.set(id, n);
        cell = { kind: 'check', id, source, line: n };
      }
    } else {
      throw err(`unknown kind of ts block '${kind}': write \`\`\`ts, \`\`\`ts exercise <id> or \`\`\`ts check <id>`);
    }
    flush();
    cells.push(cell);
    i = j + 1;
    proseStart = i + 1;
  }
  flush();
  return cells;
}

/** Parses a lesson's text; `file` names it in errors, and its base name (without .md) is the slug. */
export function parseLesson(text: string, file: string): Lesson {
  const slug = basename(file).replace(/\.md$/, '');
  if (!SLUG.test(slug)) throw new LessonError(file, null, `a lesson file is named NN-slug.md (two digits, then lowercase words joined by '-'), got '${basename(file)}'`);
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const { meta, bodyStart } = parseFrontMatter(lines, file);
  const cells = parseBody(lines, bodyStart, file);
  if (!cells.some((c) => c.kind !== 'markdown')) throw new LessonError(file, null, 'the lesson has no ```ts cell');
  return { slug, file, meta, cells };
}
