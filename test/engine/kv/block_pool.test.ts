/** The block pool against hand-traced vLLM v1 semantics: exact block ids, ref counts, free-queue order and eviction of cached blocks. */
import { describe, expect, it } from 'vitest';
import { BlockPool } from '../../../engine/kv/block_pool.ts';
import { throwsKv } from './helpers.ts';

/** Everything observable, to show a refused call changed nothing. */
function snapshot(p: BlockPool) {
  return {
    free: p.freeBlockIds(),
    refs: Array.from({ length: p.numBlocks }, (_, b) => p.refCount(b)),
    hashes: Array.from({ length: p.numBlocks }, (_, b) => p.blockHash(b)),
  };
}

describe('BlockPool', () => {
  it('allocates from the front of the free queue and returns freed blocks to its back', () => {
    const p = new BlockPool(4);
    expect(p.blockSize).toBe(16);
    expect(p.freeBlockIds()).toEqual([0, 1, 2, 3]);
    expect(p.allocate(2)).toEqual([0, 1]);
    expect([p.refCount(0), p.refCount(1), p.refCount(2)]).toEqual([1, 1, 0]);
    expect(p.numFree).toBe(2);
    p.free([1, 0]);
    expect(p.freeBlockIds()).toEqual([2, 3, 1, 0]);
    expect(p.allocate(3)).toEqual([2, 3, 1]);
    expect(p.freeBlockIds()).toEqual([0]);
    p.checkInvariants();
  });

  it('a shared block returns to the queue only when its last reference is dropped', () => {
    const p = new BlockPool(3, 4);
    const [b] = p.allocate(1);
    p.touch([b, b]);
    expect(p.refCount(b)).toBe(3);
    p.free([b]);
    p.free([b]);
    expect(p.freeBlockIds()).toEqual([1, 2]);
    p.free([b]);
    expect(p.freeBlockIds()).toEqual([1, 2, 0]);
    p.checkInvariants();
  });

  it('keeps freed blocks cached until taken: a hit leaves the middle of the queue, eviction goes least recently freed first', () => {
    const p = new BlockPool(4);
    expect(p.allocate(3)).toEqual([0, 1, 2]);
    expect([p.cacheBlock(0, 'h0'), p.cacheBlock(1, 'h1'), p.cacheBlock(2, 'h2')]).toEqual([true, true, true]);
    p.free([2, 1, 0]);
    expect(p.freeBlockIds()).toEqual([3, 2, 1, 0]);
    expect(p.numCachedBlocks).toBe(3);
    expect(p.cachedBlock('h1')).toBe(1);

    p.touch([1]); // a prefix hit on a freed block
    expect(p.refCount(1)).toBe(1);
    expect(p.freeBlockIds()).toEqual([3, 2, 0]);

    expect(p.allocate(2)).toEqual([3, 2]); // block 2 is evicted: its hash goes
    expect(p.cachedBlock('h2')).toBeUndefined();
    expect(p.blockHash(2)).toBeNull();
    expect(p.cachedBlock('h0')).toBe(0);
    expect(p.cachedBlock('h1')).toBe(1);
    expect(p.numCachedBlocks).toBe(2);
    p.checkInvariants();
  });

  it('one block per hash: a second block with the same hash stays uncached', () => {
    const p = new BlockPool(2);
    p.allocate(2);
    expect(p.cacheBlock(0, 'same')).toBe(true);
    expect(p.cacheBlock(0, 'same')).toBe(true);
    expect(p.cacheBlock(1, 'same')).toBe(false);
    expect(p.blockHash(1)).toBeNull();
    expect(p.cachedBlock('same')).toBe(0);
    throwsKv(() => p.cacheBlock(0, 'other'), 'invalid-argument');
    p.checkInvariants();
  });

  it('refuses an exhausted pool with nothing changed', () => {
    const p = new BlockPool(4);
    p.allocate(3);
    p.cacheBlock(1, 'h');
    const before = snapshot(p);
    expect(p.canAllocate(1)).toBe(true);
    expect(p.canAllocate(2)).toBe(false);
    const e = throwsKv(() => p.allocate(2), 'exhausted');
    expect(e.message).toContain('asked for 2 blocks with 1 of 4 free');
    expect(snapshot(p)).toEqual(before);
    expect(p.allocate(0)).toEqual([]);
  });

  it('refuses a double free, whole call or nothing', () => {
    const p = new BlockPool(4);
    p.allocate(2);
    p.free([0]);
    throwsKv(() => p.free([0]), 'double-free');
    const before = snapshot(p);
    throwsKv(() => p.free([1, 1]), 'double-free'); // ref count 1, two drops
    throwsKv(() => p.free([1, 7]), 'invalid-argument');
    expect(snapshot(p)).toEqual(before);
    p.checkInvariants();
  });

  it('refuses to touch a free block that holds no cached prefix, and ids out of range', () => {
    const p = new BlockPool(2);
    throwsKv(() => p.touch([0]), 'invalid-argument');
    throwsKv(() => p.refCount(2), 'invalid-argument');
    throwsKv(() => p.refCount(-1), 'invalid-argument');
    throwsKv(() => p.cacheBlock(1, 'h'), 'invalid-argument'); // free blocks hold no tokens to cache
    expect(p.freeBlockIds()).toEqual([0, 1]);
  });

  it('refuses invalid pool and block sizes', () => {
    for (const [n, b] of [[0, 16], [-1, 16], [1.5, 16], [4, 0], [4, -16], [4, 2.5], [NaN, 16]]) {
      throwsKv(() => new BlockPool(n, b), 'invalid-size');
    }
    throwsKv(() => new BlockPool(2).allocate(-1), 'invalid-size');
    expect(new BlockPool(1, 1).blockSize).toBe(1);
  });
});
