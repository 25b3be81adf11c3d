/** Reference solutions: the solutions file format, their substitution for starter code, and the committed lessons' coverage. */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lessonFiles, notebookOf, planBuild } from '../../../kernel/lesson/build.ts';
import { parseLesson } from '../../../kernel/lesson/parse.ts';
import { parseSolutions, readSolutions, solutionsPath, solutionWarnings, withSolutions } from '../../../kernel/lesson/solutions.ts';

const ROOT = resolve(import.meta.dirname, '..', '..', '..');

const LESSON = [
  '---',
  'title: Demo lesson',
  'objectives:',
  '  - Double a number',
  'lecture: Background',
  '---',
  '',
  '```ts',
  'const a = 21;',
  '```',
  '',
  '```ts exercise double',
  'const twice = NaN; // TODO',
  '```',
  '',
  '```ts check double',
  "check('twice', twice, 2 * a);",
  '```',
  '',
  '```ts exercise triple',
  'const thrice = NaN; // TODO',
  '```',
].join('\n');

const SOLUTIONS = [
  '# Reference solutions: demo',
  '',
  'Notes for instructors, and a shell block that is not run:',
  '',
  '```sh',
  'servelab report --solutions lessons/03-demo.md',
  '```',
  '',
  '```ts solution double',
  '',
  'const twice = 2 * a;',
  '```',
  '',
  '```ts solution gone',
  'const old = 1;',
  '```',
].join('\n');

