/**
 * The shared memory of a worker group, made by the main thread and handed to every worker: the abort word, one
 * mailbox per ordered pair of ranks, and each rank's counters (memory by tag, bytes per collective), which the
 * worker writes and the main thread reads at any time, so live charts follow a step while it runs.
 */
import { MEMORY_TAGS, type BytesByTag, type MemoryTracker } from '../memory/tracker.ts';
import { Channel, channelsBytes } from './channel.ts';
import { COMM_STATS_WORDS } from './comm.ts';

export interface GroupMemory {
  control: SharedArrayBuffer;
  channels: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  size: number;
  capacity: number;
}

/** Per rank: live, peak, live by tag, peak by tag. */
const MEMORY_WORDS = 2 + 2 * MEMORY_TAGS.length;
const RANK_WORDS = MEMORY_WORDS + COMM_STATS_WORDS;

export interface WorkerMemory {
  live: number;
  peak: number;
  byTag: BytesByTag;
  peakByTag: BytesByTag;
}

export function allocateGroupMemory(size: number, capacity: number): GroupMemory {
  return {
    control: new SharedArrayBuffer(16),
    channels: new SharedArrayBuffer(channelsBytes(size * size, capacity)),
    stats: new SharedArrayBuffer(size * RANK_WORDS * 8),
    size,
    capacity,
  };
}

export const abortWord = (m: GroupMemory): Int32Array => new Int32Array(m.control, 0, 1);

/** The mailbox from rank `src` to rank `dst`. */
export const channel = (m: GroupMemory, src: number, dst: number): Channel => new Channel(m.channels, src * m.size + dst, m.capacity, abortWord(m), `mailbox ${src} -> ${dst}`);

/** Stops every pending collective of the group: sets the abort word and wakes every mailbox. */
export function abortGroup(m: GroupMemory): void {
  Atomics.store(abortWord(m), 0, 1);
  for (let s = 0; s < m.size; s++) for (let d = 0; d < m.size; d++) if (s !== d) channel(m, s, d).wake();
}

export const commWords = (m: GroupMemory, rank: number): Float64Array => new Float64Array(m.stats, (rank * RANK_WORDS + MEMORY_WORDS) * 8, COMM_STATS_WORDS);
const memoryWords = (m: GroupMemory, rank: number): Float64Array => new Float64Array(m.stats, rank * RANK_WORDS * 8, MEMORY_WORDS);

/** Copies a tracker's figures into rank's words (the worker does it whenever its memory changes). */
export function writeMemory(m: GroupMemory, rank: number, tracker: MemoryTracker): void {
  const w = memoryWords(m, rank);
  const live = tracker.liveByTag();
  const peak = tracker.peakByTag();
  w[0] = tracker.live;
  w[1] = tracker.peak;
  MEMORY_TAGS.forEach((t, i) => {
    w[2 + i] = live[t];
    w[2 + MEMORY_TAGS.length + i] = peak[t];
  });
}

export function readMemory(m: GroupMemory, rank: number): WorkerMemory {
  const w = memoryWords(m, rank);
  const tags = (off: number) => Object.fromEntries(MEMORY_TAGS.map((t, i) => [t, w[off + i]])) as BytesByTag;
  return { live: w[0], peak: w[1], byTag: tags(2), peakByTag: tags(2 + MEMORY_TAGS.length) };
}
