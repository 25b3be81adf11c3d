// Tasks the collective tests run on every worker of a group.
import type { WorkerContext } from '../../../engine/parallel/worker.ts';
import type { PayloadDType } from '../../../engine/parallel/comm.ts';
import { fp32ArrayToBf16 } from '../../../engine/dtype/bf16.ts';

/** Rank r's input: n values that differ by rank and index. */
export function inputOf(rank: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(1 + rank * 7.3 + i * 0.37) * (1 + rank));
}

const payload = (dtype: PayloadDType, v: Float32Array) => ({ dtype, data: dtype === 'fp32' ? v : fp32ArrayToBf16(v) });

export async function allReduce(ctx: WorkerContext, a: { n: number; dtype: PayloadDType }) {
  const p = await ctx.comm.allReduce(payload(a.dtype, inputOf(ctx.rank, a.n)));
  return { data: Array.from(p.data), stats: ctx.comm.stats() };
}

export async function reduceScatter(ctx: WorkerContext, a: { n: number }) {
  const p = await ctx.comm.reduceScatter(payload('fp32', inputOf(ctx.rank, a.n)));
  return { data: Array.from(p.data), stats: ctx.comm.stats() };
}

export async function allGather(ctx: WorkerContext, a: { shards: number[][]; n: number }) {
  const p = await ctx.comm.allGather(payload('fp32', Float32Array.from(a.shards[ctx.rank])), a.n);
  return { data: Array.from(p.data), stats: ctx.comm.stats() };
}

export async function broadcast(ctx: WorkerContext, a: { root: number; n: number }) {
  const p = await ctx.comm.broadcast(ctx.rank === a.root ? payload('fp32', inputOf(a.root, a.n)) : null, a.root, 'fp32');
  return { data: Array.from(p.data), stats: ctx.comm.stats() };
}

/** Rank 0 sends to every other rank; each sends its own back. */
export async function sendRecv(ctx: WorkerContext, a: { n: number }) {
  const got: number[][] = [];
  if (ctx.rank === 0) {
    for (let r = 1; r < ctx.size; r++) await ctx.comm.send(r, payload('fp32', inputOf(0, a.n)));
    for (let r = 1; r < ctx.size; r++) got.push(Array.from((await ctx.comm.recv(r, 'fp32')).data));
  } else {
    got.push(Array.from((await ctx.comm.recv(0, 'fp32')).data));
    await ctx.comm.send(0, payload('fp32', inputOf(ctx.rank, a.n)));
  }
  return { got, stats: ctx.comm.stats() };
}

/** Tensors: all-reduce in place, then reduce-scatter and all-gather back, on the worker's device. */
export async function tensors(ctx: WorkerContext, a: { n: number }) {
  const t = ctx.dev.tensor(inputOf(ctx.rank, a.n), [a.n], 'fp32', { tag: 'grads' });
  await ctx.comm.allReduceTensor(t);
  const sum = Array.from(t.toFloat32());
  const again = ctx.dev.tensor(inputOf(ctx.rank, a.n), [a.n], 'fp32', { tag: 'grads' });
  const shard = await ctx.comm.reduceScatterTensor(again);
  const whole = await ctx.comm.allGatherTensor(shard, [a.n]);
  const out = { sum, shard: Array.from(shard.toFloat32()), whole: Array.from(whole.toFloat32()), live: ctx.dev.memory.live };
  for (const x of [t, again, shard, whole]) x.dispose();
  return { ...out, liveAfter: ctx.dev.memory.live };
}

export async function barrier(ctx: WorkerContext) {
  await ctx.comm.barrier();
  return ctx.rank;
}

/** Rank `bad` throws after the others have entered an all-reduce that can never finish without it. */
export async function failing(ctx: WorkerContext, a: { bad: number }) {
  if (ctx.rank === a.bad) {
    await new Promise((r) => setTimeout(r, 100));
    throw new RangeError(`rank ${a.bad} gave up`);
  }
  await ctx.comm.allReduce(payload('fp32', inputOf(ctx.rank, 1000)));
  return 'unreachable';
}

export async function allocate(ctx: WorkerContext, a: { bytes: number }) {
  const t = ctx.dev.tensor(new Float32Array(a.bytes / 4), [a.bytes / 4], 'fp32', { tag: 'weights' });
  ctx.state.set('t', t);
  return ctx.dev.memory.live;
}

export function remember(ctx: WorkerContext, a: { value?: number }) {
  if (a.value !== undefined) ctx.state.set('v', a.value + ctx.rank);
  return ctx.state.get('v');
}

export async function spin(ctx: WorkerContext) {
  await ctx.comm.barrier();
  await new Promise((r) => setTimeout(r, 60_000));
}
