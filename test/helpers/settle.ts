/**
 * Lets tensors that earlier tests dropped without disposing be freed by their finalizers: a full collection, then a
 * turn of the event loop for the finalization callbacks. In a collecting process (vitest runs with --expose-gc) the
 * compile cache collects while it measures a new session, so a test that compares the tracker across a first run
 * settles first, or it may count another test's frees.
 */
export async function settle(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((r) => setImmediate(r));
  gc?.();
  await new Promise((r) => setImmediate(r));
}
