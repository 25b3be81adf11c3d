/** The paged block manager on hand-traced scenarios: exact block tables, prefix hits by chained hash, copy-on-write, eviction order. */
import { describe, expect, it } from 'vitest';
import { BlockManager, hashBlock } from '../../../engine/kv/block_manager.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { range, throwsKv } from './helpers.ts';

const state = (m: BlockManager) => ({
  free: m.pool.freeBlockIds(),
  refs: range(0, m.pool.numBlocks).map((b) => m.pool.refCount(b)),
  hashes: range(0, m.pool.numBlocks).map((b) => m.pool.blockHash(b)),
});

describe('hashBlock', () => {
  it('equals sha256(parent hex || tokens as uint32 LE)[:16] computed by Python hashlib', () => {
    // python3: h0 = sha256(struct.pack('<16I', *range(16))).hexdigest()[:16]
    //          h1 = sha256(h0.encode() + struct.pack('<16I', *range(16, 32))).hexdigest()[:16]
    const h0 = hashBlock(null, range(0, 16));
    expect(h0).toBe('5d85718ec594b982');
    expect(hashBlock(h0, range(16, 32))).toBe('1ba2ea06776addc7');
    expect(hashBlock('0000000000000000', range(16, 32))).not.toBe('1ba2ea06776addc7'); // the parent is part of the name
  });
});

describe('BlockManager: prefix caching', () => {
  it('shares the leading full blocks two prompts have in common, then diverges', () => {
    const m = new BlockManager({ numBlocks: 8 });
    const A = range(0, 40);
    expect(m.allocate('A', A)).toEqual([0, 1, 2]);
    expect(m.numCachedTokens('A')).toBe(0);
    expect([m.pool.blockHash(0), m.pool.blockHash(1), m.pool.blockHash(2)]).toEqual(['5d85718ec594b982', '1ba2ea06776addc7', null]);

    const B = [...range(0, 32), ...range(100, 113)]; // 2 full blocks of A, then its own 13 tokens
    expect(m.canAllocate('B', B)).toBe(true);
    expect(m.allocate('B', B)).toEqual([0, 1, 3]);
    expect(m.numCachedTokens('B')).toBe(32);
    expect(range(0, 4).map((b) => m.pool.refCount(b))).toEqual([2, 2, 1, 1]);
    expect(m.pool.blockHash(3)).toBeNull(); // 13 tokens: not full, not cached

    const C = [...range(0, 16), ...range(200, 220)]; // diverges inside the second block: one hit
    expect(m.allocate('C', C)).toEqual([0, 4, 5]);
    expect(m.numCachedTokens('C')).toBe(16);
    expect(m.pool.blockHash(4)).toBe(hashBlock('5d85718ec594b982', range(200, 216)));

    const D = [999, ...range(1, 32)]; // the same second block after another first block: no hit (chained)
    expect(m.allocate('D', D)).toEqual([6, 7]);
    expect(m.numCachedTokens('D')).toBe(0);
    expect(m.pool.blockHash(7)).not.toBe('1ba2ea06776addc7');
    expect(m.pool.numFree).toBe(0);

    m.free('A'); // last block first: 2 reaches 0, 1 and 0 stay referenced
    expect(m.pool.freeBlockIds()).toEqual([2]);
    m.free('B');
    expect(m.pool.freeBlockIds()).toEqual([2, 3, 1]);
    expect(m.pool.refCount(0)).toBe(1);

    // A again: block 0 (held by C) and block 1 (freed, still cached) are hit; one block more is allocated.
    expect(m.canAllocate('E', 40)).toBe(true);
    expect(m.canAllocate('E', A)).toBe(true);
    expect(m.allocate('E', A)).toEqual([0, 1, 2]);
    expect(m.numCachedTokens('E')).toBe(32);
    expect(m.pool.freeBlockIds()).toEqual([3]);
    m.checkInvariants();
  });

  it('always computes the last prompt token: an identical block-aligned prompt hits all but its last block', () => {
    const m = new BlockManager({ numBlocks: 4 });
    expect(m.allocate('A', range(0, 32))).toEqual([0, 1]);
    expect(m.allocate('B', range(0, 32))).toEqual([0, 2]);
    expect(m.numCachedTokens('B')).toBe(16);
    expect(m.pool.blockHash(2)).toBeNull(); // a duplicate of block 1: the first holder keeps the hash
    m.checkInvariants();
  });

  it('evicts freed cached blocks in the order they were freed, and a refused prompt changes nothing', () => {
    const m = new BlockManager({ numBlocks: 4 });
    const Bt = range(50, 82);
    expect(m.allocate('A', range(0, 32))).toEqual([0, 1]);
    expect(m.allocate('B', Bt)).toEqual([2, 3]);
    m.free('A');
    m.free('B');
    expect(m.pool.freeBlockIds()).toEqual([1, 0, 3, 2]);
    expect(m.pool.numCachedBlocks).toBe(4);

    expect(m.allocate('C', range(500, 517))).toEqual([1, 0]); // A's blocks go first
    expect(m.pool.cachedBlock('5d85718ec594b982')).toBeUndefined();
    expect(m.pool.cachedBlock(hashBlock(null, range(50, 66)))).toBe(2);

    const before = state(m);
    const B2 = [...Bt, 7]; // hits 2 and 3 (both from the free queue) and needs a third block: 3 > 2 free
    expect(m.canAllocate('B2', B2)).toBe(false);
    expect(m.canAllocate('B2', B2.length)).toBe(false);
    throwsKv(() => m.allocate('B2', B2), 'exhausted');
    expect(state(m)).toEqual(before);
    expect(m.has('B2')).toBe(false);

    const B3 = [...range(50, 66), 1, 2, 3, 4, 5]; // hits block 2; its new block evicts B's second block
    expect(m.allocate('B3', B3)).toEqual([2, 3]);
    expect(m.numCachedTokens('B3')).toBe(16);
    expect(m.pool.cachedBlock(hashBlock(hashBlock(null, range(50, 66)), range(66, 82)))).toBeUndefined();
    m.checkInvariants();
  });

  it('without prefix caching every prompt gets its own blocks', () => {
    const m = new BlockManager({ numBlocks: 4, prefixCaching: false });
    expect(m.allocate('A', range(0, 31))).toEqual([0, 1]);
    expect(m.allocate('B', range(0, 32))).toEqual([2, 3]);
    m.append('A', 31); // fills block 1
    expect(m.pool.numCachedBlocks).toBe(0);
    expect(range(0, 4).map((b) => m.pool.blockHash(b))).toEqual([null, null, null, null]);
  });
});

