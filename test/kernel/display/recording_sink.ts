/** A DisplaySink that records what a cell published, serialized as the kernel would send it. */
import type { DisplayOptions, DisplaySink, MimeBundle } from '../../../kernel/display/sink.ts';

export type Published =
  | { kind: 'display'; at: number; bundle: MimeBundle; displayId?: string; update: boolean; metadata?: Record<string, unknown> }
  | { kind: 'clear'; at: number; wait: boolean };

export class RecordingSink implements DisplaySink {
  readonly events: Published[] = [];
  readonly controller = new AbortController();

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  display(bundle: MimeBundle, opts: DisplayOptions = {}): void {
    // A JSON round trip, as on the wire: what does not survive it never reaches the frontend.
    this.events.push({ kind: 'display', at: performance.now(), bundle: JSON.parse(JSON.stringify(bundle)), displayId: opts.displayId, update: opts.update ?? false, metadata: opts.metadata });
  }

  clear(wait = false): void {
    this.events.push({ kind: 'clear', at: performance.now(), wait });
  }

  /** The display_data and update_display_data messages published under one display id, in order. */
  forId(id: string) {
    return this.events.filter((e): e is Extract<Published, { kind: 'display' }> => e.kind === 'display' && e.displayId === id);
  }
}
