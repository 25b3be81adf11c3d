// Collectives between worker threads against a serial reference, with exact byte counts, and a group's failure modes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerGroup } from '../../../engine/parallel/group.ts';
import { WorkerError } from '../../../engine/parallel/errors.ts';
import { withSignal } from '../../../engine/abort.ts';
import { shardRange } from '../../../engine/parallel/shard.ts';
import { bf16ToFp32, fp32ToBf16 } from '../../../engine/dtype/bf16.ts';
import type { CommStats } from '../../../engine/parallel/comm.ts';
import { inputOf } from './collective_tasks.ts';

const TASKS = new URL('./collective_tasks.ts', import.meta.url);
type Out = { data: number[]; stats: CommStats };

/** The sum the ring computes for element i: starting at the rank after the chunk's owner, acc = acc + x at each hop. */
function ringSum(N: number, n: number, i: number, round: (x: number) => number, value: (r: number, i: number) => number): number {
  let owner = 0;
  while (shardRange(n, N, owner).end <= i) owner++;
  let acc = value((owner + 1) % N, i);
  for (let k = 2; k <= N; k++) acc = round(acc + value((owner + k) % N, i));
  return acc;
}

describe('collectives on 4 worker threads', () => {
  let group: WorkerGroup;
  const N = 4;
  beforeAll(async () => {
    group = await WorkerGroup.start({ workers: N, mailboxBytes: 4096 });
  }, 60_000);
  afterAll(() => group?.close());

  it('all-reduce (fp32) equals the ring-ordered serial sum bit for bit, sending 2 (N-1)/N of the bytes from each rank', async () => {
    const n = 10_000; // several mailbox chunks per message
    const outs = await group.run<Out>(TASKS, 'allReduce', { n, dtype: 'fp32' });
    const inputs = Array.from({ length: N }, (_, r) => inputOf(r, n));
    const want = Float32Array.from({ length: n }, (_, i) => ringSum(N, n, i, Math.fround, (r, j) => inputs[r][j]));
    const exact = Array.from({ length: n }, (_, i) => inputs.reduce((s, x) => s + x[i], 0));
    const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    for (const o of outs) {
      expect(Float32Array.from(o.data)).toEqual(want);
      // fp32, normwise against the float64 sum
      expect(norm(o.data.map((x, i) => x - exact[i])) / norm(exact)).toBeLessThan(1e-6);
      expect(o.stats.allReduce.sent).toBe((2 * (N - 1) * n * 4) / N);
      expect(o.stats.allReduce.received).toBe((2 * (N - 1) * n * 4) / N);
      expect(o.stats.allReduce.calls).toBe(1);
    }
  });

  it('all-reduce (bf16) sums in fp32 and rounds at every hop', async () => {
    const n = 1001; // uneven shards
    const before = group.commStats();
    const outs = await group.run<Out>(TASKS, 'allReduce', { n, dtype: 'bf16' });
    const inputs = Array.from({ length: N }, (_, r) => inputOf(r, n).map((v) => bf16ToFp32(fp32ToBf16(v))));
    const round = (x: number) => bf16ToFp32(fp32ToBf16(Math.fround(x)));
    for (const o of outs) {
      const got = o.data.map(bf16ToFp32);
      got.forEach((g, i) => expect(g).toBe(ringSum(N, n, i, round, (r, j) => inputs[r][j])));
    }
    // Uneven: rank r sends every chunk but its own in the reduce-scatter and every chunk but r + 1's in the all-gather.
    outs.forEach((o, r) => {
      const len = (k: number) => shardRange(n, N, k % N).end - shardRange(n, N, k % N).start;
      expect(o.stats.allReduce.sent - before[r].allReduce.sent).toBe(2 * (2 * n - len(r) - len(r + 1)));
    });
  });

  it('reduce-scatter leaves rank r the sum of its own shard; all-gather joins shards in rank order', async () => {
    const n = 1003;
    const rs = await group.run<Out>(TASKS, 'reduceScatter', { n });
    const inputs = Array.from({ length: N }, (_, r) => inputOf(r, n));
    rs.forEach((o, r) => {
      const { start, end } = shardRange(n, N, r);
      expect(o.data).toEqual(Array.from({ length: end - start }, (_, i) => ringSum(N, n, start + i, Math.fround, (q, j) => inputs[q][j])));
      expect(o.stats.reduceScatter.sent).toBe(4 * (n - (end - start)));
    });
    const ag = await group.run<Out>(TASKS, 'allGather', { shards: rs.map((o) => o.data), n });
    for (const o of ag) expect(o.data).toEqual(rs.flatMap((x) => x.data));
    ag.forEach((o, r) => {
      const next = shardRange(n, N, (r + 1) % N);
      expect(o.stats.allGather.sent).toBe(4 * (n - (next.end - next.start)));
    });
  });

  it('broadcast passes the root payload down the chain; send/recv move exactly the payload', async () => {
    const n = 5000;
    const outs = await group.run<Out>(TASKS, 'broadcast', { root: 2, n });
    const want = Array.from(inputOf(2, n));
    const before = outs.map((o) => o.stats.broadcast);
    for (const o of outs) expect(o.data).toEqual(want);
    // The chain 2 -> 3 -> 0 -> 1: every rank but the last (1) sends n floats; every rank but the root receives them.
    expect(before.map((b) => b.sent)).toEqual([4 * n, 0, 4 * n, 4 * n]);
    expect(before.map((b) => b.received)).toEqual([4 * n, 4 * n, 0, 4 * n]);
    const p2p = await group.run<{ got: number[][]; stats: CommStats }>(TASKS, 'sendRecv', { n: 300 });
    expect(p2p[0].got).toEqual([1, 2, 3].map((r) => Array.from(inputOf(r, 300))));
    for (const r of [1, 2, 3]) expect(p2p[r].got).toEqual([Array.from(inputOf(0, 300))]);
    expect(p2p[0].stats.p2p.sent).toBe(3 * 300 * 4);
    expect(p2p[1].stats.p2p).toEqual({ sent: 1200, received: 1200, calls: 1 });
    expect(group.commStats()[1].p2p).toEqual(p2p[1].stats.p2p);
  });

  it('tensor collectives allocate on the worker device and free what they made', async () => {
    const outs = await group.run<{ sum: number[]; shard: number[]; whole: number[]; live: number; liveAfter: number }>(TASKS, 'tensors', { n: 999 });
    for (const o of outs) {
      expect(o.whole).toEqual(o.sum);
      expect(o.live).toBeGreaterThanOrEqual(2 * 999 * 4);
      expect(o.liveAfter).toBe(0);
    }
    expect(await group.run(TASKS, 'barrier')).toEqual([0, 1, 2, 3]);
  });

  it('each worker keeps its own state and its own memory, visible from the main thread', async () => {
    await group.run(TASKS, 'remember', (r: number) => ({ value: 10 * r }));
    expect(await group.run(TASKS, 'remember', {})).toEqual([0, 11, 22, 33]);
    const lives = await group.run<number>(TASKS, 'allocate', (r: number) => ({ bytes: 4096 * (r + 1) }));
    expect(lives).toEqual([4096, 8192, 12288, 16384]);
    expect(group.memory().map((m) => m.byTag.weights)).toEqual([4096, 8192, 12288, 16384]);
  });
});

