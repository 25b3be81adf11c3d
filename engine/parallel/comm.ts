/**
 * Collectives between the workers of a group (NCCL's, on shared memory): point-to-point send/recv, broadcast down a
 * chain, all-reduce as a ring reduce-scatter followed by a ring all-gather (Patarasuk & Yuan 2009, what NCCL runs),
 * reduce-scatter, all-gather, and a dissemination barrier. Payloads are fp32, bf16 or fp16 arrays; 16-bit sums are
 * taken in fp32 and rounded back at every hop, as NCCL sums half-precision buffers. Every byte a worker sends or
 * receives is counted, per collective: a ring all-reduce of n bytes on N workers sends 2 (N - 1) / N x n from each.
 * Rank r's shard is shardRange(n, N, r) (shard.ts): after reduceScatter, rank r holds the sum of its own range.
 */
import { bf16ToFp32, fp32ToBf16 } from '../dtype/bf16.ts';
import { fp16ToFp32, fp32ToFp16 } from '../dtype/fp16.ts';
import { numelOf, Tensor, type Storage } from '../tensor/tensor.ts';
import type { Device } from '../device/device.ts';
import type { MemoryTag } from '../memory/tracker.ts';
import { DTypeError, ServelabError, ShapeError } from '../errors.ts';
import type { Channel } from './channel.ts';
import { shardRange } from './shard.ts';

export const COLLECTIVES = ['p2p', 'broadcast', 'allReduce', 'reduceScatter', 'allGather', 'barrier'] as const;
export type Collective = (typeof COLLECTIVES)[number];
export interface CommCounts {
  sent: number;
  received: number;
  calls: number;
}
export type CommStats = Record<Collective, CommCounts>;
/** Doubles of shared memory one rank's counters take (sent, received, calls per collective). */
export const COMM_STATS_WORDS = COLLECTIVES.length * 3;

/** Reads one rank's counters out of shared memory. */
export function readCommStats(words: Float64Array): CommStats {
  return Object.fromEntries(COLLECTIVES.map((c, i) => [c, { sent: words[3 * i], received: words[3 * i + 1], calls: words[3 * i + 2] }])) as CommStats;
}

export type PayloadDType = 'fp32' | 'bf16' | 'fp16';
export interface Payload {
  dtype: PayloadDType;
  /** fp32 values, or 16-bit patterns for bf16 and fp16. */
  data: Float32Array | Uint16Array;
}

const bytesOf = (p: Payload): Uint8Array => new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength);
const fromBytes = (dtype: PayloadDType, b: Uint8Array): Payload => ({
  dtype,
  data: dtype === 'fp32' ? new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2),
});
const copy = (p: Payload): Payload => ({ dtype: p.dtype, data: p.data.slice() });

function checkDType(where: string, dtype: string): asserts dtype is PayloadDType {
  if (dtype !== 'fp32' && dtype !== 'bf16' && dtype !== 'fp16') throw new DTypeError(where, [dtype], 'collectives move fp32, bf16 or fp16');
}

/** acc[i] = received[i] + acc[i], in fp32; rounded back to 16 bits for bf16 and fp16. */
function accumulate(dtype: PayloadDType, acc: Float32Array | Uint16Array, received: Float32Array | Uint16Array): void {
  if (dtype === 'fp32') {
    for (let i = 0; i < acc.length; i++) acc[i] = received[i] + acc[i];
    return;
  }
  const [dec, enc] = dtype === 'bf16' ? [bf16ToFp32, fp32ToBf16] : [fp16ToFp32, fp32ToFp16];
  for (let i = 0; i < acc.length; i++) acc[i] = enc(Math.fround(dec(received[i]) + dec(acc[i])));
}

export class Comm {
  private readonly counts: Float64Array;

