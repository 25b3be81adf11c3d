/** What a cell calls to show things: display, updateDisplay, clearOutput, and the constructors of displayable values. */
import { randomUUID } from 'node:crypto';
import { sink, type MimeBundle } from './sink.ts';
import { toMimeBundle } from './mime.ts';
import { html, image, markdown, md } from './rich.ts';
import { table } from './table.ts';
import { plot } from './plotly.ts';
import { live } from './live.ts';

export interface DisplayOpts {
  /** An id to update this output by later; true makes a fresh one. */
  displayId?: string | true;
  metadata?: Record<string, unknown>;
  /** x is a MIME bundle already ({ 'text/html': ... }), to be published as it is. */
  raw?: boolean;
}

export interface DisplayHandle {
  readonly displayId: string;
  /** Replaces this output (and every other output shown under the same id) in place. */
  update(x: unknown, opts?: { metadata?: Record<string, unknown>; raw?: boolean }): void;
}

function bundleOf(x: unknown, raw = false): MimeBundle {
  if (!raw) return toMimeBundle(x);
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new TypeError('display(x, { raw: true }) needs x to be a MIME bundle object');
  return x as MimeBundle;
}

/** Publishes x as display_data. With a displayId, returns a handle whose update() redraws it in place. */
export function display(x: unknown, opts: DisplayOpts & { displayId: string | true }): DisplayHandle;
export function display(x: unknown, opts?: DisplayOpts): DisplayHandle | undefined;
export function display(x: unknown, opts: DisplayOpts = {}): DisplayHandle | undefined {
  const bundle = bundleOf(x, opts.raw);
  const displayId = opts.displayId === true ? randomUUID() : opts.displayId;
  sink().display(bundle, { displayId, metadata: opts.metadata });
  if (displayId === undefined) return undefined;
  return { displayId, update: (y, o = {}) => updateDisplay(displayId, y, o) };
}

/** update_display_data: every output shown under id takes x's bundle. */
export function updateDisplay(id: string, x: unknown, opts: { metadata?: Record<string, unknown>; raw?: boolean } = {}): void {
  sink().display(bundleOf(x, opts.raw), { displayId: id, update: true, metadata: opts.metadata });
}

/** clear_output; with wait the old output stays until the next one arrives, so a redraw loop does not flicker. */
export function clearOutput(wait = false): void {
  sink().clear(wait);
}

/** The names a cell sees in its global scope. */
export function displayGlobals() {
  return Object.freeze({ display, updateDisplay, clearOutput, md, markdown, html, table, image, plot, live });
}

export type DisplayGlobals = ReturnType<typeof displayGlobals>;

// Every function exported here becomes a cell global (kernel/lab_globals.ts): kernel-side helpers live elsewhere.
export { md, markdown, html, table, image, plot, live };
