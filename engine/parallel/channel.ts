/**
 * A one-way mailbox between two workers in shared memory: one slot of `capacity` bytes and a state word. The sender
 * waits for the slot to be empty, copies a chunk in and marks it full; the receiver waits for full, copies the chunk
 * out and marks it empty. Messages longer than the slot travel in chunks. Waiting is `Atomics.waitAsync`, so a
 * worker that sends and receives at once (every step of a ring) interleaves both on its event loop and a ring of
 * blocked senders cannot deadlock. Every wait also watches the group's abort word: when a worker fails, the
 * others' pending sends and receives throw GroupAbortedError instead of waiting forever.
 */
import { GroupAbortedError } from './errors.ts';

/** Words of a slot's header: state (EMPTY / FULL), bytes in the slot, bytes of the whole message. */
const STATE = 0;
const LENGTH = 1;
const TOTAL = 2;
export const CHANNEL_HEADER_BYTES = 16;
const EMPTY = 0;
const FULL = 1;
/** Longest a wait sleeps before it looks at the abort word again, ms. */
const POLL_MS = 100;

type WaitAsync = (a: Int32Array, index: number, value: number, timeoutMs: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Bytes of shared memory `channels` mailboxes of `capacity` bytes take. */
export const channelsBytes = (channels: number, capacity: number): number => channels * (CHANNEL_HEADER_BYTES + capacity);

export class Channel {
  private readonly head: Int32Array;
  private readonly slot: Uint8Array;
  /** Sends (or receives) on one side run one at a time, in the order they were called. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    memory: SharedArrayBuffer,
    index: number,
    readonly capacity: number,
    private readonly abort: Int32Array,
    readonly label: string,
  ) {
    const offset = index * (CHANNEL_HEADER_BYTES + capacity);
    this.head = new Int32Array(memory, offset, CHANNEL_HEADER_BYTES / 4);
    this.slot = new Uint8Array(memory, offset + CHANNEL_HEADER_BYTES, capacity);
  }

  /** Wakes whoever waits on this mailbox (the group does it to every mailbox when it aborts). */
  wake(): void {
    Atomics.notify(this.head, STATE);
  }

  send(bytes: Uint8Array): Promise<void> {
    const run = this.queue.then(() => this.sendNow(bytes));
    this.queue = run.catch(() => undefined);
    return run;
  }

  recv(): Promise<Uint8Array> {
    const run = this.queue.then(() => this.recvNow());
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async sendNow(bytes: Uint8Array): Promise<void> {
    let off = 0;
    do {
      await this.waitFor(EMPTY);
      const n = Math.min(this.capacity, bytes.length - off);
      this.slot.set(bytes.subarray(off, off + n));
      this.head[LENGTH] = n;
      this.head[TOTAL] = bytes.length;
      Atomics.store(this.head, STATE, FULL);
      Atomics.notify(this.head, STATE);
      off += n;
    } while (off < bytes.length);
  }

  private async recvNow(): Promise<Uint8Array> {
    let out: Uint8Array | null = null;
    let off = 0;
    do {
      await this.waitFor(FULL);
      const n = this.head[LENGTH];
      out ??= new Uint8Array(this.head[TOTAL]);
      out.set(this.slot.subarray(0, n), off);
      off += n;
      Atomics.store(this.head, STATE, EMPTY);
      Atomics.notify(this.head, STATE);
    } while (off < out.length);
    return out;
  }

  private async waitFor(want: number): Promise<void> {
    for (;;) {
      if (Atomics.load(this.abort, 0) !== 0) throw new GroupAbortedError(`${this.label}: the group was stopped (a worker failed or the group was closed)`);
      const s = Atomics.load(this.head, STATE);
      if (s === want) return;
      const w = waitAsync(this.head, STATE, s, POLL_MS);
      if (w.async) await w.value;
    }
  }
}
