/** Notebooks built from lessons: committed ones are up to date, the output is nbformat 4.5 and byte-stable, and `servelab build --check` says what is stale. */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildStatus, cellId, notebookJson, planBuild, writeNotebooks } from '../../../kernel/lesson/build.ts';
import { parseLesson } from '../../../kernel/lesson/parse.ts';

const ROOT = resolve(import.meta.dirname, '..', '..', '..');

const LESSON = [
  '---',
  'title: Demo lesson',
  'objectives:',
  '  - Measure a thing',
  'lecture: Background',
  'estimated_minutes: 5',
  '---',
  '',
  'Some prose.',
  '',
  '```ts',
  'const a = 1;',
  '```',
  '',
  '```ts exercise double',
  'const twice = NaN; // TODO',
  '```',
  '',
  '```ts check double',
  "check('twice', twice, 2 * a);",
  '```',
].join('\n');

describe('committed notebooks', () => {
  it('every notebooks/NN-slug.ipynb is what its lesson builds (run `servelab build` if this fails)', () => {
    const plan = planBuild(ROOT);
    expect(plan.length).toBeGreaterThan(0);
    const s = buildStatus(ROOT, plan);
    expect({ stale: s.stale, missing: s.missing, orphans: s.orphans }).toEqual({ stale: [], missing: [], orphans: [] });
  });
});

describe('the notebook a lesson builds', () => {
  const lesson = parseLesson(LESSON, 'lessons/03-demo.md');
  const nb = JSON.parse(notebookJson(lesson));

  it('is nbformat 4.5 with the servelab kernelspec, language_info and the front matter', () => {
    expect(nb.nbformat).toBe(4);
    expect(nb.nbformat_minor).toBe(5);
    expect(nb.metadata).toEqual({
      kernelspec: { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' },
      language_info: { name: 'typescript', file_extension: '.ts' },
      servelab: { lesson: '03-demo', source: 'lessons/03-demo.md', title: 'Demo lesson', objectives: ['Measure a thing'], lecture: 'Background', estimated_minutes: 5 },
    });
  });

  it('opens with the title and objectives, then the lesson cells, exercises and checks tagged', () => {
    expect(nb.cells.map((c: { cell_type: string }) => c.cell_type)).toEqual(['markdown', 'markdown', 'code', 'code', 'code']);
    const first = nb.cells[0].source.join('');
    expect(first).toMatch(/^# Demo lesson\n/);
    expect(first).toContain('*Follows the lecture: Background.* About 5 minutes.');
    expect(first).toContain('- Measure a thing');
    expect(nb.cells[2]).toEqual({ cell_type: 'code', execution_count: null, id: cellId('03-demo', 2), metadata: {}, outputs: [], source: ['const a = 1;'] });
    expect(nb.cells[3].metadata).toEqual({ servelab: { exercise: 'double' }, tags: ['exercise'] });
    expect(nb.cells[4].metadata).toEqual({ jupyter: { source_hidden: true }, servelab: { check: 'double' }, tags: ['check'] });
  });

  it('has unique, valid cell ids derived from the slug and index, and no timestamps', () => {
    const ids = nb.cells.map((c: { id: string }) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[a-zA-Z0-9_-]{1,64}$/);
    expect(ids).toEqual(ids.map((_: string, i: number) => cellId('03-demo', i)));
    expect(notebookJson(lesson)).toBe(notebookJson(parseLesson(LESSON, 'lessons/03-demo.md')));
    expect(notebookJson(lesson)).not.toMatch(/\d{4}-\d{2}-\d{2}T/);
  });

  it('stores source as lines and sorts keys, as Jupyter writes notebooks', () => {
    const text = notebookJson(lesson);
    expect(text.endsWith('}\n')).toBe(true);
    expect(text.split('\n')[1]).toBe(' "cells": [');
    expect(nb.cells[1].source).toEqual(['Some prose.']);
  });
});

describe('servelab build', () => {
  const servelab = (cwd: string, ...args: string[]) => spawnSync('node', [join(ROOT, 'bin/servelab.js'), 'build', ...args], { cwd, encoding: 'utf8' });

  function project(): string {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-build-'));
    mkdirSync(join(dir, 'lessons'));
    writeFileSync(join(dir, 'lessons', '03-demo.md'), LESSON);
    writeFileSync(join(dir, 'lessons', 'README.md'), '# not a lesson\n');
    return dir;
  }

  it('--check lists missing and stale notebooks, exits 1 and writes nothing; build fixes them', () => {
    const dir = project();
    let r = servelab(dir, '--check');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('missing  notebooks/03-demo.ipynb');
    expect(() => readFileSync(join(dir, 'notebooks', '03-demo.ipynb'))).toThrow();

    r = servelab(dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('wrote notebooks/03-demo.ipynb');
    const built = readFileSync(join(dir, 'notebooks', '03-demo.ipynb'), 'utf8');
    expect(servelab(dir, '--check').status).toBe(0);

    // Unchanged lesson: nothing written, same bytes.
    expect(servelab(dir).stdout).toContain('0 notebooks written, 1 unchanged');
    expect(readFileSync(join(dir, 'notebooks', '03-demo.ipynb'), 'utf8')).toBe(built);

    writeFileSync(join(dir, 'lessons', '03-demo.md'), LESSON.replace('Some prose.', 'Other prose.'));
    writeFileSync(join(dir, 'notebooks', '09-gone.ipynb'), '{}');
    r = servelab(dir, '--check');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('stale    notebooks/03-demo.ipynb');
    expect(r.stderr).toContain('orphan   notebooks/09-gone.ipynb');
    expect(readFileSync(join(dir, 'notebooks', '03-demo.ipynb'), 'utf8')).toBe(built);
  });

  it('a lesson error stops the build with the file and line, exit 2', () => {
    const dir = project();
    writeFileSync(join(dir, 'lessons', '04-bad.md'), LESSON.replace('```ts exercise double', '```ts exercise'));
    const r = servelab(dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^servelab build: lessons\/04-bad\.md:15: ```ts exercise needs an id/);
  });

  it('writeNotebooks writes only what changed', () => {
    const dir = project();
    expect(writeNotebooks(dir)).toEqual(['notebooks/03-demo.ipynb']);
    expect(writeNotebooks(dir)).toEqual([]);
    expect(buildStatus(dir).upToDate).toEqual(['notebooks/03-demo.ipynb']);
  });
});
