/**
 * The baseline a byte-level language model must beat: a byte n-gram model (trigram by default) with add-one
 * (Laplace) smoothing over the 256 byte values (Jurafsky & Martin, Speech and Language Processing, ch. 3):
 *   P(c | a, b) = (count(a, b, c) + 1) / (count(a, b) + 256),   count(a, b) = sum_c count(a, b, c),
 * so a context seen only at the very end of the training bytes (never followed by anything) counts 0.
 */
import { ServelabError } from '../errors.ts';

export const NUM_BYTES = 256;

export type NgramOrder = 1 | 2 | 3;

export interface NgramModel {
  /** 3 for a trigram: each byte is predicted from the order - 1 bytes before it. */
  order: NgramOrder;
  /** [256^order]: count of each (context..., next) byte tuple in the training bytes, context bytes most significant. */
  counts: Uint32Array;
  /** [256^(order - 1)]: how often each context is followed by a byte (the row sums of counts). */
  contextCounts: Uint32Array;
  /** The last order - 1 training bytes: the context of the first held-out bytes. */
  tail: Uint8Array;
}

export interface CrossEntropy {
  /** Mean -ln P(byte | context) over the scored bytes. */
  nats: number;
  /** nats / ln 2. */
  bitsPerByte: number;
  /** exp(nats). */
  perplexity: number;
  /** Bytes scored: every held-out byte. */
  count: number;
}

/** Counts every window of `order` consecutive training bytes: fitting 1.2 MB takes tens of milliseconds. */
export function fitNgram(train: Uint8Array, order: NgramOrder): NgramModel {
  if (order !== 1 && order !== 2 && order !== 3) throw new ServelabError(`fitNgram: order must be 1, 2 or 3, got ${order}`);
  const k = order - 1;
  if (train.length < order) throw new ServelabError(`fitNgram: an order-${order} model needs at least ${order} training bytes, got ${train.length}`);
  // 256^3 uint32 = 64 MiB for a trigram: dense counts make fitting and scoring a single pass of array reads.
  const counts = new Uint32Array(NUM_BYTES ** order);
  const contextCounts = new Uint32Array(NUM_BYTES ** k);
  for (let i = k; i < train.length; i++) {
    let ctx = 0;
    for (let j = i - k; j < i; j++) ctx = ctx * NUM_BYTES + train[j];
    counts[ctx * NUM_BYTES + train[i]]++;
    contextCounts[ctx]++;
  }
  return { order, counts, contextCounts, tail: train.slice(train.length - k) };
}

/** The add-one byte trigram on the training bytes. */
export function fitTrigram(train: Uint8Array): NgramModel {
  return fitNgram(train, 3);
}

/**
 * Scores every held-out byte from its order - 1 predecessors. Held-out bytes follow the training bytes in the text,
 * so the first ones take their context from the model's tail (the last training bytes): all heldOut.length bytes
 * are scored, none skipped.
 */
export function crossEntropy(model: NgramModel, heldOut: Uint8Array): CrossEntropy {
  if (heldOut.length === 0) throw new ServelabError('crossEntropy: no held-out bytes to score');
  const k = model.order - 1;
  const at = (i: number) => (i < 0 ? model.tail[k + i] : heldOut[i]);
  let sum = 0;
  for (let i = 0; i < heldOut.length; i++) {
    let ctx = 0;
    for (let j = i - k; j < i; j++) ctx = ctx * NUM_BYTES + at(j);
    const p = (model.counts[ctx * NUM_BYTES + heldOut[i]] + 1) / (model.contextCounts[ctx] + NUM_BYTES);
    sum -= Math.log(p);
  }
  const nats = sum / heldOut.length;
  return { nats, bitsPerByte: nats / Math.LN2, perplexity: Math.exp(nats), count: heldOut.length };
}
