/** Cell conversion (TypeScript cell -> script in the global scope) and is_complete, without a kernel. */
import { afterEach, describe, expect, it } from 'vitest';
import vm from 'node:vm';
import { TraceMap, originalPositionFor } from '@jridgewell/trace-mapping';
import { convertCell, IMPORT_FN } from '../../kernel/exec/transform.ts';
import { isComplete } from '../../kernel/exec/complete.ts';
import { provideHelpers } from '../../kernel/exec/runtime.ts';

const g = globalThis as Record<string, unknown>;
let cells = 0;

/** Converts and runs a cell as the kernel does; returns its value and what convertCell said. */
async function run(code: string) {
  const file = `cell[${++cells}]`;
  const c = convertCell(code, `${file}.ts`);
  const value = await (new vm.Script(c.js, { filename: file }).runInThisContext() as Promise<unknown>);
  return { ...c, file, value };
}

/** The cell lines of an error's stack frames in the cell, through the map, innermost first. */
async function errorLines(code: string): Promise<number[]> {
  const file = `cell[${++cells}]`;
  const c = convertCell(code, `${file}.ts`);
  const map = new TraceMap(c.map);
  const err = await (new vm.Script(c.js, { filename: file }).runInThisContext() as Promise<unknown>).then(
    () => null,
    (e: Error) => e,
  );
  expect(err).toBeInstanceOf(Error);
  const lines = [...err!.stack!.matchAll(/cell\[\d+\]:(\d+):(\d+)/g)].map((m) => originalPositionFor(map, { line: Number(m[1]), column: Number(m[2]) - 1 }).line);
  // The call of the async wrapper (on the script's last line, in the stack until the first await) is no line of the cell.
  return lines.filter((l) => l !== null);
}

