/**
 * Cancellation scope: work started under an AbortSignal (a notebook cell, a report) carries it through every
 * await, and each kernel launch checks it, so an interrupt stops an experiment's loop at its next op even when
 * the loop never looks at the signal itself.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

const scope = new AsyncLocalStorage<AbortSignal>();

export function withSignal<T>(signal: AbortSignal, fn: () => T): T {
  return scope.run(signal, fn);
}

/** The signal of the scope the caller runs in, if any. Long loops may also pass it on explicitly. */
export function currentSignal(): AbortSignal | undefined {
  return scope.getStore();
}

/** Throws the signal's reason (an AbortError by default) if the current scope was aborted. */
export function throwIfAborted(): void {
  scope.getStore()?.throwIfAborted();
}