describe('a group that fails', () => {
  it('a worker that throws mid-collective stops the group with its error; no hang, no live worker', async () => {
    const group = await WorkerGroup.start({ workers: 3 });
    const t0 = performance.now();
    const err = await group.run(TASKS, 'failing', { bad: 1 }).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerError);
    expect((err as WorkerError).rank).toBe(1);
    expect((err as Error).message).toMatch(/worker 1 failed: RangeError: rank 1 gave up/);
    expect(performance.now() - t0).toBeLessThan(10_000);
    await expect(group.run(TASKS, 'barrier')).rejects.toThrow(/rank 1 gave up/);
  }, 60_000);

  it('close() stops workers that wait in a collective or a timer', async () => {
    const group = await WorkerGroup.start({ workers: 2 });
    const run = group.run(TASKS, 'spin');
    const rejected = expect(run).rejects.toThrow(/closed during a run/);
    await new Promise((r) => setTimeout(r, 300));
    await group.close();
    await rejected;
  }, 60_000);

  it('an interrupted cell (its AbortSignal) stops the group and rejects the run with the abort', async () => {
    const group = await WorkerGroup.start({ workers: 2 });
    const ctl = new AbortController();
    const run = withSignal(ctl.signal, () => group.run(TASKS, 'spin'));
    await new Promise((r) => setTimeout(r, 300));
    ctl.abort();
    await expect(run).rejects.toThrow(/abort/i);
    await expect(group.run(TASKS, 'barrier')).rejects.toThrow(/interrupted/);
  }, 60_000);

  it('bad options are refused before any worker starts', async () => {
    await expect(WorkerGroup.start({ workers: 0 })).rejects.toThrow(/workers must be an integer from 1/);
    await expect(WorkerGroup.start({ workers: 2, device: ['cpu'] })).rejects.toThrow(/1 devices given for 2 workers/);
    await expect(WorkerGroup.start({ workers: 1, device: 'tpu' })).rejects.toThrow(/tpu/);
  }, 60_000);
});
