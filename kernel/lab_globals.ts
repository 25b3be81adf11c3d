/** What every cell has without importing: the display functions, and `lab` (the running cell's AbortSignal). */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sink, hasSink } from './display/sink.ts';

const DISPLAY = join(dirname(fileURLToPath(import.meta.url)), 'display', 'display.ts');

/** The running cell's handle: `lab.signal` aborts when the user interrupts, so long experiments can stop. */
export const lab = {
  get signal(): AbortSignal {
    return hasSink() ? sink().signal : new AbortController().signal;
  },
};

let exportsOfDisplay: string[] = [];

export async function labGlobals(): Promise<Record<string, unknown>> {
  const mod = existsSync(DISPLAY) ? ((await import(pathToFileURL(DISPLAY).href)) as Record<string, unknown>) : {};
  const globals = Object.fromEntries(Object.entries(mod).filter(([k, v]) => typeof v === 'function' && k !== 'displayGlobals'));
  exportsOfDisplay = Object.keys(globals);
  return { ...globals, lab };
}

/** Declarations for the type checker, matching labGlobals(); call after labGlobals. */
export function labPrelude(): string {
  const from = JSON.stringify(DISPLAY);
  return [
    ...exportsOfDisplay.map((k) => `declare const ${k}: typeof import(${from})[${JSON.stringify(k)}];`),
    `declare const lab: typeof import(${JSON.stringify(fileURLToPath(import.meta.url))})['lab'];`,
  ].join('\n');
}
