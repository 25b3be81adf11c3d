/** KV cache bookkeeping errors: a reason a scheduler can branch on (preempt on `exhausted`, reject on `too-long`). */
import { ServelabError } from '../errors.ts';

export type KvErrorReason =
  /** Fewer free blocks or slots than asked for: nothing was allocated; a scheduler may preempt and retry. */
  | 'exhausted'
  /** A block or slot freed more often than it was referenced. */
  | 'double-free'
  /** A pool, block or request size that is not a positive (or non-negative) integer. */
  | 'invalid-size'
  /** A sequence that would grow past the model's context (maxModelLen). */
  | 'too-long'
  /** An unknown or already present sequence, an id out of range, or a token id that is not a uint32. */
  | 'invalid-argument'
  /** Internal bookkeeping disagrees with itself: a bug, never a user error. */
  | 'invariant';

export class KvCacheError extends ServelabError {
  override name = 'KvCacheError';
  constructor(
    readonly op: string,
    readonly reason: KvErrorReason,
    detail: string,
  ) {
    super(`${op}: ${detail} (${reason})`);
  }
}

/** Throws a KvCacheError('invariant') when `cond` is false: bookkeeping bugs surface where they happen. */
export function invariant(cond: boolean, op: string, detail: string): asserts cond {
  if (!cond) throw new KvCacheError(op, 'invariant', detail);
}

export function checkCount(op: string, what: string, n: number, min: 0 | 1): void {
  if (!Number.isSafeInteger(n) || n < min) {
    throw new KvCacheError(op, 'invalid-size', `${what} must be ${min ? 'a positive' : 'a non-negative'} integer, got ${n}`);
  }
}
