/**
 * The tensor ops inside one shape-polymorphic graph, a decode step's bookkeeping: append new keys to a cache
 * ('past' + 'seq' = 'past+seq'), positions from a run-time offset, a causal mask, the last token, a write into a
 * preallocated cache and reads back. One cpu session at every size, each run matching the reference backend.
 */
import { describe, expect, it } from 'vitest';
import { createDevice, Graph, ShapeError, webgpuUnavailable, type Device, type DType, type Tensor, type Value } from '../../../engine/index.ts';
import { mismatch } from '../../../bench/op_cases.ts';

const MAX = 8;
const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.61 + seed * 1.7) * 2);

function step(): { g: Graph; named: Record<string, Value> } {
  const g = new Graph('decode bookkeeping');
  const one = (op: Parameters<Graph['op']>[0], ins: (Value | null)[], attrs = {}) => g.op(op, ins, attrs)[0];
  const pastK = g.input('pastK', 'fp32', [1, 2, 'past', 4]);
  const newK = g.input('newK', 'fp32', [1, 2, 'seq', 4]);
  const q = g.input('q', 'fp32', ['seq', 4]);
  const past = g.input('pastLen', 'int32', []);
  const cache = g.input('cache', 'fp32', [1, 2, MAX, 4]);
  const slots = g.input('slots', 'int32', [1, 2, 'seq', 3]);

  const k = one('Concat', [pastK, newK], { axis: 2 });
  const last = one('Slice', [k], { starts: [-1], ends: [2 ** 31 - 1], axes: [2] });
  const tail = one('Slice', [k], { starts: [1], ends: [2 ** 31 - 1], axes: [2] });
  const front = one('Slice', [k], { starts: [0], ends: ['past'], axes: [2] });
  const mean = one('ReduceMean', [k], { axes: [2], keepdims: false });
  const [sPast, sNew] = g.op('Split', [k], { axis: 2, sizes: ['past', 'seq'] });

  // Causal scores of the new queries against every key of head 0; key j is hidden from query i when j > past + i.
  const kh = one('Reshape', [one('Slice', [k], { starts: [0], ends: [1], axes: [1] })], { shape: ['past+seq', 4] });
  const scores = one('MatMul', [q, one('Transpose', [kh], { perm: [1, 0] })]);
  const rows = one('Reshape', [one('Range', [past], { length: 'seq' })], { shape: ['seq', 1] });
  const cols = one('Range', [], { length: 'past+seq' });
  const hidden = one('Less', [rows, cols]);
  const masked = one('Where', [hidden, one('Constant', [], { value: -Infinity, dtype: 'fp32' }), scores]);
  const best = one('ArgMax', [masked], { axis: -1, keepdims: false });
  const [top2, top2i] = g.op('TopK', [one('Exp', [masked])], { k: 1 });

  const written = one('ScatterND', [cache, slots, newK]);
  const readBack = one('GatherND', [written, slots]);
  const prefix = one('Slice', [written], { starts: [0], ends: ['past+seq'], axes: [2] });
  const named = { k, last, tail, front, mean, sPast, sNew, scores, hidden, masked, best, top2, top2i, written, readBack, prefix };
  g.output(...Object.values(named));
  return { g, named };
}

function feeds(d: Device, past: number, seq: number): Tensor[] {
  // Batch 0, both heads: the new tokens go to slots past .. past+seq-1 of the cache.
  const slots = [0, 1].flatMap((h) => Array.from({ length: seq }, (_, s) => [0, h, past + s]).flat());
  return [
    d.tensor(values(8 * past, past), [1, 2, past, 4]),
    d.tensor(values(8 * seq, seq + 10), [1, 2, seq, 4]),
    d.tensor(values(4 * seq, seq + 20), [seq, 4]),
    d.tensor([past], [], 'int32'),
    d.tensor(values(8 * MAX, 30), [1, 2, MAX, 4]),
    d.tensor(slots, [1, 2, seq, 3], 'int32'),
  ];
}

