/** The radix prefix cache on hand-traced traces: edge splits, matched slot ids, locks, and LRU leaf eviction order (SGLang). */
import { describe, expect, it } from 'vitest';
import { RadixCache } from '../../../engine/kv/radix_cache.ts';
import { TokenPool } from '../../../engine/kv/token_pool.ts';
import { range, throwsKv } from './helpers.ts';

describe('RadixCache', () => {
  it('shares a common prefix, splits edges where requests diverge, and evicts unlocked leaves oldest first', () => {
    const c = new RadixCache();
    expect(c.insert([1, 2, 3, 4], [10, 11, 12, 13])).toBe(0);
    expect(c.insert([1, 2, 5, 6], [20, 21, 22, 23])).toBe(2); // [1, 2] was cached: the caller frees its 20, 21
    expect(c.numCachedTokens).toBe(6);

    const m = c.matchPrefix([1, 2, 3, 9]);
    expect(m.length).toBe(3);
    expect(m.values).toEqual([10, 11, 12]);
    expect(m.node.key).toEqual([3]); // [3, 4] was split so the match ends at a node
    expect(c.matchPrefix([7])).toMatchObject({ length: 0, values: [] });
    c.checkInvariants();

    c.lock(m.node); // protects [1, 2] and [3]
    expect([c.protectedSize, c.evictableSize]).toEqual([3, 3]);
    expect(c.evict(1)).toEqual([13]); // leaf [4], last used by the first insert
    expect(c.evict(10)).toEqual([22, 23]); // leaf [5, 6]; [1, 2] above it is locked
    expect([c.numCachedTokens, c.evictableSize]).toEqual([3, 0]);
    expect(c.evict(10)).toEqual([]);

    c.unlock(m.node);
    expect(c.evictableSize).toBe(3);
    c.lock(m.node);
    c.unlock(m.node);
    throwsKv(() => c.unlock(m.node), 'double-free');
    expect(c.evict(100)).toEqual([12, 10, 11]); // the leaf, then its parent once childless
    expect(c.numCachedTokens).toBe(0);
    throwsKv(() => c.lock(m.node), 'invalid-argument'); // a stale handle
    c.checkInvariants();
  });

  it('evicts in least-recently-used order: a match refreshes a leaf', () => {
    const c = new RadixCache();
    c.insert([1], [100]);
    c.insert([2], [200]);
    c.insert([3], [300]);
    c.matchPrefix([1, 5]);
    expect([c.evict(1), c.evict(1), c.evict(1)]).toEqual([[200], [300], [100]]);
  });

  it('with pages of 4 tokens matches and splits only at page boundaries (one block id per page)', () => {
    const c = new RadixCache(4);
    expect(c.insert(range(0, 12), [7, 8, 9])).toBe(0);
    expect(c.matchPrefix([0, 1, 2, 3, 99, 5, 6, 7])).toMatchObject({ length: 4, values: [7] });
    expect(c.matchPrefix(range(0, 10))).toMatchObject({ length: 8, values: [7, 8] }); // the partial third page does not count
    expect(c.insert([0, 1, 2, 3, 50, 51, 52, 53], [70, 71])).toBe(4);
    expect(c.numCachedTokens).toBe(16);
    throwsKv(() => c.insert(range(0, 6), [1]), 'invalid-argument');
    c.checkInvariants();
    throwsKv(() => new RadixCache(0), 'invalid-size');
  });

  it('refuses handles from another cache', () => {
    const a = new RadixCache();
    const b = new RadixCache();
    a.insert([1], [1]);
    throwsKv(() => b.lock(a.matchPrefix([1]).node), 'invalid-argument');
    throwsKv(() => b.lock({ id: 1, key: [], value: [], lockRef: 0, lastAccess: 0 }), 'invalid-argument');
  });

  it('over a token pool: a second request reuses the first one\'s slots, eviction returns slots to the pool', () => {
    const pool = new TokenPool(8);
    const cache = new RadixCache();
    const r1 = [5, 6, 7, 8, 9, 10]; // prompt and decoded tokens
    const s1 = pool.allocateSlots(r1.length);
    expect(cache.insert(r1, s1)).toBe(0); // finished: the tree now owns slots 0..5

    const m = cache.matchPrefix([5, 6, 7, 8, 11]);
    expect(m.values).toEqual([0, 1, 2, 3]);
    cache.lock(m.node);
    expect(pool.canAllocate(3)).toBe(false);
    pool.freeSlots(cache.evict(3 - pool.numFree)); // leaf [9, 10] is unlocked
    const own = pool.allocateSlots(3);
    expect(own).toEqual([4, 5, 6]);
    expect(cache.insert([5, 6, 7, 8, 11, 12, 13], [...m.values, ...own])).toBe(4);
    cache.unlock(m.node);
    expect(cache.numCachedTokens).toBe(7);
    expect(pool.numFree).toBe(1);
    cache.checkInvariants();
    pool.checkInvariants();
  });
});
