/** The four slot layouts as bookkeeping alone: exact slots, counts and check/act answers on a 16-slot pool. */
import { describe, expect, it } from 'vitest';
import { BlockManager } from '../../../engine/kv/block_manager.ts';
import { RadixSlots } from '../../../engine/kv/radix_slots.ts';
import { RegionPool } from '../../../engine/kv/region_pool.ts';
import { ContiguousSlots, PagedSlots, RadixTokenSlots, TokenSlots, type StepWrites } from '../../../engine/kv/slot_layouts.ts';
import { TokenPool } from '../../../engine/kv/token_pool.ts';

const writes = (): StepWrites => ({ unwritten: new Set(), copies: [] });
const tokens = (n: number, from = 1) => Array.from({ length: n }, (_, i) => from + i);

describe('slot layouts', () => {
  it('contiguous: a region of maxSeqLen per sequence; what it does not use yet is reservation, small gaps are external', () => {
    const l = new ContiguousSlots(new RegionPool(16), 6);
    l.admit({ seq: 'a', tokens: tokens(2) }, true);
    l.admit({ seq: 'b', tokens: tokens(3) }, true);
    expect(l.slotTable('b', 3)).toEqual([6, 7, 8]);
    const lens = new Map([['a', 2], ['b', 3]]);
    // 16 slots: two regions of 6, a gap of 4 that no sequence of 6 fits.
    expect(l.counts(lens)).toEqual({ reserved: 12, used: 5, reservation: 7, external: 4, free: 4 });
    expect(l.canAdmit()).toBe(false);
    expect(l.fits([{ seq: 'a', tokens: [9] }], lens)).toBe(true);
    expect(l.fits([{ seq: 'c', tokens: [9] }], lens)).toBe(false);
    l.free('a');
    expect(l.canReserve([6])).toBe(true);
  });

  it('paged: blocks as tokens arrive; a shared full block is counted once and a fork copies on write', () => {
    const blocks = new BlockManager({ numBlocks: 4, blockSize: 4 });
    const l = new PagedSlots(blocks);
    const w = writes();
    expect(l.admit({ seq: 'a', tokens: tokens(6) }, true, w)).toEqual({ hit: 0, hashed: [0, 1] });
    expect(l.slotTable('a')).toEqual([0, 1, 2, 3, 4, 5]);
    expect([...w.unwritten]).toEqual([0, 1]);
    // A second prompt with the same first block hits it (once the first step's keys are written).
    expect(l.admit({ seq: 'b', tokens: [...tokens(4), 50, 51] }, true, writes())).toEqual({ hit: 4, hashed: [1] });
    const lens = new Map([['a', 6], ['b', 6]]);
    expect(l.counts(lens)).toEqual({ reserved: 12, used: 8, reservation: 0, external: 0, free: 4 });
    blocks.fork('a', 'c');
    const step = writes();
    l.admit({ seq: 'c', tokens: [99] }, false, step);
    // c's second block was a's: copied before c writes into it.
    expect(step.copies).toEqual([0, 1, 2, 3].map((i) => [4 + i, 12 + i]));
    l.abandon('b', [1]);
    expect(blocks.pool.numFree).toBe(1);
  });

  it('token: one slot a token; a cut frees exactly the slots past it', () => {
    const l = new TokenSlots(new TokenPool(16));
    l.admit({ seq: 'a', tokens: tokens(5) });
    l.admit({ seq: 'b', tokens: tokens(3) });
    expect(l.slotTable('b')).toHaveLength(3);
    l.cut('a', 2);
    expect(l.counts(new Map([['a', 2], ['b', 3]]))).toEqual({ reserved: 5, used: 5, reservation: 0, external: 0, free: 11 });
    expect(l.fits([{ seq: 'a', tokens: tokens(11) }])).toBe(true);
    expect(l.fits([{ seq: 'a', tokens: tokens(12) }])).toBe(false);
    expect(l.canAdmit('c', tokens(11))).toBe(true);
  });

  it('radix: a prompt prefix another request left behind is a hit, and counts toward what a step needs no more', () => {
    const l = new RadixTokenSlots(new RadixSlots(16));
    expect(l.admit({ seq: 'a', tokens: tokens(8) }, true).hit).toBe(0);
    l.written('a');
    l.free('a');
    const prompt = [...tokens(8), 42];
    expect(l.fits([{ seq: 'b', tokens: prompt }], new Map())).toBe(true);
    expect(l.admit({ seq: 'b', tokens: prompt }, true).hit).toBe(8);
    expect(l.counts().reserved).toBe(9);
  });
});