/** A KV cache write and read in one dtype: new rows scattered into [1, 2, MAX, 4] at run-time slots, read back. */
function kvWrite(dtype: DType): Graph {
  const g = new Graph(`kv write ${dtype}`);
  const cache = g.input('cache', dtype, [1, 2, MAX, 4]);
  const slots = g.input('slots', 'int32', [1, 2, 'seq', 3]);
  const newK = g.input('newK', dtype, [1, 2, 'seq', 4]);
  const total = g.input('upTo', dtype, ['total']);
  const written = g.op('ScatterND', [cache, slots, newK])[0];
  const summed = g.op('ScatterND', [cache, slots, newK], { reduction: 'add' })[0];
  const prefix = g.op('Slice', [written], { starts: [0], ends: ['total'], axes: [2] })[0];
  return g.output(written, summed, g.op('GatherND', [written, slots])[0], prefix, g.op('Concat', [prefix, newK], { axis: 2 })[0], total);
}

async function kvRuns(dev: Device, ref: Device, dtype: DType): Promise<void> {
  const [a, b] = [kvWrite(dtype), kvWrite(dtype)];
  for (const [past, seq] of [[2, 3], [6, 1]]) {
    const slots = [0, 1].flatMap((h) => Array.from({ length: seq }, (_, i) => [0, h, past + i]).flat());
    const make = (d: Device) => [
      d.tensor(values(8 * MAX, 40), [1, 2, MAX, 4], dtype),
      d.tensor(slots, [1, 2, seq, 3], 'int32'),
      d.tensor(values(8 * seq, 41 + seq), [1, 2, seq, 4], dtype),
      d.tensor(values(past + seq, 0), [past + seq], dtype),
    ];
    const got = await dev.run(a, make(dev));
    const want = await ref.run(b, make(ref));
    got.forEach((t, i) => expect(mismatch(t, want[i]), `${dev.kind} ${dtype} output ${i} at past ${past}, seq ${seq}`).toBeNull());
    // Data movement is exact in every dtype: the rows read back are the rows written.
    expect(Array.from(got[2].data)).toEqual(Array.from(make(ref)[2].data));
  }
}

const noGpu = await webgpuUnavailable();

