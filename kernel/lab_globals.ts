/**
 * What every cell has without importing: the display functions, generation and training shown as they run
 * (`generateInCell`, `liveLoss`), pipeline timelines (`timelineChart`), the exercise checks (`check`, `feedback`), and
 * `lab` (the running cell's AbortSignal, the kernel's memory), with the declarations the type checker needs for them.
 */
import { fileURLToPath } from 'node:url';
import { displayGlobals } from './display/display.ts';
import { exerciseGlobals } from './lesson/exercise.ts';
import { generateInCell } from './display/generate_stream.ts';
import { liveLoss } from './display/live_loss.ts';
import { timelineChart } from './display/timeline.ts';
import { lab } from './exec/lab.ts';

export { attachComms, lab } from './exec/lab.ts';

export function labGlobals(): Record<string, unknown> {
  return { ...displayGlobals(), generateInCell, liveLoss, timelineChart, ...exerciseGlobals, lab };
}

/**
 * `declare const name: typeof import(module)[name]` for each global, so cells are checked against the real types. One
 * line a name: the checker reads a line (and the modules behind it) once a cell names it.
 */
export function labPrelude(): string {
  const from = (rel: string) => JSON.stringify(fileURLToPath(new URL(rel, import.meta.url)));
  const decl = (names: string[], mod: string) => names.map((k) => `declare const ${k}: typeof import(${mod})[${JSON.stringify(k)}];`);
  return [
    ...decl(Object.keys(displayGlobals()), from('./display/display.ts')),
    ...decl(['generateInCell'], from('./display/generate_stream.ts')),
    ...decl(['liveLoss'], from('./display/live_loss.ts')),
    ...decl(['timelineChart'], from('./display/timeline.ts')),
    ...decl(Object.keys(exerciseGlobals), from('./lesson/exercise.ts')),
    ...decl(['lab'], from('./exec/lab.ts')),
  ].join('\n');
}