describe('BlockManager: decoding', () => {
  it('append fills the last block, hashes it when full, then opens a new one', () => {
    const m = new BlockManager({ numBlocks: 3 });
    expect(m.allocate('s', range(0, 15))).toEqual([0]);
    expect(m.pool.blockHash(0)).toBeNull();
    expect(m.canAppend('s')).toBe(true);
    expect(m.append('s', 15)).toEqual({ slot: 15, copy: null });
    expect(m.blockTable('s')).toEqual([0]);
    expect(m.pool.blockHash(0)).toBe('5d85718ec594b982');
    expect(m.append('s', 16)).toEqual({ slot: 16, copy: null });
    expect(m.append('s', 17)).toEqual({ slot: 17, copy: null });
    expect(m.blockTable('s')).toEqual([0, 1]);
    expect(m.slotMapping('s', 14)).toEqual([14, 15, 16, 17]);
    m.checkInvariants();
  });

  it('a full pool refuses the next block with nothing changed', () => {
    const m = new BlockManager({ numBlocks: 2, blockSize: 4 });
    m.allocate('s', range(0, 8));
    expect(m.canAppend('s')).toBe(false);
    const before = state(m);
    throwsKv(() => m.append('s', 8), 'exhausted');
    expect(state(m)).toEqual(before);
    expect(m.numTokens('s')).toBe(8);
  });

  it('fork shares every block; the first write to a shared partial block copies it (copy-on-write)', () => {
    const m = new BlockManager({ numBlocks: 8 });
    expect(m.allocate('A', range(0, 20))).toEqual([0, 1]);
    m.fork('A', 'B');
    expect(m.blockTable('B')).toEqual([0, 1]);
    expect([m.pool.refCount(0), m.pool.refCount(1)]).toEqual([2, 2]);

    expect(m.canAppend('A')).toBe(true);
    expect(m.append('A', 20)).toEqual({ slot: 2 * 16 + 4, copy: { src: 1, dst: 2 } });
    expect(m.blockTable('A')).toEqual([0, 2]);
    expect([m.pool.refCount(0), m.pool.refCount(1), m.pool.refCount(2)]).toEqual([2, 1, 1]);
    expect(m.append('B', 21)).toEqual({ slot: 20, copy: null }); // B is now the only holder of block 1
    expect(m.slotMapping('A', 16)).toEqual([32, 33, 34, 35, 36]);
    expect(m.slotMapping('B', 16)).toEqual([16, 17, 18, 19, 20]);

    // Forked at a block boundary: each sequence opens its own next block, nothing to copy.
    expect(m.allocate('C', range(300, 332))).toEqual([3, 4]);
    m.fork('C', 'D');
    expect(m.append('C', 1)).toEqual({ slot: 5 * 16, copy: null });
    expect(m.append('D', 2)).toEqual({ slot: 6 * 16, copy: null });
    expect([m.pool.refCount(3), m.pool.refCount(4)]).toEqual([2, 2]);

    // Beam search drops a beam: only its references go.
    m.free('A');
    expect([m.pool.refCount(0), m.pool.refCount(2)]).toEqual([1, 0]);
    expect(m.pool.freeBlockIds()).toEqual([7, 2]);
    m.checkInvariants();
  });

  it('copy-on-write without a free block is refused with nothing changed', () => {
    const m = new BlockManager({ numBlocks: 2 });
    m.allocate('A', range(0, 20));
    m.fork('A', 'B');
    expect(m.canAppend('A')).toBe(false);
    const before = state(m);
    throwsKv(() => m.append('A', 20), 'exhausted');
    expect(state(m)).toEqual(before);
    m.free('B');
    expect(m.append('A', 20)).toEqual({ slot: 20, copy: null });
  });
});

