/** `servelab build [--check] [--root DIR]`: lessons/NN-slug.md -> notebooks/NN-slug.ipynb; --check writes nothing. */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildStatus, planBuild, writeNotebooks } from '../lesson/build.ts';
import { LessonError } from '../lesson/parse.ts';
import { solutionWarnings } from '../lesson/solutions.ts';

export function buildCommand(opts: { check?: boolean; root?: string } = {}): number {
  const root = resolve(opts.root ?? process.cwd());
  if (!existsSync(join(root, 'lessons'))) {
    console.error(`servelab build: no lessons/ folder in ${root} (run it from the project root, or pass --root DIR)`);
    return 2;
  }
  let plan;
  try {
    plan = planBuild(root);
  } catch (e) {
    if (e instanceof LessonError) {
      console.error(`servelab build: ${e.message}`);
      return 2;
    }
    throw e;
  }
  // Solutions never reach a notebook, but a broken or orphaned one is best caught when the lessons change.
  for (const w of solutionWarnings(root, plan.map((o) => o.lesson))) console.error(`warning: ${w}`);
  if (opts.check) {
    const s = buildStatus(root, plan);
    const bad = [...s.missing.map((n) => `missing  ${n}`), ...s.stale.map((n) => `stale    ${n}`), ...s.orphans.map((n) => `orphan   ${n} (no lesson builds it)`)];
    if (bad.length === 0) {
      console.log(`${s.upToDate.length} notebook${s.upToDate.length === 1 ? '' : 's'} up to date`);
      return 0;
    }
    console.error(`${bad.join('\n')}\n\nrun \`servelab build\` to regenerate the notebooks from lessons/ (delete orphans by hand)`);
    return 1;
  }
  const written = writeNotebooks(root, plan);
  for (const n of written) console.log(`wrote ${n}`);
  console.log(`${plan.length} lesson${plan.length === 1 ? '' : 's'}, ${written.length} notebook${written.length === 1 ? '' : 's'} written, ${plan.length - written.length} unchanged`);
  const orphans = buildStatus(root, plan).orphans;
  for (const n of orphans) console.error(`warning: ${n} has no lesson (renamed or deleted?); delete it by hand`);
  return 0;
}
