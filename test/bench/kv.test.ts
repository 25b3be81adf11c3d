/**
 * The KV cache benchmark: the two attentions it times compute the same thing (paged over a scattered pool against the
 * static cache's GroupQueryAttention, fp32: within 1e-6 of each other, as are the reference backend's), the memory rows
 * count exactly the slots worked out by hand for a small batch, and a missed target names its worst case.
 */
import { describe, expect, it } from 'vitest';
import { createDevice } from '../../engine/index.ts';
import { kvTargets, type KvBench, type PairRow } from '../../bench/kv.ts';
import { attentionPair } from '../../bench/kv_attention.ts';
import { fits, usage, type UsageRow } from '../../bench/kv_memory.ts';

const shape = { Hq: 4, Hkv: 2, D: 16, maxSeq: 64 };

describe('kv benchmark', () => {
  it('paged attention over blocks scattered through the pool gives the static cache attention, on cpu and reference', async () => {
    for (const kind of ['cpu', 'reference']) {
      const dev = await createDevice(kind);
      for (const [B, L] of [[1, 1], [3, 17], [2, 64]]) {
        const pair = await attentionPair(dev, shape, B, L, 7);
        expect(pair.diff, `${kind} B=${B} L=${L}`).toBeLessThanOrEqual(1e-6);
        // Both stay runnable (the contiguous cache is donated and carried from run to run).
        await pair.contiguous();
        await pair.paged();
        pair.dispose();
      }
      expect(dev.memory.liveByTag().kv).toBe(0);
      await dev.dispose();
    }
  });

  it('the memory rows count the slots of each layout exactly', async () => {
    const dev = await createDevice('cpu');
    const batch = [
      { length: 20, finalLength: 40 },
      { length: 1, finalLength: 5 },
      { length: 33, finalLength: 33 },
    ];
    const rows: Record<string, UsageRow> = {};
    for (const l of ['contiguous', 'paged', 'token'] as const) rows[l] = await usage(dev, batch, l, 2);
    // Regions of 2048 each; blocks of 16: 2 + 1 + 3; slots: one per token.
    expect([rows.contiguous.reservedSlots, rows.paged.reservedSlots, rows.token.reservedSlots]).toEqual([3 * 2048, 6 * 16, 54]);
    for (const r of Object.values(rows)) {
      expect(r.usedSlots).toBe(54);
      expect(r.usedShare).toBeCloseTo(54 / r.reservedSlots, 12);
      expect(r.agrees).toBe(true);
      expect(r.presetReservedGiB).toBeCloseTo((2 * r.reservedSlots) / 2 ** 30, 15);
    }
    expect([rows.contiguous.reservation, rows.paged.internalFragmentation, rows.token.internalFragmentation]).toEqual([3 * 2048 - 54, 96 - 54, 0]);
    // A pool of 100 slots (paged: 6 blocks): no region of 2048; blocks 2 + 1 + 3 now, 3 + 1 + 3 to the final lengths
    // (the third does not fit); slots 54 now, 78 to the end.
    const fit = async (l: 'contiguous' | 'paged' | 'token', toFinish: boolean) => fits(dev, batch, l, 100, toFinish);
    expect([await fit('contiguous', false), await fit('paged', false), await fit('token', false)]).toEqual([0, 3, 3]);
    expect([await fit('paged', true), await fit('token', true)]).toEqual([2, 3]);
    await dev.dispose();
  });

  it('names the worst cell of a missed ratio target', () => {
    const row = (batch: number, length: number, median: number): PairRow => ({
      batch, length, contiguous: { ms: 1, q1Ms: 1, q3Ms: 1, runs: 5 }, paged: { ms: median, q1Ms: median, q3Ms: median, runs: 5 },
      ratio: { median, q1: median - 0.1, q3: median + 0.1, low: median - 0.2, high: median + 0.2, turns: 4 }, maxAbsDiff: 0,
    });
    const usageRow = (layout: 'contiguous' | 'paged' | 'token', usedShare: number) => ({
      layout, usedShare, reservedSlots: 1, usedSlots: 1, reservation: 0, internalFragmentation: 0, externalFragmentation: 0, kvWasteShare: usedShare, agrees: true, presetReservedGiB: 0,
    });
    const k = {
      attention: { rows: [row(1, 64, 0.9), row(32, 240, 1.4)] },
      profile: null,
      step: { rows: [row(1, 64, 1.1)] },
      memory: { maxSeqLen: 2048, blockSize: 16, rows: [usageRow('contiguous', 0.3), usageRow('paged', 0.95), usageRow('token', 1)], context: [] },
    } as unknown as KvBench;
    const t = Object.fromEntries(kvTargets(k).map((x) => [x.name.split(' ').slice(0, 3).join(' '), x]));
    expect(t['paged attention alone']).toMatchObject({ met: false, measured: '1x64 0.90 (0.80-1.00), 32x240 1.40 (1.30-1.50)', gap: 'B=32 L=240: 25 points over' });
    expect(t['a decode step'].met).toBe(true);
    expect(t['contiguous KV memory'].met).toBe(true);
    expect(t['paged KV memory'].met).toBe(false);
    expect(t['token-level KV memory'].met).toBe(true);
  });
});
