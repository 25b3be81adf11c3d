/** The token-level pool on hand-traced traces: LightLLM's free stack hands out the slots freed last first, in any order. */
import { describe, expect, it } from 'vitest';
import { TokenPool } from '../../../engine/kv/token_pool.ts';
import { throwsKv } from './helpers.ts';

describe('TokenPool', () => {
  it('grows token tables slot by slot and reuses freed slots first, so a table need not be contiguous', () => {
    const p = new TokenPool(8);
    expect(p.allocate('a', 3)).toEqual([0, 1, 2]);
    expect(p.allocate('b', 2)).toEqual([3, 4]);
    expect(p.allocate('a', 1)).toEqual([5]); // a decode step
    expect(p.tokenTable('a')).toEqual([0, 1, 2, 5]);
    expect(p.numFree).toBe(2);
    p.free('a');
    expect(p.numFree).toBe(6);
    expect(p.allocate('c', 5)).toEqual([0, 1, 2, 5, 6]);
    expect(p.tokenTable('b')).toEqual([3, 4]);
    expect(p.has('a')).toBe(false);
    p.checkInvariants();
  });

  it('refuses an exhausted pool with nothing changed', () => {
    const p = new TokenPool(4);
    p.allocate('a', 3);
    expect(p.canAllocate(1)).toBe(true);
    expect(p.canAllocate(2)).toBe(false);
    throwsKv(() => p.allocate('b', 2), 'exhausted');
    throwsKv(() => p.allocate('a', 2), 'exhausted');
    expect(p.has('b')).toBe(false);
    expect(p.tokenTable('a')).toEqual([0, 1, 2]);
    expect(p.allocate('b', 1)).toEqual([3]);
    p.checkInvariants();
  });

  it('refuses a double free, whole call or nothing', () => {
    const p = new TokenPool(4);
    const s = p.allocateSlots(2);
    p.freeSlots([s[0]]);
    throwsKv(() => p.freeSlots([s[0]]), 'double-free');
    throwsKv(() => p.freeSlots([s[1], s[1]]), 'double-free');
    throwsKv(() => p.freeSlots([s[1], 9]), 'invalid-argument');
    expect(p.numFree).toBe(3);
    p.freeSlots([s[1]]);
    expect(p.numFree).toBe(4);
    throwsKv(() => p.free('nobody'), 'invalid-argument');
    p.checkInvariants();
  });

  it('refuses invalid sizes', () => {
    for (const n of [0, -1, 2.5, NaN]) throwsKv(() => new TokenPool(n), 'invalid-size');
    throwsKv(() => new TokenPool(2).allocate('a', -1), 'invalid-size');
  });

  it('truncate frees a table\'s tail; select keeps chosen slots after a point, in the order given (an accepted tree path)', () => {
    const p = new TokenPool(10);
    p.allocate('a', 3); // 0 1 2
    p.allocate('a', 5); // tree nodes 3..7
    p.select('a', 3, [0, 3, 4]);
    expect(p.tokenTable('a')).toEqual([0, 1, 2, 3, 6, 7]);
    expect(p.numFree).toBe(4);
    p.truncate('a', 4);
    expect([p.tokenTable('a'), p.numFree]).toEqual([[0, 1, 2, 3], 6]);
    throwsKv(() => p.select('a', 2, [0, 0]), 'invalid-argument');
    throwsKv(() => p.select('a', 2, [2]), 'invalid-argument');
    throwsKv(() => p.truncate('a', 5), 'invalid-argument');
    p.checkInvariants();
  });
});
