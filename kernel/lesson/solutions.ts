/**
 * Reference solutions (`lessons/NN-slug.solutions.md`): one ```ts solution <id> block per exercise of the lesson.
 * `servelab report --solutions` runs them in place of the exercises' starter code, so that an instructor can publish
 * a complete report; `servelab build` never puts them in a notebook, where the learner would read them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { blockSource, fenceAt, ID, LessonError, parseLesson } from './parse.ts';

export interface Solution {
  id: string;
  source: string;
  /** The 1-based line of its opening fence. */
  line: number;
}

export interface Solutions {
  file: string;
  byId: Map<string, Solution>;
}

/** `lessons/02-int8.md` -> `lessons/02-int8.solutions.md`. */
export function solutionsPath(lessonPath: string): string {
  return lessonPath.replace(/\.md$/, '.solutions.md');
}

/**
 * Prose and non-TypeScript blocks are notes for instructors and are skipped; every ```ts block must be a solution,
 * so that a solution written as a plain ```ts block (which would never run) is an error naming its line.
 */
export function parseSolutions(text: string, file: string): Solutions {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const byId = new Map<string, Solution>();
  for (let i = 0; i < lines.length; i++) {
    const block = fenceAt(lines, i, file);
    if (!block) continue;
    const { indent, words, end } = block;
    const lang = words[0]?.toLowerCase();
    if (indent === '' && (lang === 'ts' || lang === 'typescript')) {
      const err = (m: string) => new LessonError(file, i + 1, m);
      const [, kind, id, ...extra] = words;
      if (kind !== 'solution') throw err(`a solutions file holds only \`\`\`ts solution <id> blocks, got \`\`\`${words.join(' ')}`);
      if (id === undefined) throw err('```ts solution needs the id of the exercise it solves: ```ts solution <id>');
      if (!ID.test(id)) throw err(`'${id}' is not a valid exercise id: a letter, then letters, digits, '_' or '-'`);
      if (extra.length) throw err(`unexpected '${extra.join(' ')}' after \`\`\`ts solution ${id}`);
      if (byId.has(id)) throw err(`exercise '${id}' has two solutions (the first on line ${byId.get(id)!.line})`);
      const source = blockSource(lines, i, end);
      if (source.trim() === '') throw err(`the solution of '${id}' is empty`);
      byId.set(id, { id, source, line: i + 1 });
    }
    i = end;
  }
  return { file, byId };
}

/** The solutions beside a lesson, or null when it has no solutions file. */
export function readSolutions(lessonPath: string): Solutions | null {
  const path = solutionsPath(lessonPath);
  return existsSync(path) ? parseSolutions(readFileSync(path, 'utf8'), path) : null;
}

interface CellLike {
  cell_type: string;
  metadata: Record<string, unknown>;
  source: string | string[];
}

export interface Substituted<N> {
  notebook: N;
  /** Exercise ids whose starter code was replaced, in notebook order. */
  solved: string[];
  /** Exercise ids without a solution: their starter code stays. */
  missing: string[];
  /** Solutions that match no exercise of the notebook (a renamed exercise, a typo). */
  unknown: Solution[];
}

export const exerciseIdOf = (c: CellLike): string | undefined => (c.metadata.servelab as { exercise?: string } | undefined)?.exercise;

/** A copy of `nb` whose exercise cells hold their reference solutions, with what was and was not replaced. */
export function withSolutions<N extends { cells: CellLike[] }>(nb: N, solutions: Solutions | null): Substituted<N> {
  const notebook = structuredClone(nb);
  const solved: string[] = [];
  const missing: string[] = [];
  for (const cell of notebook.cells) {
    const id = cell.cell_type === 'code' ? exerciseIdOf(cell) : undefined;
    if (id === undefined) continue;
    const s = solutions?.byId.get(id);
    if (!s) {
      missing.push(id);
      continue;
    }
    // Kept as one string: both nbformat's forms are valid, and the report joins lists anyway.
    cell.source = s.source;
    cell.metadata = { ...cell.metadata, servelab: { ...(cell.metadata.servelab as object), solution: true } };
    solved.push(id);
  }
  const ids = new Set([...solved, ...missing]);
  const unknown = [...(solutions?.byId.values() ?? [])].filter((s) => !ids.has(s.id));
  return { notebook, solved, missing, unknown };
}

/**
 * What `servelab build` warns about, one line each: a solutions file that does not parse, or a solution whose
 * exercise is gone (renamed or deleted). A missing solution is not among them: a lesson in progress may lack one.
 */
export function solutionWarnings(root: string, lessons: readonly string[]): string[] {
  const warnings: string[] = [];
  for (const rel of lessons) {
    const file = solutionsPath(rel);
    if (!existsSync(join(root, file))) continue;
    let solutions: Solutions;
    try {
      solutions = parseSolutions(readFileSync(join(root, file), 'utf8'), file);
    } catch (e) {
      if (!(e instanceof LessonError)) throw e;
      warnings.push(e.message);
      continue;
    }
    const exercises = new Set(parseLesson(readFileSync(join(root, rel), 'utf8'), rel).cells.flatMap((c) => (c.kind === 'exercise' ? [c.id] : [])));
    for (const s of solutions.byId.values()) {
      if (!exercises.has(s.id)) warnings.push(`${file}:${s.line}: solution '${s.id}' matches no exercise of ${rel}`);
    }
  }
  return warnings;
}
