/**
 * Dependencies point one way: lessons -> kernel -> engine, and bench -> engine. The engine imports neither. The one
 * exception: the kernel's benchmark drives a real kernel through its protocol client (kernel/client/), as a user's
 * frontend would, and nothing else of the kernel. load/ (how the TypeScript sources run) imports nothing of the
 * project: any layer may use it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : /\.(ts|mts|js|mjs)$/.test(n) ? [p] : [];
  });
}

/** Paths (from the root) that a file's relative imports reach. */
function targets(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]);
  return specs.map((s) => relative(ROOT, resolve(dirname(file), s)));
}

/** Top-level folders that a file's relative imports reach. */
function reaches(file: string): string[] {
  return targets(file).map((t) => t.split('/')[0]);
}

const ALLOWED: Record<string, string[]> = { bench: ['kernel/client/'] };

const FORBIDDEN: Record<string, string[]> = {
  engine: ['kernel', 'lessons', 'bench', 'test'],
  bench: ['kernel', 'lessons', 'test'],
  kernel: ['lessons', 'test'],
  load: ['engine', 'kernel', 'lessons', 'bench', 'scripts', 'test'],
};

describe('dependency direction', () => {
  for (const [layer, banned] of Object.entries(FORBIDDEN)) {
    it(`${layer}/ imports none of ${banned.join(', ')}`, () => {
      const allowed = ALLOWED[layer] ?? [];
      const bad = sources(join(ROOT, layer)).flatMap((f) =>
        targets(f)
          .filter((t) => banned.includes(t.split('/')[0]) && !allowed.some((a) => t.startsWith(a)))
          .map((t) => `${relative(ROOT, f)} -> ${t}`),
      );
      expect(bad).toEqual([]);
    });
  }

  it('the scan sees imports (a file known to import the engine is found)', () => {
    expect(reaches(join(ROOT, 'kernel', 'cli.ts'))).toContain('engine');
  });
});
