/**
 * What every cell has without importing: the display functions, generation and training shown as they run
 * (`generateInCell`, `liveLoss`), the exercise checks (`check`, `feedback`), and `lab` (the running cell's
 * AbortSignal), with the declarations the type checker needs for them.
 */
import { fileURLToPath } from 'node:url';
import { sink, hasSink } from './display/sink.ts';
import { displayGlobals } from './display/display.ts';
import { exerciseGlobals } from './lesson/exercise.ts';
import { generateInCell } from './display/generate_stream.ts';
import { liveLoss } from './display/live_loss.ts';
import type { CommRegistry } from './comm.ts';

let comms: CommRegistry | null = null;

/** The kernel hands its comm registry over once it exists. */
export function attachComms(registry: CommRegistry): void {
  comms = registry;
}

/**
 * The running cell's handle: `lab.signal` aborts when the user interrupts, so long experiments can stop;
 * `lab.comms.registerTarget(name, (comm, data) => ...)` answers comms a frontend opens.
 */
export const lab = {
  get signal(): AbortSignal {
    return hasSink() ? sink().signal : new AbortController().signal;
  },
  get comms(): CommRegistry {
    if (!comms) throw new Error('lab.comms exists inside a running kernel only');
    return comms;
  },
};

export function labGlobals(): Record<string, unknown> {
  return { ...displayGlobals(), generateInCell, liveLoss, ...exerciseGlobals, lab };
}

/** `declare const name: typeof import(module)[name]` for each global, so cells are checked against the real types. */
export function labPrelude(): string {
  const from = (rel: string) => JSON.stringify(fileURLToPath(new URL(rel, import.meta.url)));
  const decl = (names: string[], mod: string) => names.map((k) => `declare const ${k}: typeof import(${mod})[${JSON.stringify(k)}];`);
  return [
    ...decl(Object.keys(displayGlobals()), from('./display/display.ts')),
    ...decl(['generateInCell'], from('./display/generate_stream.ts')),
    ...decl(['liveLoss'], from('./display/live_loss.ts')),
    ...decl(Object.keys(exerciseGlobals), from('./lesson/exercise.ts')),
    ...decl(['lab'], from('./lab_globals.ts')),
  ].join('\n');
}
