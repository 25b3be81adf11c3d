/** Contiguous regions placed first-fit: a freed region leaves a gap only an equal or smaller region can use. */
import { describe, expect, it } from 'vitest';
import { RegionPool } from '../../../engine/kv/region_pool.ts';
import { RadixSlots } from '../../../engine/kv/radix_slots.ts';
import { range, throwsKv } from './helpers.ts';

describe('RegionPool', () => {
  it('places regions first-fit and reports the gaps; free slots split across gaps do not make a region (external fragmentation)', () => {
    const p = new RegionPool(20);
    expect(p.allocate('a', 6)).toEqual({ offset: 0, length: 6 });
    expect(p.allocate('b', 8)).toEqual({ offset: 6, length: 8 });
    expect(p.allocate('c', 4)).toEqual({ offset: 14, length: 4 });
    p.free('a');
    expect(p.gaps()).toEqual([{ offset: 0, length: 6 }, { offset: 18, length: 2 }]);
    expect([p.numFree, p.canAllocate(7), p.canAllocate(6)]).toEqual([8, false, true]);
    const e = throwsKv(() => p.allocate('d', 7), 'exhausted');
    expect(e.message).toContain('external fragmentation');
    expect(p.allocate('d', 5)).toEqual({ offset: 0, length: 5 });
    throwsKv(() => p.allocate('d', 1), 'invalid-argument');
    throwsKv(() => p.free('a'), 'invalid-argument');
    throwsKv(() => new RegionPool(0), 'invalid-size');
    p.checkInvariants();
  });
});

describe('RadixSlots', () => {
  it('shares a cached prefix, frees duplicates when a request finishes, and evicts only what no running request holds', () => {
    const r = new RadixSlots(12);
    expect(r.admit('a', range(0, 6))).toBe(0);
    r.cacheUnfinished('a');
    expect(r.admit('b', [...range(0, 4), 9, 9])).toBe(4);
    expect(r.table('b').slice(0, 4)).toEqual(r.table('a').slice(0, 4));
    expect(r.heldSlots()).toBe(8);
    r.finish('a');
    r.finish('b');
    expect([r.heldSlots(), r.tree.numCachedTokens, r.numAvailable]).toEqual([0, 8, 12]);
    // 11 slots with 4 free: 7 must come from the tree, whose leaves ([4, 5] and [9, 9]) go before the prefix under them.
    expect(r.admit('c', range(20, 31))).toBe(0);
    expect(r.tree.numCachedTokens).toBe(0);
    throwsKv(() => r.admit('d', range(40, 43)), 'exhausted');
    r.abandon('c');
    expect(r.numAvailable).toBe(12);
    r.checkInvariants();
  });
});
