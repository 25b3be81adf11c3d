/**
 * Lesson -> notebook (nbformat 4.5). Deterministic: cell ids come from the slug and the cell's index, keys are
 * sorted and nothing records a time, so rebuilding an unchanged lesson gives the same bytes.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseLesson, SLUG, type Lesson, type LessonCell } from './parse.ts';

export const KERNELSPEC = { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' } as const;
export const LANGUAGE_INFO = { name: 'typescript', file_extension: '.ts' } as const;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface NotebookCell {
  cell_type: 'markdown' | 'code';
  id: string;
  metadata: { [k: string]: Json };
  source: string[];
  execution_count?: null;
  outputs?: Json[];
}

export interface Notebook {
  cells: NotebookCell[];
  metadata: { [k: string]: Json };
  nbformat: 4;
  nbformat_minor: 5;
}

/** nbformat 4.5 ids: 1-64 of [A-Za-z0-9-_], unique in the notebook. A hash keeps them short for any slug. */
export function cellId(slug: string, index: number): string {
  return createHash('sha256').update(`${slug}/${index}`).digest('hex').slice(0, 12);
}

/** Jupyter stores source as lines, each but the last keeping its newline. */
function sourceLines(text: string): string[] {
  return text === '' ? [] : text.split('\n').map((l, i, all) => (i < all.length - 1 ? `${l}\n` : l));
}

function titleCell(lesson: Lesson): string {
  const { title, objectives, lecture, estimated_minutes } = lesson.meta;
  const time = estimated_minutes === undefined ? '' : ` About ${estimated_minutes} minutes.`;
  return [
    `# ${title}`,
    '',
    `*Follows the lecture: ${lecture}.*${time}`,
    '',
    '**Objectives**',
    '',
    ...objectives.map((o) => `- ${o}`),
    '',
    `<sub>Generated from \`lessons/${lesson.slug}.md\` by \`servelab build\`: edit the lesson, not this notebook.</sub>`,
  ].join('\n');
}

function cellMetadata(c: LessonCell): { [k: string]: Json } {
  if (c.kind === 'exercise') return { servelab: { exercise: c.id }, tags: ['exercise'] };
  // The check holds the answer it compares with: folded away in frontends that honour source_hidden.
  if (c.kind === 'check') return { jupyter: { source_hidden: true }, servelab: { check: c.id }, tags: ['check'] };
  return {};
}

export function notebookOf(lesson: Lesson): Notebook {
  const all: { kind: LessonCell['kind']; source: string; metadata: { [k: string]: Json } }[] = [
    { kind: 'markdown', source: titleCell(lesson), metadata: {} },
    ...lesson.cells.map((c) => ({ kind: c.kind, source: c.source, metadata: cellMetadata(c) })),
  ];
  const cells = all.map((c, i): NotebookCell => {
    const id = cellId(lesson.slug, i);
    if (c.kind === 'markdown') return { cell_type: 'markdown', id, metadata: c.metadata, source: sourceLines(c.source) };
    return { cell_type: 'code', execution_count: null, id, metadata: c.metadata, outputs: [], source: sourceLines(c.source) };
  });
  const { meta } = lesson;
  const servelab: { [k: string]: Json } = { lesson: lesson.slug, source: `lessons/${lesson.slug}.md`, title: meta.title, objectives: meta.objectives, lecture: meta.lecture };
  if (meta.estimated_minutes !== undefined) servelab.estimated_minutes = meta.estimated_minutes;
  return { cells, metadata: { kernelspec: { ...KERNELSPEC }, language_info: { ...LANGUAGE_INFO }, servelab }, nbformat: 4, nbformat_minor: 5 };
}

/** The notebook a lesson file builds, in memory (what `servelab report` runs for a .md). */
export function lessonNotebook(path: string): Notebook {
  return notebookOf(parseLesson(readFileSync(path, 'utf8'), path));
}

/** Keys sorted at every level, as Jupyter itself writes notebooks (indent 1), so a save there changes little. */
function sorted(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sorted);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted((v as Record<string, unknown>)[k])]));
  }
  return v;
}

export function notebookJson(lesson: Lesson): string {
  return JSON.stringify(sorted(notebookOf(lesson)), null, 1) + '\n';
}

export interface BuildOutput {
  lesson: string;
  notebook: string;
  json: string;
}

/** Every lessons/NN-slug.md under root, in order, relative to root: not README.md, not NN-slug.solutions.md. */
export function lessonFiles(root: string): string[] {
  const dir = join(root, 'lessons');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.md') && SLUG.test(f.slice(0, -3)))
    .sort()
    .map((f) => `lessons/${f}`);
}

/** Every lesson under root, in order, with the notebook it builds; parse errors are thrown. */
export function planBuild(root: string): BuildOutput[] {
  return lessonFiles(root).map((rel) => {
    const lesson = parseLesson(readFileSync(join(root, rel), 'utf8'), rel);
    return { lesson: rel, notebook: `notebooks/${lesson.slug}.ipynb`, json: notebookJson(lesson) };
  });
}

export interface BuildStatus {
  /** Notebooks whose bytes differ from what their lesson builds. */
  stale: string[];
  /** Lessons without a notebook. */
  missing: string[];
  /** notebooks/NN-slug.ipynb without a lesson: left over from a renamed or deleted lesson. */
  orphans: string[];
  upToDate: string[];
}

/** Compares what the lessons build with notebooks/ on disk, in memory: nothing is written. */
export function buildStatus(root: string, plan = planBuild(root)): BuildStatus {
  const s: BuildStatus = { stale: [], missing: [], orphans: [], upToDate: [] };
  for (const o of plan) {
    const path = join(root, o.notebook);
    if (!existsSync(path)) s.missing.push(o.notebook);
    else if (readFileSync(path, 'utf8') !== o.json) s.stale.push(o.notebook);
    else s.upToDate.push(o.notebook);
  }
  const built = new Set(plan.map((o) => o.notebook));
  const nbDir = join(root, 'notebooks');
  if (existsSync(nbDir)) {
    for (const f of readdirSync(nbDir).sort()) {
      if (f.endsWith('.ipynb') && SLUG.test(f.slice(0, -6)) && !built.has(`notebooks/${f}`)) s.orphans.push(`notebooks/${f}`);
    }
  }
  return s;
}

/** Writes the notebooks that changed; returns the paths written. */
export function writeNotebooks(root: string, plan = planBuild(root)): string[] {
  const written: string[] = [];
  mkdirSync(join(root, 'notebooks'), { recursive: true });
  for (const o of plan) {
    const path = join(root, o.notebook);
    if (existsSync(path) && readFileSync(path, 'utf8') === o.json) continue;
    writeFileSync(path, o.json);
    written.push(o.notebook);
  }
  return written;
}
