/**
 * GroupQueryAttention lowered to ONNX. Decode steps (S = 1) and single-sequence steps (B = 1) use onnxruntime's
 * com.microsoft GroupQueryAttention, which runs on the CPU and WebGPU providers and attends only to each sequence's
 * own length; it refuses S > 1 with a past for B > 1, so other shapes take plain ONNX: ScatterND writes the new rows,
 * then a masked softmax(q k^T) v over the whole cache.
 */
import type { Node } from '../../graph/graph.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';
import { all, guard } from './guard.ts';

interface Dims {
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  type: number;
}

export function lowerGroupQueryAttention(e: Emitter, n: Node, ins: string[]): string[] {
  const [q] = n.inputs;
  const Hq = n.attrs.numHeads as number;
  const Hkv = n.attrs.kvNumHeads as number;
  const D = (q!.shape[2] as number) / Hq;
  const dims: Dims = { Hq, Hkv, D, scale: (n.attrs.scale as number | undefined) ?? 1 / Math.sqrt(D), type: onnxType(q!.dtype, e.opts) };
  const [B, S] = q!.shape;
  // Every layer of a model reads the same pastLengths against caches of one length (a symbol binds to one size per
  // run): its checks and derived lengths are emitted once.
  const key = `gqa|${ins[5]}|S=${String(S)}|T=${String(n.inputs[3]!.shape[2])}`;
  const { checked, S1, T1 } = e.memo(key, () => {
    const S1 = e.node('Shape', [ins[0]], [attr('start', 1), attr('end', 2)]);
    const T1 = e.node('Shape', [ins[3]], [attr('start', 2), attr('end', 3)]);
    const lens = e.node('Cast', [ins[5]], [attr('to', OnnxType.INT64)]);
    const ends = e.node('Add', [lens, S1]);
    const fits = e.node('And', [e.node('GreaterOrEqual', [lens, e.int64([0], [])]), e.node('LessOrEqual', [ends, T1])]);
    const checked = guard(e, lens, all(e, fits), 'GroupQueryAttention: a past length is negative, or past length + new tokens exceed the cache length');
    return { checked, S1, T1 };
  });
  // onnxruntime's kernel needs a head dim that is a multiple of 8.
  const fused = (S === 1 || B === 1) && D % 8 === 0;
  return fused ? fusedGqa(e, ins, dims, key, checked, S1, T1) : plainGqa(e, ins, dims, checked, S1, T1);
}

function fusedGqa(e: Emitter, ins: string[], d: Dims, key: string, lens: string, S1: string, T1: string): string[] {
  const { seqlensK, total, mask } = e.memo(`${key}|fused`, () => {
    const ends = e.node('Add', [lens, S1]);
    // onnxruntime's convention: seqlens_k is each sequence's total length - 1, total_sequence_length their maximum.
    const seqlensK = e.node('Cast', [e.node('Sub', [ends, e.int64([1], [])])], [attr('to', OnnxType.INT32)]);
    const total = e.node('Cast', [e.node('ReduceMax', [ends], [attr('keepdims', 0)])], [attr('to', OnnxType.INT32)]);
    // Rows outside the written span keep the past: the CPU kernel zeroes them and the WebGPU one writes other
    // sequences' new rows there (measured with onnxruntime-node 1.30), neither of which the op's semantics allow.
    const rows = e.node('Range', [e.int64([0], []), e.node('Squeeze', [T1, e.int64([0])]), e.int64([1], [])]);
    const lo = e.node('Unsqueeze', [lens, e.int64([1])]);
    const hi = e.node('Unsqueeze', [ends, e.int64([1])]);
    const written = e.node('And', [e.node('GreaterOrEqual', [rows, lo]), e.node('Less', [rows, hi])]);
    return { seqlensK, total, mask: e.node('Unsqueeze', [written, e.int64([1, 3])]) };
  });
  const attrs = [attr('num_heads', d.Hq), attr('kv_num_heads', d.Hkv), attr('scale', d.scale, true)];
  const [out, pk, pv] = e.nodeMulti('GroupQueryAttention', [ins[0], ins[1], ins[2], ins[3], ins[4], seqlensK, total], 3, attrs, 'com.microsoft');
  if (e.donated.has(ins[3]) && e.donated.has(ins[4]) && ins[3] !== ins[4]) {
    // Donated caches: the kernel writes the new rows into the past buffers themselves (onnxruntime shares past and
    // present when they are one buffer) and touches no other row, so nothing is copied and no mask is needed.
    e.aliases.set(pk, ins[3]);
    e.aliases.set(pv, ins[4]);
    return [out, pk, pv];
  }
  return [out, e.node('Where', [mask, pk, ins[3]]), e.node('Where', [mask, pv, ins[4]])];
}