  /**
   * `out[d]` is the mailbox to rank d and `in[s]` the one from rank s (null for this rank); `stats` is this rank's
   * counters in shared memory, so the main thread can read them while a step runs.
   */
  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly out: readonly (Channel | null)[],
    private readonly inbox: readonly (Channel | null)[],
    stats: Float64Array,
  ) {
    this.counts = stats;
  }

  stats(): CommStats {
    return readCommStats(this.counts);
  }

  private count(c: Collective, sent: number, received: number, call = false): void {
    const i = COLLECTIVES.indexOf(c) * 3;
    this.counts[i] += sent;
    this.counts[i + 1] += received;
    if (call) this.counts[i + 2] += 1;
  }

  private peer(where: string, r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.size || r === this.rank) {
      throw new ServelabError(`${where}: rank ${this.rank} of ${this.size} cannot exchange with rank ${r}`);
    }
  }

  private async sendBytes(c: Collective, dst: number, b: Uint8Array): Promise<void> {
    await this.out[dst]!.send(b);
    this.count(c, b.length, 0);
  }

  private async recvBytes(c: Collective, src: number): Promise<Uint8Array> {
    const b = await this.inbox[src]!.recv();
    this.count(c, 0, b.length);
    return b;
  }

  async send(dst: number, p: Payload): Promise<void> {
    this.peer('send', dst);
    checkDType('send', p.dtype);
    this.count('p2p', 0, 0, true);
    await this.sendBytes('p2p', dst, bytesOf(p));
  }

  async recv(src: number, dtype: PayloadDType): Promise<Payload> {
    this.peer('recv', src);
    checkDType('recv', dtype);
    return fromBytes(dtype, await this.recvBytes('p2p', src));
  }

  /**
   * The root's payload on every rank, passed down the chain root, root + 1, ...: each rank forwards it whole once
   * received (NCCL pipelines the same chain in chunks).
   */
  async broadcast(p: Payload | null, root: number, dtype: PayloadDType): Promise<Payload> {
    checkDType('broadcast', dtype);
    if (!Number.isInteger(root) || root < 0 || root >= this.size) throw new ServelabError(`broadcast: root ${root} is not a rank of ${this.size}`);
    this.count('broadcast', 0, 0, true);
    const next = (this.rank + 1) % this.size;
    const prev = (this.rank - 1 + this.size) % this.size;
    let value: Payload;
    if (this.rank === root) {
      if (!p || p.dtype !== dtype) throw new ServelabError(`broadcast: the root (rank ${root}) must give a ${dtype} payload`);
      value = p;
    } else value = fromBytes(dtype, await this.recvBytes('broadcast', prev));
    if (next !== root && this.size > 1) await this.sendBytes('broadcast', next, bytesOf(value));
    return value;
  }

  /** The element-wise sum over ranks, written into p (and returned). Ring: reduce-scatter, then all-gather. */
  async allReduce(p: Payload): Promise<Payload> {
    checkDType('allReduce', p.dtype);
    this.count('allReduce', 0, 0, true);
    await this.ringReduceScatter('allReduce', p);
    await this.ringAllGather('allReduce', p);
    return p;
  }

  /** This rank's shard (shardRange) of the element-wise sum over ranks. p is left as it was. */
  async reduceScatter(p: Payload): Promise<Payload> {
    checkDType('reduceScatter', p.dtype);
    return this.reduceScatterInPlace(copy(p));
  }

  /** reduceScatter on a payload the caller gives up (its values become partial sums). */
  private async reduceScatterInPlace(work: Payload): Promise<Payload> {
    this.count('reduceScatter', 0, 0, true);
    await this.ringReduceScatter('reduceScatter', work);
    const { start, end } = shardRange(work.data.length, this.size, this.rank);
    return { dtype: work.dtype, data: work.data.slice(start, end) };
  }

  /** Every rank's shard joined in rank order: `n` elements in all, this rank's shard being shardRange(n, size, rank). */
  async allGather(shard: Payload, n: number): Promise<Payload> {
    checkDType('allGather', shard.dtype);
    const { start, end } = shardRange(n, this.size, this.rank);
    if (shard.data.length !== end - start) throw new ShapeError('allGather', [[end - start], [shard.data.length]], `rank ${this.rank} of ${this.size} holds ${end - start} of ${n} elements, got ${shard.data.length}`);
    this.count('allGather', 0, 0, true);
    const whole: Payload = { dtype: shard.dtype, data: shard.dtype === 'fp32' ? new Float32Array(n) : new Uint16Array(n) };
    whole.data.set(shard.data, start);
    await this.ringAllGather('allGather', whole);
    return whole;
  }

  /** Returns once every rank has called it (a dissemination barrier: log2 N rounds of empty messages). */
  async barrier(): Promise<void> {
    this.count('barrier', 0, 0, true);
    const empty = new Uint8Array(0);
    for (let d = 1; d < this.size; d *= 2) {
      await Promise.all([this.sendBytes('barrier', (this.rank + d) % this.size, empty), this.recvBytes('barrier', (this.rank - d + this.size) % this.size)]);
    }
  }

  /** After N - 1 steps rank r's range of p holds the sum over ranks; other ranges hold partial sums. */
  private async ringReduceScatter(c: Collective, p: Payload): Promise<void> {
    const N = this.size;
    const r = this.rank;
    const chunk = (i: number) => shardRange(p.data.length, N, ((i % N) + N) % N);
    for (let k = 0; k < N - 1; k++) {
      const s = chunk(r - k - 1);
      const t = chunk(r - k - 2);
      const [, got] = await Promise.all([this.sendBytes(c, (r + 1) % N, bytesOf({ dtype: p.dtype, data: p.data.subarray(s.start, s.end) })), this.recvBytes(c, (r - 1 + N) % N)]);
      accumulate(p.dtype, p.data.subarray(t.start, t.end), fromBytes(p.dtype, got).data);
    }
  }

  /** Starting from rank r holding range r complete, passes ranges around the ring until every rank has all. */
  private async ringAllGather(c: Collective, p: Payload): Promise<void> {
    const N = this.size;
    const r = this.rank;
    const chunk = (i: number) => shardRange(p.data.length, N, ((i % N) + N) % N);
    for (let k = 0; k < N - 1; k++) {
      const s = chunk(r - k);
      const t = chunk(r - k - 1);
      const [, got] = await Promise.all([this.sendBytes(c, (r + 1) % N, bytesOf({ dtype: p.dtype, data: p.data.subarray(s.start, s.end) })), this.recvBytes(c, (r - 1 + N) % N)]);
      p.data.set(fromBytes(p.dtype, got).data, t.start);
    }
  }

  // Tensors: the collectives above on a tensor's host values; results are new tensors on the worker's device, so the
  // tracker counts what a collective allocates.

  async allReduceTensor(t: Tensor): Promise<Tensor> {
    const p = await this.allReduce(await payloadOf('allReduceTensor', t));
    return t.assign(Tensor.adopt(t.device as Device, t.shape, t.dtype, p.data, t.tag, t.label));
  }

  /** This rank's shard of the flattened sum, a 1-d tensor tagged `tag` (default t's). */
  async reduceScatterTensor(t: Tensor, tag: MemoryTag = t.tag): Promise<Tensor> {
    // payloadOf reads a copy of t's values: it can be reduced in place.
    const p = await this.reduceScatterInPlace(await payloadOf('reduceScatterTensor', t));
    return Tensor.adopt(t.device as Device, [p.data.length], t.dtype, p.data, tag, t.label);
  }

  /** The whole tensor of `shape` from every rank's flat shard. */
  async allGatherTensor(shard: Tensor, shape: readonly number[], tag: MemoryTag = shard.tag, label = shard.label): Promise<Tensor> {
    const p = await this.allGather(await payloadOf('allGatherTensor', shard), numelOf(shape));
    return Tensor.adopt(shard.device as Device, shape, shard.dtype, p.data, tag, label);
  }

  async sendTensor(dst: number, t: Tensor): Promise<void> {
    await this.send(dst, await payloadOf('sendTensor', t));
  }

  /** A tensor of the shape and dtype the sender sent (both sides know them: a pipeline's activations). */
  async recvTensor(dev: Device, src: number, shape: readonly number[], dtype: PayloadDType, tag: MemoryTag = 'activations', label = ''): Promise<Tensor> {
    const p = await this.recv(src, dtype);
    if (p.data.length !== numelOf(shape)) throw new ShapeError('recvTensor', [shape, [p.data.length]], `rank ${src} sent ${p.data.length} elements, expected [${shape.join(', ')}]`);
    return Tensor.adopt(dev, shape, dtype, p.data, tag, label);
  }
}

async function payloadOf(where: string, t: Tensor): Promise<Payload> {
  checkDType(where, t.dtype);
  const data: Storage = await t.read();
  return { dtype: t.dtype, data: data as Float32Array | Uint16Array };
}
