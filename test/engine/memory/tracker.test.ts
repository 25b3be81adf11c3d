import { describe, expect, it } from 'vitest';
import { MemoryTracker, OutOfMemoryError } from '../../../engine/index.ts';

describe('MemoryTracker', () => {
  it('counts live and peak bytes by tag across allocations and frees', () => {
    const m = new MemoryTracker('t');
    const w = m.allocate(1000, 'weights');
    const kv = m.allocate(300, 'kv');
    const act = m.allocate(500, 'activations');
    expect(m.live).toBe(1800);
    m.free(act);
    m.allocate(200, 'activations');
    expect(m.live).toBe(1500);
    expect(m.peak).toBe(1800);
    expect(m.liveByTag()).toMatchObject({ weights: 1000, kv: 300, activations: 200 });
    expect(m.peakByTag()).toMatchObject({ weights: 1000, kv: 300, activations: 500 });
    m.free(w);
    m.free(w); // idempotent
    m.free(kv);
    expect(m.live).toBe(200);
    expect(m.count).toBe(1);
  });

  it('refuses an allocation over budget with a typed error and records nothing', () => {
    const m = new MemoryTracker('gpu0', { budget: 1024 });
    m.allocate(1000, 'weights');
    let err: unknown;
    try {
      m.allocate(100, 'kv');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OutOfMemoryError);
    const oom = err as OutOfMemoryError;
    expect([oom.requestedBytes, oom.liveBytes, oom.budgetBytes, oom.device, oom.tag]).toEqual([100, 1000, 1024, 'gpu0', 'kv']);
    expect(oom.message).toMatch(/requested 100 B \(kv\) with 1000 B live and a budget of 1.00 KiB/);
    expect(m.live).toBe(1000);
    expect(m.liveByTag().kv).toBe(0);
    expect(m.canAllocate(24)).toBe(true);
    m.allocate(24, 'kv');
    expect(m.live).toBe(1024);
  });

  it('retags an allocation without changing the total', () => {
    const m = new MemoryTracker('t');
    const a = m.allocate(64, 'activations');
    m.retag(a, 'kv');
    expect(m.liveByTag()).toMatchObject({ activations: 0, kv: 64 });
    expect(m.live).toBe(64);
  });

  it('rejects bad sizes, tags and budgets', () => {
    const m = new MemoryTracker('t');
    expect(() => m.allocate(-1)).toThrow(/non-negative integer/);
    expect(() => m.allocate(1.5)).toThrow(/non-negative integer/);
    expect(() => m.allocate(8, 'cache' as never)).toThrow(/unknown memory tag 'cache'/);
    expect(() => m.setBudget(-5)).toThrow(/budget/);
  });

  it('streams snapshots at a bounded rate, always ending on the latest state', async () => {
    const m = new MemoryTracker('t');
    const seen: number[] = [];
    const off = m.subscribe((s) => seen.push(s.live), { intervalMs: 50 });
    const t0 = performance.now();
    const allocs = [];
    while (performance.now() - t0 < 260) {
      allocs.push(m.allocate(8, 'kv'));
      await new Promise((r) => setTimeout(r, 1));
    }
    await new Promise((r) => setTimeout(r, 80));
    off();
    // ~260 ms at <= 20 Hz: the initial snapshot plus at most ~6 updates, although hundreds of allocations happened.
    expect(allocs.length).toBeGreaterThan(50);
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.length).toBeLessThanOrEqual(8);
    expect(seen[seen.length - 1]).toBe(m.live);
  });
});