function plainGqa(e: Emitter, ins: string[], d: Dims, lens: string, S1: string, T1: string): string[] {
  const { Hq, Hkv, D, scale, type } = d;
  const G = Hq / Hkv;
  const zero = e.int64([0], []);
  const one = e.int64([1], []);
  const scalar = (v: string) => e.node('Squeeze', [v, e.int64([0])]);
  const B1 = e.node('Shape', [ins[0]], [attr('start', 0), attr('end', 1)]);
  // [B, S, Hkv*D] -> [B, Hkv, S, D]
  const heads = (x: string) => e.node('Transpose', [e.node('Reshape', [x, e.int64([0, 0, Hkv, D])])], [attr('perm', [0, 2, 1, 3])]);
  // ScatterND indices [B, Hkv, S, 3]: (b, h, lens[b] + i)
  const span = e.node('Concat', [B1, e.int64([Hkv]), S1, e.int64([1])], [attr('axis', 0)]);
  const bIdx = e.node('Reshape', [e.node('Range', [zero, scalar(B1), one]), e.int64([-1, 1, 1, 1])]);
  const hIdx = e.int64([...Array(Hkv).keys()], [1, Hkv, 1, 1]);
  const steps = e.node('Range', [zero, scalar(S1), one]);
  // The absolute position of new token i of sequence b, [B, 1, S, 1].
  const at = e.node('Add', [e.node('Reshape', [lens, e.int64([-1, 1, 1, 1])]), e.node('Reshape', [steps, e.int64([1, 1, -1, 1])])]);
  const idx = e.node('Concat', [bIdx, hIdx, at].map((i) => e.node('Expand', [i, span])), [attr('axis', -1)]);
  const pk = e.node('ScatterND', [ins[3], idx, heads(ins[1])]);
  const pv = e.node('ScatterND', [ins[4], idx, heads(ins[2])]);
  // Queries as [B, Hkv, G, S, D] so each kv head broadcasts over its G query heads instead of being copied.
  const q5 = e.node('Transpose', [e.node('Reshape', [ins[0], e.int64([0, 0, Hkv, G, D])])], [attr('perm', [0, 2, 3, 1, 4])]);
  const kT = e.node('Transpose', [e.node('Unsqueeze', [pk, e.int64([2])])], [attr('perm', [0, 1, 2, 4, 3])]);
  const scores = e.node('Mul', [e.node('MatMul', [q5, kT]), e.float(new Float32Array([scale]), [], type)]);
  // Row j of the cache is hidden from query i of sequence b when j > lens[b] + i; Where, not Add, so that stale
  // rows never enter the sum (their values still meet a zero weight in p v, so they must be finite).
  const rows = e.node('Range', [zero, scalar(T1), one]);
  const hidden = e.node('Greater', [rows, e.node('Unsqueeze', [at, e.int64([2])])]);
  const masked = e.node('Where', [hidden, e.float(new Float32Array([-Infinity]), [], type), scores]);
  const p = e.node('Softmax', [masked], [attr('axis', -1)]);
  const o = e.node('MatMul', [p, e.node('Unsqueeze', [pv, e.int64([2])])]);
  const out = e.node('Reshape', [e.node('Transpose', [o], [attr('perm', [0, 3, 1, 2, 4])]), e.int64([0, 0, Hq * D])]);
  return [out, pk, pv];
}
