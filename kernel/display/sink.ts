/** Where a cell's rich outputs go: the kernel installs a sink per execution; display code only talks to this. */

/** A Jupyter MIME bundle: mimetype -> data (strings, or JSON for +json types). */
export type MimeBundle = Record<string, unknown>;

export interface DisplayOptions {
  /** Updates in place the output published earlier under this id (update_display_data). */
  displayId?: string;
  update?: boolean;
  metadata?: Record<string, unknown>;
}

export interface DisplaySink {
  display(bundle: MimeBundle, opts?: DisplayOptions): void;
  /** clear_output; with wait, the clear happens when the next output arrives (no flicker). */
  clear(wait?: boolean): void;
  /** The running cell's AbortSignal: aborted when the user interrupts. Live charts stop with it. */
  readonly signal: AbortSignal;
}

let current: DisplaySink | null = null;

/** The kernel sets the sink when a cell starts and clears it when the cell's outputs are done. */
export function setSink(s: DisplaySink | null): void {
  current = s;
}

export function sink(): DisplaySink {
  if (!current) throw new Error('display() needs a running cell: call it from a notebook cell or a report');
  return current;
}

export function hasSink(): boolean {
  return current !== null;
}