describe('tensor ops in one symbolic graph', () => {
  it('infers sums and differences of symbolic dims', () => {
    const { named: v } = step();
    expect(v.k.shape).toEqual([1, 2, 'past+seq', 4]);
    expect(v.last.shape).toEqual([1, 2, 1, 4]);
    expect(v.tail.shape).toEqual([1, 2, 'past+seq-1', 4]);
    expect(v.front.shape).toEqual([1, 2, 'past', 4]);
    expect(v.mean.shape).toEqual([1, 2, 4]);
    expect(v.sNew.shape).toEqual([1, 2, 'seq', 4]);
    expect(v.hidden).toMatchObject({ dtype: 'bool', shape: ['seq', 'past+seq'] });
    expect(v.best).toMatchObject({ dtype: 'int32', shape: ['seq'] });
    expect(v.prefix.shape).toEqual([1, 2, 'past+seq', 4]);
  });

  it('one cpu session serves two sizes, and every output matches the reference', async () => {
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    const [a, b] = [step(), step()];
    const before = cpu.stats().sessionsCreated;
    for (const [past, seq] of [[3, 2], [6, 1]]) {
      const got = await cpu.run(a.g, feeds(cpu, past, seq));
      const want = await ref.run(b.g, feeds(ref, past, seq));
      const names = Object.keys(a.named);
      got.forEach((t, i) => expect(mismatch(t, want[i]), `${names[i]} at past ${past}, seq ${seq}`).toBeNull());
      const out = Object.fromEntries(names.map((n, i) => [n, want[i]]));
      expect(out.k.shape).toEqual([1, 2, past + seq, 4]);
      expect(out.tail.shape).toEqual([1, 2, past + seq - 1, 4]);
      // Split undoes Concat exactly; GatherND reads back what ScatterND wrote.
      const [pastK, newK] = feeds(ref, past, seq);
      expect(out.sPast.toArray()).toEqual(pastK.toArray());
      expect(out.sNew.toArray()).toEqual(newK.toArray());
      expect(out.readBack.toArray()).toEqual(newK.toArray());
      // Query i sees keys 0 .. past + i: exactly past + i + 1 finite scores in its row.
      const masked = out.masked.toArray() as number[];
      for (let i = 0; i < seq; i++) expect(masked.slice(i * (past + seq), (i + 1) * (past + seq)).filter(Number.isFinite).length).toBe(past + i + 1);
      // The top-1 index of exp(scores) is the argmax of the scores.
      expect(out.top2i.toArray()).toEqual(out.best.toArray());
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
  });

  it('a KV cache write at run-time slots, read back, on cpu (fp16 emulated) as on the reference', async () => {
    const [cpu, ref] = [await createDevice('cpu'), await createDevice('reference')];
    for (const dtype of ['fp32', 'fp16', 'bf16'] as const) await kvRuns(cpu, ref, dtype);
  });

  it.skipIf(noGpu !== null)(`the same on webgpu, native fp16, with ScatterND on the GPU${noGpu ? ` (skipped: ${noGpu.slice(0, 80)})` : ''}`, async () => {
    const [gpu, ref] = [await createDevice('webgpu'), await createDevice('reference')];
    for (const dtype of ['fp32', 'fp16'] as const) await kvRuns(gpu, ref, dtype);
    const [a, b] = [step(), step()];
    for (const [past, seq] of [[3, 2], [6, 1]]) {
      const got = await gpu.run(a.g, feeds(gpu, past, seq));
      const want = await ref.run(b.g, feeds(ref, past, seq));
      got.forEach((t, i) => expect(mismatch(t, want[i]), `${Object.keys(a.named)[i]} at past ${past}, seq ${seq}`).toBeNull());
    }
    expect(gpu.placement().ScatterND).toBe('webgpu');
  });

  it('a symbolic end past its axis is an error of the run on both backends', async () => {
    // The first 'n' slots of a cache of 8: n = 9 does not fit.
    const g = new Graph('prefix');
    const cache = g.input('cache', 'fp32', [MAX]);
    const y = g.input('y', 'fp32', ['n']);
    g.output(g.op('Add', [g.op('Slice', [cache], { starts: [0], ends: ['n'] })[0], y])[0]);
    for (const kind of ['cpu', 'reference'] as const) {
      const dev = await createDevice(kind);
      const ok = await dev.run(g, [dev.tensor(values(MAX, 1), [MAX]), dev.tensor(values(5, 2), [5])]);
      expect(ok[0].shape).toEqual([5]);
      const bad = dev.run(g, [dev.tensor(values(MAX, 1), [MAX]), dev.tensor(values(9, 2), [9])]);
      await expect(bad, kind).rejects.toThrow(kind === 'reference' ? /Slice: axis 0 of length 8/ : /Reshape/);
    }
  });

  it('a KV slot outside the cache stops the run on every backend (the WebGPU kernels would not)', async () => {
    const kinds = noGpu === null ? (['cpu', 'webgpu', 'reference'] as const) : (['cpu', 'reference'] as const);
    for (const kind of kinds) {
      const dev = await createDevice(kind);
      const g = kvWrite('fp32');
      const slots = [0, 0, MAX, 0, 1, 2]; // head 0 writes one past the last slot
      const run = dev.run(g, [dev.tensor(values(8 * MAX, 1), [1, 2, MAX, 4]), dev.tensor(slots, [1, 2, 1, 3], 'int32'), dev.tensor(values(8, 2), [1, 2, 1, 4]), dev.tensor([1], [1])]);
      await expect(run, kind).rejects.toThrow(kind === 'reference' ? /ScatterND: index 8 .* out of range for axis 2 of length 8/ : /ScatterND: an index is outside the axis of data it addresses/);
    }
  });

  it('a dim that comes out negative names itself and its sizes', async () => {
    const g = new Graph('tail');
    const x = g.input('x', 'fp32', ['n']);
    const y = g.op('Slice', [x], { starts: [2], ends: [2 ** 31 - 1] })[0];
    expect(y.shape).toEqual(['n-2']);
    g.output(y);
    const dev = await createDevice('reference');
    expect((await dev.run(g, [dev.tensor([1, 2, 3], [3])]))[0].toArray()).toEqual([3]);
    const err = await dev.run(g, [dev.tensor([1], [1])]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShapeError);
    expect(String(err)).toMatch(/dimension 'n-2' is -1 in this run \(n = 1\)/);
  });
});
