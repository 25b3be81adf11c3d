/**
 * The compiled mirror the command line and the kernel run from (load/compiled.mjs), on a tree of its own in a
 * temporary folder: what it compiles, what the compiled modules see, and what brings a file up to date.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { updateMirror, type Tree } from '../../load/compiled.mjs';

const root = mkdtempSync(join(tmpdir(), 'servelab-mirror-'));
const tree: Tree = { root, dirs: ['engine'], mirror: join(root, 'node_modules', '.cache', 'servelab') };
const src = (rel: string) => join(root, 'engine', rel);
const out = (rel: string) => join(tree.mirror, 'engine', rel.replace(/\.ts$/, '.js'));

function write(rel: string, text: string, mtime?: Date): void {
  mkdirSync(join(root, 'engine'), { recursive: true });
  writeFileSync(src(rel), text);
  if (mtime) utimesSync(src(rel), mtime, mtime);
}

/** Imports a mirror module afresh (a query string makes a new instance of it; what it imports stays cached). */
let fresh = 0;
const load = async (rel: string) => (await import(`${pathToFileURL(out(rel)).href}?v=${++fresh}`)) as Record<string, unknown>;

describe('the compiled mirror', () => {
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('compiles every source: types erased, relative imports to the mirror, other files and import.meta.url to the source tree', async () => {
    write('b.ts', 'export const two: number = 2;\n');
    write('helper.mjs', 'export const three = 3;\n');
    write('a.ts', "import { two } from './b.ts';\nimport { three } from './helper.mjs';\ninterface P { n: number }\nconst p: P = { n: two * three };\nexport const six = p.n;\nexport const here = import.meta.url;\n");
    write('types.d.ts', 'export type T = number;\n');
    expect(updateMirror(tree)).toBe(true);
    const a = await load('a.ts');
    expect(a.six).toBe(6);
    expect(a.here).toBe(pathToFileURL(src('a.ts')).href);
    const text = readFileSync(out('a.ts'), 'utf8');
    expect(text).toContain('"./b.js"');
    expect(text).toContain(JSON.stringify(pathToFileURL(src('helper.mjs')).href));
    expect(text).not.toContain('interface');
    expect(() => statSync(out('types.d.ts'))).toThrow();
  });

  it('compiles again only a source whose modification time changed', async () => {
    const before = statSync(out('b.ts')).ino;
    write('a.ts', "import { two } from './b.ts';\nexport const six = two * 3 + 1;\n", new Date(Date.now() + 5000));
    expect(updateMirror(tree)).toBe(true);
    expect((await load('a.ts')).six).toBe(7);
    // b.ts was not written again (a new file would have a new inode: files are written aside and renamed).
    expect(statSync(out('b.ts')).ino).toBe(before);
    // Going back to an older version of a file (a checkout) is a change too.
    write('b.ts', 'export const two = 20;\n', new Date(Date.now() - 86_400_000));
    expect(updateMirror(tree)).toBe(true);
    expect(readFileSync(out('b.ts'), 'utf8')).toContain('two = 20');
  });

  it('compiles every file again when the stamp (the tree\'s root, the transformer\'s version) differs', () => {
    const before = statSync(out('b.ts')).ino;
    const pkg = join(tree.mirror, 'package.json');
    writeFileSync(pkg, readFileSync(pkg, 'utf8').replace('"root"', '"was"'));
    expect(updateMirror(tree)).toBe(true);
    expect(statSync(out('b.ts')).ino).not.toBe(before);
    expect(JSON.parse(readFileSync(pkg, 'utf8'))).toMatchObject({ type: 'module', root });
  });

  it('a source that does not parse becomes a module that throws its SyntaxError, naming the file; the rest still run', async () => {
    write('broken.ts', 'export const = 1;\n');
    expect(updateMirror(tree)).toBe(true);
    await expect(load('broken.ts')).rejects.toThrow(/broken\.ts/);
    expect(typeof (await load('a.ts')).six).toBe('number');
  });

  it('says so when the mirror cannot be written, for the caller to run the sources through the hooks', () => {
    const blocked: Tree = { ...tree, mirror: join(root, 'engine', 'b.ts', 'mirror') };
    expect(updateMirror(blocked)).toBe(false);
  });
});
