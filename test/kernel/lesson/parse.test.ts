/** The lesson format: front matter errors name their line, exercises need ids, checks bind to their exercise. */
import { describe, expect, it } from 'vitest';
import { LessonError, parseLesson } from '../../../kernel/lesson/parse.ts';

const FILE = 'lessons/07-demo.md';
const FRONT = ['---', 'title: A demo', 'objectives:', '  - Learn one thing', '  - Then another', 'lecture: Background', '---'].join('\n');

function errorOf(text: string, file = FILE): LessonError {
  try {
    parseLesson(text, file);
  } catch (e) {
    if (e instanceof LessonError) return e;
    throw e;
  }
  throw new Error('expected a LessonError');
}

describe('front matter', () => {
  it('reads title, objectives, lecture and estimated_minutes, with quotes removed', () => {
    const l = parseLesson(['---', 'title: "Prices: why"', 'objectives:', '  - One', "  - 'Two, quoted'", "lecture: 'It''s the background'", 'estimated_minutes: 25', '---', '```ts', '1', '```'].join('\n'), FILE);
    expect(l.slug).toBe('07-demo');
    expect(l.meta).toEqual({ title: 'Prices: why', objectives: ['One', 'Two, quoted'], lecture: "It's the background", estimated_minutes: 25 });
  });

  it('a missing opening or closing --- is an error on line 1', () => {
    expect(errorOf('title: x\n').message).toBe(`${FILE}:1: a lesson starts with front matter: a '---' line, then title, objectives and lecture, then '---'`);
    expect(errorOf('---\ntitle: x\n').message).toBe(`${FILE}:1: the front matter opened here is never closed by a '---' line`);
  });

  it('an unknown key names its line and the known keys', () => {
    const e = errorOf(FRONT.replace('title: A demo', 'titel: A demo') + '\n```ts\n1\n```');
    expect(e.line).toBe(2);
    expect(e.message).toBe(`${FILE}:2: unknown front matter key 'titel'; the keys are title, objectives, lecture, estimated_minutes`);
  });

  it('a missing required key names the closing line', () => {
    const e = errorOf(FRONT.replace('lecture: Background\n', '') + '\n```ts\n1\n```');
    expect(e.message).toBe(`${FILE}:6: the front matter (lines 1-6) lacks 'lecture'`);
  });

  it('duplicate keys, bad minutes, inline lists, stray items and bad lines each name their line', () => {
    const body = '\n```ts\n1\n```';
    expect(errorOf(FRONT.replace('lecture: Background', 'lecture: Background\ntitle: Again') + body).message).toBe(`${FILE}:7: 'title' is given twice (first on line 2)`);
    expect(errorOf(FRONT.replace('lecture: Background', 'lecture: Background\nestimated_minutes: soon') + body).message).toBe(`${FILE}:7: estimated_minutes must be a whole number of minutes above 0, got 'soon'`);
    expect(errorOf(FRONT.replace('objectives:', 'objectives: [a, b]') + body).line).toBe(3);
    expect(errorOf(['---', '- orphan', 'title: x', '---'].join('\n')).message).toBe(`${FILE}:2: the list item '- orphan' belongs to no key; write it under 'objectives:'`);
    expect(errorOf(FRONT.replace('lecture: Background', 'lecture Background') + body).message).toBe(`${FILE}:6: expected 'key: value', got 'lecture Background'`);
    expect(errorOf(FRONT.replace('title: A demo', 'title: "unclosed') + body).message).toBe(`${FILE}:2: the string "unclosed opens a quote it does not close`);
    expect(errorOf(['---', 'title: x', 'objectives:', 'lecture: y', '---', '```ts', '1', '```'].join('\n')).message).toBe(`${FILE}:3: objectives lists nothing: write one '- objective' per line below it`);
  });

  it('the file name must be NN-slug.md', () => {
    expect(errorOf(FRONT, 'lessons/intro.md').message).toBe("lessons/intro.md: a lesson file is named NN-slug.md (two digits, then lowercase words joined by '-'), got 'intro.md'");
  });
});