describe('convertCell', () => {
  afterEach(() => {
    delete g[IMPORT_FN];
  });

  it('returns the last expression, through a Promise', async () => {
    expect((await run('const k1 = 6;\nk1 * 7')).value).toBe(42);
    expect((await run('const k2 = 6;')).value).toBeUndefined();
    expect((await run('1 + 1;\nlet k3 = 2;')).value).toBeUndefined();
  });

  it('makes top-level const, let and var globals that a later cell may declare again', async () => {
    const r = await run('const v1 = 1, v2: number = 2;\nlet v3: string;\nvar v4 = v1 + v2;');
    expect(r.declared).toEqual(['v1', 'v2', 'v3', 'v4']);
    expect([g.v1, g.v2, g.v3, g.v4]).toEqual([1, 2, undefined, 3]);
    await run("const v1 = 'again';");
    expect(g.v1).toBe('again');
  });

  it('keeps the prefix on the first line, so a cell line is the same line of the script', () => {
    const { js } = convertCell('const p1 = 1;\nconst p2 = 2;\np1 + p2', 'cell.ts');
    expect(js.split('\n')[0]).toMatch(/^var p1, p2; \(async \(\) => \{p1 = 1;$/);
    expect(js.split('\n')[1]).toBe('p2 = 2;');
  });

  it('keeps destructuring patterns as patterns', async () => {
    const r = await run("const {d1, d2: [d3, , d4 = 9] = [], ...d5} = { d1: 1, d2: [3, 0], d6: 6 } as any;\nconst [d7, ...d8] = 'xyz';");
    expect(r.js).toContain('({ d1, d2: [d3, , d4 = 9] = [], ...d5 } =');
    expect(r.declared).toEqual(['d1', 'd3', 'd4', 'd5', 'd7', 'd8']);
    expect([g.d1, g.d3, g.d4, g.d5, g.d7, g.d8]).toEqual([1, 3, 9, { d6: 6 }, 'x', ['y', 'z']]);
  });

  it('hoists function declarations, so a cell calls a function it defines further down', async () => {
    const r = await run('const h0 = hf1(2);\nfunction hf1(x: number): number { return hf2(x) * 10; }\nasync function* hf2g() { yield 1; }\nfunction hf2(x: number) { return x + 1; }\nh0');
    expect(r.value).toBe(30);
    expect(r.declared).toEqual(['h0', 'hf1', 'hf2g', 'hf2']);
    expect(Object.prototype.toString.call(g.hf2g)).toBe('[object AsyncGeneratorFunction]');
    // Function declarations are no statement that runs in place: the expression before them is the value.
    expect((await run('5 * 5\nfunction hf3() {}')).value).toBe(25);
  });

  it('makes classes and enums globals', async () => {
    const r = await run('class Cls1 { constructor(private x: number) {} get twice() { return this.x * 2; } }\nenum Colour1 { Red, Green = 5 }\nconst enum Size1 { S = 1 }\nnew Cls1(4).twice + Colour1.Green + Size1.S');
    expect(r.value).toBe(14);
    expect(r.declared).toEqual(['Cls1', 'Colour1', 'Size1']);
    expect((g.Colour1 as Record<string, unknown>).Red).toBe(0);
    expect((g.Colour1 as Record<number, unknown>)[5]).toBe('Green');
    expect((await run('Colour1.Green')).value).toBe(5);
  });

  it('erases types and interfaces and does not declare them', async () => {
    const r = await run('interface T1 { a: number }\ntype T2 = T1[];\ndeclare const t3: number;\nconst t4: T2 = [{ a: 1 }];\nt4.length as number');
    expect(r.declared).toEqual(['t4']);
    expect(r.value).toBe(1);
  });

  it('runs top-level await inside the cell', async () => {
    const r = await run('const w1 = await new Promise<number>((res) => setTimeout(() => res(7), 5));\nw1 + (await Promise.resolve(1))');
    expect(r.value).toBe(8);
  });

  it('turns imports into awaited dynamic imports that assign globals, and drops only type-only imports', async () => {
    const asked: string[] = [];
    g[IMPORT_FN] = async (spec: string) => {
      asked.push(spec);
      return { default: `default of ${spec}`, named: 1, 'odd-name': 2 };
    };
    const r = await run(
      [
        "import type { Nothing } from 'types-only';",
        "import { type AlsoNothing } from 'elements-only';",
        "import { type Skipped, named as i1 } from 'mixed';",
        "import i2, * as i3 from 'both';",
        "import i4, { 'odd-name' as i5 } from 'quoted';",
        "import 'side-effect';",
        "import unused from 'kept';",
        'i1 + i5',
      ].join('\n'),
    );
    expect(asked).toEqual(['elements-only', 'mixed', 'both', 'quoted', 'side-effect', 'kept']);
    expect(r.value).toBe(3);
    expect(r.declared).toEqual(['i1', 'i2', 'i3', 'i4', 'i5', 'unused']);
    expect([g.i2, g.i4, g.unused]).toEqual(['default of both', 'default of quoted', 'default of kept']);
    expect((g.i3 as Record<string, unknown>).named).toBe(1);
  });

  it('drops export, keeping what it declared', async () => {
    const r = await run("export const e1 = 1;\nexport function ef1() { return 2; }\nexport default function ef2() { return 3; }\nexport class EC1 {}\nexport { e1 as e2 };\nexport * from 'elsewhere';\nexport default 4;\ne1 + ef1() + ef2()");
    expect(r.value).toBe(6);
    expect(r.declared).toEqual(['e1', 'ef1', 'ef2', 'EC1']);
  });

  it('returns a cell that is only a string literal', async () => {
    expect((await run('"servelab"')).value).toBe('servelab');
    expect((await run("'use strict'")).value).toBe('use strict');
  });

  it('declares only names that are JavaScript identifiers', () => {
    expect(convertCell('const ok1 = 1, é1 = 2;', 'cell.ts').declared).toEqual(['ok1']);
  });

  it('maps a thrown error\'s frames back to the cell\'s own lines', async () => {
    // The function is defined on lines 1-4 and hoisted; it is called on line 6.
    expect(await errorLines("function tf(x: number) {\n  if (x > 1) throw new RangeError('too big: ' + x);\n  return x;\n}\n\ntf(1) + tf(2)")).toEqual([2, 6]);
    // Types, a multi-line call and non-ASCII text before the throw.
    const cell = ['interface Q { a: number }', "const s = 'é😀';", 'const ok = [1,', '  2];', 'const q: Q = { a: 1 };', 'JSON.stringify(q,', '  (() => { throw new Error(s); })());'].join('\n');
    expect(await errorLines(cell)).toEqual([7, 7]);
    // A call the printer puts on one line with the line before it still maps to its own line.
    expect(await errorLines("function tbar(): number { throw new Error('x'); }\nMath.max(1,\n  tbar())")).toEqual([1, 3]);
    expect(await errorLines("await Promise.resolve();\nconst { tz } = { tz: 1 };\n\nnull!.x")).toEqual([4]);
  });

  it('lowers `using` (Node 20 lacks it): disposed when the cell ends, its binding local, the cell\'s other names global', async () => {
    provideHelpers(['usingCtx']);
    g.usingLog = [];
    const r = await run("const res = { [Symbol.dispose]() { (usingLog as string[]).push('disposed'); } };\nusing held = res;\nconst after = 5;\n(usingLog as string[]).push('body');\nafter * 2");
    expect(r.helpers).toEqual(['usingCtx']);
    expect(r.value).toBe(10);
    expect(g.usingLog).toEqual(['body', 'disposed']);
    expect(g.after).toBe(5);
    expect(r.declared).toEqual(['res', 'after']);
    expect('held' in g).toBe(false);
    delete g.usingLog;
  });

  it('throws a SyntaxError naming the line and column of a cell that does not parse', () => {
    expect(() => convertCell('const ok = 1;\nconst = ;', 'cell[9].ts')).toThrow(SyntaxError);
    expect(() => convertCell('const ok = 1;\nconst = ;', 'cell[9].ts')).toThrow(/cell\[9\]\.ts line 2, column 7/);
  });
});

describe('isComplete', () => {
  it.each([
    ['function f() {', 'incomplete', '  '],
    ['const a = [1, 2,', 'incomplete', '  '],
    ['console.log(1,', 'incomplete', '  '],
    ['if (a) {\n  f(', 'incomplete', '    '],
    ["const s = 'abc", 'incomplete', ''],
    ['const t = `abc ${x}', 'incomplete', ''],
    ['1 + 1', 'complete', undefined],
    ['const x = 2;', 'complete', undefined],
    ['function f() {\n  return 1;\n}', 'complete', undefined],
    ['', 'complete', undefined],
    ['const = ;', 'invalid', undefined],
    ['let 1x = 2;', 'invalid', undefined],
    ['}', 'invalid', undefined],
    ['f(1 2)', 'invalid', undefined],
    ['a)', 'invalid', undefined],
  ])('%j is %s', (code, status, indent) => {
    expect(isComplete(code)).toEqual(indent === undefined ? { status } : { status, indent });
  });
});
