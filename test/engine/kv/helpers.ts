/** Shared by the KV bookkeeping tests: a call must fail with a KvCacheError of the given reason. */
import { expect } from 'vitest';
import { KvCacheError, type KvErrorReason } from '../../../engine/kv/errors.ts';
import { ServelabError } from '../../../engine/errors.ts';

export function throwsKv(f: () => unknown, reason: KvErrorReason): KvCacheError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(KvCacheError);
    expect(e).toBeInstanceOf(ServelabError);
    expect((e as KvCacheError).reason).toBe(reason);
    return e as KvCacheError;
  }
  throw new Error(`expected a KvCacheError (${reason})`);
}

export const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