describe('cells', () => {
  const lesson = (body: string) => parseLesson(`${FRONT}\n${body}`, FILE);

  it('splits markdown and ```ts cells, keeping other fences in the markdown', () => {
    const l = lesson(['', '# Intro', '', 'Some text.', '', '```sh', 'npm test', '```', '', '```ts', 'const a = 1;', '', 'a + 1', '```', '', 'More.', '', '```typescript', 'a', '```', ''].join('\n'));
    expect(l.cells).toEqual([
      { kind: 'markdown', source: '# Intro\n\nSome text.\n\n```sh\nnpm test\n```', line: 9 },
      { kind: 'code', source: 'const a = 1;\n\na + 1', line: 17 },
      { kind: 'markdown', source: 'More.', line: 23 },
      { kind: 'code', source: 'a', line: 25 },
    ]);
  });

  it('a ts fence inside a longer fence, or indented in a list, stays markdown', () => {
    const l = lesson(['````md', '```ts', 'not a cell', '```', '````', '', '- item', '  ```ts', '  also not', '  ```', '', '```ts', 'cell', '```'].join('\n'));
    expect(l.cells.map((c) => c.kind)).toEqual(['markdown', 'code']);
    expect(l.cells[0].source).toContain('not a cell');
  });

  it('binds a check to the exercise with its id', () => {
    const l = lesson(['```ts exercise cost', 'const x = NaN;', '```', '', 'Now check it.', '', '```ts check cost', "check('x', x, 1);", '```'].join('\n'));
    expect(l.cells).toEqual([
      { kind: 'exercise', id: 'cost', source: 'const x = NaN;', line: 8 },
      { kind: 'markdown', source: 'Now check it.', line: 12 },
      { kind: 'check', id: 'cost', source: "check('x', x, 1);", line: 14 },
    ]);
  });

  it('an exercise without an id is an error naming its line', () => {
    const e = errorOf(`${FRONT}\n\n\`\`\`ts exercise\nconst x = 1;\n\`\`\``);
    expect(e.line).toBe(9);
    expect(e.message).toMatch(/^lessons\/07-demo\.md:9: ```ts exercise needs an id: ```ts exercise <id>/);
  });

  it('a check without an exercise before it, a second check, a duplicate exercise, bad ids and unknown kinds are errors', () => {
    expect(errorOf(`${FRONT}\n\`\`\`ts check cost\nx\n\`\`\`\n\`\`\`ts exercise cost\nx\n\`\`\``).message).toBe(`${FILE}:8: check 'cost' checks no exercise: a \`\`\`ts exercise cost block must come before it`);
    expect(errorOf(`${FRONT}\n\`\`\`ts check\nx\n\`\`\``).message).toMatch(/:8: ```ts check needs an id/);
    const twice = `${FRONT}\n\`\`\`ts exercise a\nx\n\`\`\`\n\`\`\`ts check a\nx\n\`\`\`\n\`\`\`ts check a\nx\n\`\`\``;
    expect(errorOf(twice).message).toBe(`${FILE}:14: exercise 'a' already has a check (line 11)`);
    expect(errorOf(`${FRONT}\n\`\`\`ts exercise a\nx\n\`\`\`\n\`\`\`ts exercise a\nx\n\`\`\``).message).toBe(`${FILE}:11: exercise 'a' is defined twice (first on line 8)`);
    expect(errorOf(`${FRONT}\n\`\`\`ts exercise 9lives\nx\n\`\`\``).message).toMatch(/:8: '9lives' is not a valid exercise id/);
    expect(errorOf(`${FRONT}\n\`\`\`ts exercise a extra\nx\n\`\`\``).message).toMatch(/:8: unexpected 'extra' after ```ts exercise a/);
    expect(errorOf(`${FRONT}\n\`\`\`ts solution a\nx\n\`\`\``).message).toMatch(/:8: unknown kind of ts block 'solution'/);
  });

  it('an unclosed fence and an empty ts block name their line', () => {
    expect(errorOf(`${FRONT}\ntext\n\`\`\`ts\nconst a = 1;\n`).message).toBe(`${FILE}:9: the code block opened here (\`\`\`ts) is never closed`);
    expect(errorOf(`${FRONT}\n\`\`\`ts\n\n\`\`\``).message).toBe(`${FILE}:8: an empty \`\`\`ts block: a code cell needs code`);
  });

  it('a lesson without code is an error', () => {
    expect(errorOf(`${FRONT}\nJust prose.\n`).message).toBe(`${FILE}: the lesson has no \`\`\`ts cell`);
  });
});