describe('BlockManager: bad input', () => {
  it('refuses a sequence longer than maxModelLen, at allocation and at append', () => {
    const m = new BlockManager({ numBlocks: 8, maxModelLen: 32 });
    throwsKv(() => m.canAllocate('x', 33), 'too-long');
    throwsKv(() => m.allocate('x', range(0, 33)), 'too-long');
    expect(m.pool.numFree).toBe(8);
    m.allocate('x', range(0, 32));
    throwsKv(() => m.canAppend('x'), 'too-long');
    throwsKv(() => m.append('x', 1), 'too-long');
    expect(m.numTokens('x')).toBe(32);
    throwsKv(() => new BlockManager({ numBlocks: 8, maxModelLen: 0 }), 'invalid-size');
    throwsKv(() => new BlockManager({ numBlocks: 8, blockSize: 0 }), 'invalid-size');
  });

  it('refuses unknown and duplicate sequences, empty prompts and bad token ids, allocating nothing', () => {
    const m = new BlockManager({ numBlocks: 4 });
    m.allocate('a', [1, 2, 3]);
    throwsKv(() => m.allocate('a', [1]), 'invalid-argument');
    throwsKv(() => m.fork('a', 'a'), 'invalid-argument');
    for (const f of [() => m.append('zz', 1), () => m.free('zz'), () => m.blockTable('zz'), () => m.fork('zz', 'b'), () => m.canAppend('zz')]) {
      throwsKv(f, 'invalid-argument');
    }
    throwsKv(() => m.allocate('b', []), 'invalid-size');
    throwsKv(() => m.canAllocate('b', 0), 'invalid-size');
    throwsKv(() => m.allocate('b', [1, -1]), 'invalid-argument');
    throwsKv(() => m.allocate('b', [1, 2.5]), 'invalid-argument');
    throwsKv(() => m.append('a', 2 ** 32), 'invalid-argument');
    expect(m.pool.numFree).toBe(3);
    expect(m.numTokens('a')).toBe(3);
    m.checkInvariants();
  });
});

describe('BlockManager: seeded random workload', () => {
  it('every check agrees with its act, and ref counts equal table membership after each step', () => {
    const rng = new Rng(9);
    const m = new BlockManager({ numBlocks: 24, blockSize: 4, maxModelLen: 64 });
    const prefixes = [range(0, 8), range(100, 112), [7, 7, 7, 7]];
    const live: number[] = [];
    let next = 0;
    let hits = 0;
    for (let step = 0; step < 3000; step++) {
      const r = rng.uniformInt(10);
      if (r < 3 || live.length === 0) {
        const p = prefixes[rng.uniformInt(prefixes.length)];
        const tokens = [...p, ...range(0, rng.uniformInt(10)).map(() => rng.uniformInt(3))];
        const id = next++;
        if (m.canAllocate(id, tokens)) {
          m.allocate(id, tokens);
          hits += m.numCachedTokens(id);
          live.push(id);
        } else throwsKv(() => m.allocate(id, tokens), 'exhausted');
      } else if (r < 7) {
        const id = live[rng.uniformInt(live.length)];
        if (m.numTokens(id) === 64) continue;
        if (m.canAppend(id)) m.append(id, rng.uniformInt(3));
        else throwsKv(() => m.append(id, 0), 'exhausted');
      } else if (r < 8) {
        const id = next++;
        m.fork(live[rng.uniformInt(live.length)], id);
        live.push(id);
      } else {
        m.free(live.splice(rng.uniformInt(live.length), 1)[0]);
      }
      m.checkInvariants();
    }
    expect(hits).toBeGreaterThan(0);
  });

  it('truncate frees the blocks past the kept tokens and unhashes a block left partly filled, so no prefix lookup finds stale keys', () => {
    const m = new BlockManager({ numBlocks: 8, blockSize: 4 });
    m.allocate('a', range(0, 10)); // blocks 0, 1 full (hashed), 2 holds 2
    m.append('a', 10);
    m.append('a', 11); // block 2 full and hashed
    expect(m.blockTable('a')).toEqual([0, 1, 2]);
    m.truncate('a', 6);
    expect([m.numTokens('a'), m.blockTable('a')]).toEqual([6, [0, 1]]);
    // Block 1 now holds 2 of its 4 tokens: its hash is gone, block 2's too (freed, contents dropped from the cache).
    expect([m.pool.blockHash(0) !== null, m.pool.blockHash(1), m.pool.numFree]).toEqual([true, null, 6]);
    m.allocate('b', range(0, 9));
    expect(m.numCachedTokens('b')).toBe(4);
    throwsKv(() => m.truncate('a', 7), 'invalid-argument');
    m.checkInvariants();
  });
});
