/**
 * The scheduler's decisions on small traces, asserted step by step against hand-traced timelines: continuous batching
 * with preemption by recomputation and by swapping, static batching, chunked prefill. The KV cache is real (a pooled
 * cache's own bookkeeping, one slot per token); the runner is stood in for by planning and committing each step's
 * tokens through the cache, with a fixed function for the next token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, type Device } from '../../../engine/index.ts';
import { PoolKvCache, type PoolKvCacheOptions } from '../../../engine/kv/pool_cache.ts';
import { Scheduler, Sequence, type ScheduledStep, type SchedulerOptions } from '../../../engine/serve/scheduler.ts';

const SHAPE = { numLayers: 1, numKvHeads: 1, numHeads: 1, headDim: 1, maxPositions: 64 };

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

/** Plans and commits `batch` through the cache as a forward call would (rows of zeros). */
async function forward(cache: PoolKvCache, batch: { seq: string; tokens: number[] }[]): Promise<void> {
  const plan = await cache.plan(batch);
  const S = Math.max(...plan.counts);
  await plan.commit([0, 1].map(() => dev.tensor(new Float32Array(batch.length * S), [batch.length, S, 1])));
}

/** Runs the scheduler to the end; returns one line per iteration: 'P a4 b4' (prefill chunks), 'D a b', '!b' (preempted), '^b' (swapped in). */
async function trace(opts: Omit<PoolKvCacheOptions, 'layout'> & { layout?: PoolKvCacheOptions['layout'] }, sched: SchedulerOptions, reqs: [string, number, number][]) {
  const cache = await PoolKvCache.create(dev, SHAPE, { layout: 'paged', prefixCaching: false, ...opts });
  const s = new Scheduler(cache, sched);
  const seqs = new Map(reqs.map(([id, p, m]) => [id, new Sequence(id, Array.from({ length: p }, (_, i) => (id.charCodeAt(0) * 7 + i) % 50), m)]));
  for (const q of seqs.values()) s.add(q);
  const lines: string[] = [];
  let swapOut = 0;
  for (let i = 0; i < 100 && s.hasWork(); i++) {
    const step: ScheduledStep = await s.schedule();
    if (step.prefill.length) await forward(cache, step.prefill.map((p) => ({ seq: String(p.seq.id), tokens: p.tokens })));
    if (step.decode.length) await forward(cache, step.decode.map((q) => ({ seq: String(q.id), tokens: [q.tokens[q.computed]] })));
    const next = new Map<Sequence, number>();
    for (const p of step.prefill) if (p.last) next.set(p.seq, p.seq.length % 50);
    for (const q of step.decode) next.set(q, q.length % 50);
    s.commit(step, next);
    swapOut += step.swapBytes.out;
    lines.push([
      ...step.preempted.map((q) => `!${q.id}`),
      ...step.swappedIn.map((q) => `^${q.id}`),
      step.prefill.length ? `P ${step.prefill.map((p) => `${p.seq.id}${p.tokens.length}`).join(' ')}` : '',
      step.decode.length ? `D ${step.decode.map((q) => q.id).join(' ')}` : '',
    ].filter(Boolean).join(' '));
    cache.blockManager.checkInvariants();
  }
  expect(s.hasWork()).toBe(false);
  const m = cache.memory();
  cache.dispose();
  return { lines, seqs, swapOut, free: m.freeBytes, pool: m.poolBytes };
}

const repeat = (line: string, n: number) => Array(n).fill(line);

describe('Scheduler, continuous batching', () => {
  it('preempts the newest sequence by recomputation when a decode step needs blocks that are not there, and prefills it again later', async () => {
    // 3 blocks of 4. Both prompts take a block; both need a second at the first decode: b gives its block back and
    // waits until a (8 tokens) has finished, then its prompt and first token are prefilled again (5 tokens, 2 blocks).
    const { lines, seqs, free, pool } = await trace({ numSlots: 12, blockSize: 4 }, {}, [['a', 4, 8], ['b', 4, 8]]);
    expect(lines).toEqual(['P a4 b4', '!b D a', ...repeat('D a', 6), 'P b5', ...repeat('D b', 6)]);
    expect(seqs.get('b')!.preemptions).toBe(1);
    expect(seqs.get('b')!.output).toHaveLength(8);
    expect(free).toBe(pool);
  });

  it('preempts by swapping: the keys and values go to host memory and come back when a has finished, without a new prefill', async () => {
    const { lines, swapOut } = await trace({ numSlots: 12, blockSize: 4 }, { preemption: 'swap' }, [['a', 4, 8], ['b', 4, 8]]);
    expect(lines).toEqual(['P a4 b4', '!b D a', ...repeat('D a', 6), '^b D b', ...repeat('D b', 6)]);
    // b had its 4 prompt tokens cached: 4 slots of 2 (k, v) x 1 layer x 1 head x 1 dim x 4 bytes.
    expect(swapOut).toBe(4 * 8);
  });

  it('admits while memory and maxNumSeqs allow: c waits for a place, and joins the running batch when b leaves', async () => {
    const { lines } = await trace({ numSlots: 64, blockSize: 4 }, { maxNumSeqs: 2 }, [['a', 3, 4], ['b', 2, 2], ['c', 2, 2]]);
    expect(lines).toEqual(['P a3 b2', 'D a b', 'P c2', 'D a c', 'D a']);
  });

  it('with chunked prefill a long prompt comes in chunks beside the running decode', async () => {
    const { lines } = await trace({ numSlots: 64, blockSize: 4 }, { chunkedPrefill: 4 }, [['a', 2, 5], ['b', 10, 2]]);
    expect(lines).toEqual(['P a2 b4', 'P b4 D a', 'P b2 D a', 'D a b', 'D a']);
  });
});

describe('Scheduler, static batching', () => {
  it('runs a batch until its longest member ends: c waits, and a finished member is still computed (padding) to the end', async () => {
    const { lines, seqs } = await trace({ numSlots: 64, blockSize: 4 }, { batching: 'static', maxNumSeqs: 2 }, [['a', 3, 3], ['b', 2, 6], ['c', 2, 2]]);
    expect(lines).toEqual(['P a3 b2', ...repeat('D a b', 5), 'P c2', 'D c']);
    expect([...seqs.values()].map((q) => q.output.length)).toEqual([3, 6, 2]);
  });
});

describe('Scheduler, requests that can never run', () => {
  it('are named with the reason; the others are not affected', async () => {
    const cache = await PoolKvCache.create(dev, SHAPE, { layout: 'paged', numSlots: 16, blockSize: 4 });
    const s = new Scheduler(cache, { maxBatchedTokens: 16 });
    expect(s.rejectReason([], 4)).toBe('the prompt is empty');
    expect(s.rejectReason([1], 0)).toMatch(/max_tokens must be a positive integer/);
    expect(s.rejectReason(Array(40).fill(1), 30)).toMatch(/exceed the longest sequence the cache takes \(64\)/);
    expect(s.rejectReason(Array(10).fill(1), 10)).toMatch(/do not fit the whole KV pool/);
    expect(s.rejectReason(Array(10).fill(1), 4)).toBeNull();
    expect(() => s.add(new Sequence('x', [], 3))).toThrow(/request x can never run: the prompt is empty/);
    expect(() => new Scheduler(cache, { maxNumSeqs: 0 })).toThrow(/maxNumSeqs must be an integer >= 1/);
    cache.dispose();
  });
});