describe('a solutions file', () => {
  it('holds ```ts solution <id> blocks; prose and other languages are notes', () => {
    const s = parseSolutions(SOLUTIONS, 'lessons/03-demo.solutions.md');
    expect([...s.byId.keys()]).toEqual(['double', 'gone']);
    expect(s.byId.get('double')).toEqual({ id: 'double', source: 'const twice = 2 * a;', line: 9 });
    expect(solutionsPath('lessons/03-demo.md')).toBe('lessons/03-demo.solutions.md');
  });

  it('rejects, naming file and line, a plain ts block, a missing or bad id, a second solution, an empty one, an unclosed fence', () => {
    const bad = (text: string) => () => parseSolutions(text, 'lessons/03-demo.solutions.md');
    expect(bad('prose\n\n```ts\nconst x = 1;\n```')).toThrow(/^lessons\/03-demo\.solutions\.md:3: a solutions file holds only ```ts solution <id> blocks, got ```ts$/);
    expect(bad('```ts exercise double\nx\n```')).toThrow(/:1: a solutions file holds only .*got ```ts exercise double/);
    expect(bad('```ts solution\nx\n```')).toThrow(/:1: ```ts solution needs the id/);
    expect(bad('```ts solution 2x\nx\n```')).toThrow(/:1: '2x' is not a valid exercise id/);
    expect(bad('```ts solution a b\nx\n```')).toThrow(/:1: unexpected 'b' after ```ts solution a/);
    expect(bad('```ts solution a\nx\n```\n\n```ts solution a\ny\n```')).toThrow(/:5: exercise 'a' has two solutions \(the first on line 1\)/);
    expect(bad('```ts solution a\n\n```')).toThrow(/:1: the solution of 'a' is empty/);
    expect(bad('text\n```ts solution a\nx')).toThrow(/:2: the code block opened here \(```ts solution a\) is never closed/);
  });
});

describe('substituting solutions for starter code', () => {
  const nb = notebookOf(parseLesson(LESSON, 'lessons/03-demo.md'));
  const sub = withSolutions(nb, parseSolutions(SOLUTIONS, 'lessons/03-demo.solutions.md'));

  it('replaces each solved exercise cell, keeps the rest, and names what is missing or matches nothing', () => {
    expect(sub.solved).toEqual(['double']);
    expect(sub.missing).toEqual(['triple']);
    expect(sub.unknown.map((s) => [s.id, s.line])).toEqual([['gone', 14]]);
    const code = sub.notebook.cells.filter((c) => c.cell_type === 'code').map((c) => (Array.isArray(c.source) ? c.source.join('') : c.source));
    expect(code).toEqual(['const a = 21;', 'const twice = 2 * a;', "check('twice', twice, 2 * a);", 'const thrice = NaN; // TODO']);
    expect(sub.notebook.cells[2].metadata).toEqual({ servelab: { exercise: 'double', solution: true }, tags: ['exercise'] });
    // The input is untouched: the learner's notebook never holds a solution.
    expect(nb.cells[2].source).toEqual(['const twice = NaN; // TODO']);
  });

  it('without a solutions file every exercise is missing and nothing changes', () => {
    const none = withSolutions(nb, null);
    expect(none.missing).toEqual(['double', 'triple']);
    expect(none.notebook).toEqual(nb);
  });
});

describe('the committed lessons', () => {
  const lessons = lessonFiles(ROOT);

  it('are listed without their solutions files', () => {
    expect(lessons.length).toBeGreaterThanOrEqual(3);
    for (const l of lessons) expect(l).toMatch(/^lessons\/\d\d-[a-z0-9-]+\.md$/);
  });

  it('have a reference solution for every exercise, and none for an exercise that is gone (lessons/README.md)', () => {
    for (const rel of lessons) {
      const lesson = parseLesson(readFileSync(join(ROOT, rel), 'utf8'), rel);
      const exercises = lesson.cells.flatMap((c) => (c.kind === 'exercise' ? [c.id] : []));
      if (exercises.length === 0) continue;
      const solutions = readSolutions(join(ROOT, rel));
      expect(solutions, `${solutionsPath(rel)} exists`).not.toBeNull();
      const sub = withSolutions(notebookOf(lesson), solutions);
      expect(sub.missing, `exercises of ${rel} without a \`\`\`ts solution block in ${solutionsPath(rel)}`).toEqual([]);
      expect(sub.unknown.map((s) => s.id), `solutions in ${solutionsPath(rel)} that match no exercise`).toEqual([]);
    }
    expect(solutionWarnings(ROOT, lessons)).toEqual([]);
  });

  it('never put a solution in a notebook', () => {
    const built = planBuild(ROOT);
    for (const rel of lessons) {
      const solutions = readSolutions(join(ROOT, rel));
      const cells = (JSON.parse(built.find((b) => b.lesson === rel)!.json) as { cells: { source: string[] }[] }).cells;
      const notebookLines = new Set(cells.flatMap((c) => c.source.join('').split('\n').map((l) => l.trim())));
      const lessonLines = new Set(readFileSync(join(ROOT, rel), 'utf8').split('\n').map((l) => l.trim()));
      for (const s of solutions?.byId.values() ?? []) {
        // The lines a solution adds to the lesson (a doc comment, a final expression, a line of the check may be shared).
        const added = s.source.split('\n').map((l) => l.trim()).filter((l) => l.length >= 12 && !lessonLines.has(l));
        expect(added.length, `solution '${s.id}' adds to its lesson`).toBeGreaterThan(0);
        for (const line of added) expect(notebookLines.has(line), `${rel}: '${line}' of solution '${s.id}' is in its notebook`).toBe(false);
      }
    }
  });
});

describe('servelab build and solutions', () => {
  it('warns about a solutions file that does not parse or solves an exercise that is gone, and builds no notebook from it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-solutions-'));
    mkdirSync(join(dir, 'lessons'));
    writeFileSync(join(dir, 'lessons', '03-demo.md'), LESSON);
    writeFileSync(join(dir, 'lessons', '03-demo.solutions.md'), SOLUTIONS);
    writeFileSync(join(dir, 'lessons', '04-other.md'), LESSON.replace('Demo lesson', 'Other lesson'));
    writeFileSync(join(dir, 'lessons', '04-other.solutions.md'), '```ts\nconst x = 1;\n```\n');
    const r = spawnSync('node', [join(ROOT, 'bin/servelab.js'), 'build'], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote notebooks\/03-demo\.ipynb\nwrote notebooks\/04-other\.ipynb\n2 lessons, 2 notebooks written/);
    expect(r.stderr).toContain("warning: lessons/03-demo.solutions.md:14: solution 'gone' matches no exercise of lessons/03-demo.md");
    expect(r.stderr).toContain('warning: lessons/04-other.solutions.md:1: a solutions file holds only ```ts solution <id> blocks');
  });
});
