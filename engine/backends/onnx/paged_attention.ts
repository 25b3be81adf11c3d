/**
 * PagedAttention lowered to plain ONNX, so it runs on every provider. Gather reads each sequence's slots through its
 * slot table (a block table expanded to slots) into [Hkv, B, L, D]; ScatterND puts the step's new keys and values at
 * positions pastLengths[b] .. pastLengths[b]+S-1 of that gathered copy (never into the pool: the caller writes the
 * pool); a masked softmax(q k^T) v attends over it, each kv head broadcast over its G query heads.
 */
import type { Node } from '../../graph/graph.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';

export function lowerPagedAttention(e: Emitter, n: Node, ins: string[]): string[] {
  const [q, k, v, kc, vc, table, lens, tree] = ins;
  const Hq = n.attrs.numHeads as number;
  const Hkv = n.attrs.kvNumHeads as number;
  const D = (n.inputs[0]!.shape[2] as number) / Hq;
  const G = Hq / Hkv;
  const type = onnxType(n.inputs[0]!.dtype, e.opts);
  const scale = (n.attrs.scale as number | undefined) ?? 1 / Math.sqrt(D);
  // Every layer reads the same slots at the same lengths: the indices and the mask are built once per graph.
  const { readAt, writeAt, hidden } = e.memo(`paged|${table}|${lens}|${tree ?? ''}`, () => {
    const zero = e.int64([0], []);
    const one = e.int64([1], []);
    const scalar = (x: string) => e.node('Squeeze', [x, e.int64([0])]);
    const readAt = e.node('Cast', [table], [attr('to', OnnxType.INT64)]);
    const B1 = e.node('Shape', [table], [attr('start', 0), attr('end', 1)]);
    const L1 = e.node('Shape', [table], [attr('start', 1), attr('end', 2)]);
    const S1 = e.node('Shape', [q], [attr('start', 1), attr('end', 2)]);
    const past = e.node('Reshape', [e.node('Cast', [lens], [attr('to', OnnxType.INT64)]), e.int64([-1, 1, 1])]); //   [B, 1, 1]
    const i = e.node('Reshape', [e.node('Range', [zero, scalar(S1), one]), e.int64([1, -1, 1])]); //                    [1, S, 1]
    // ScatterND indices [Hkv, B, S, 3]: (head, sequence, pastLengths[b] + i) of the gathered copy.
    const span = e.node('Concat', [e.int64([Hkv]), B1, S1, e.int64([1])], [attr('axis', 0)]);
    const hIdx = e.int64([...Array(Hkv).keys()], [Hkv, 1, 1, 1]);
    const bIdx = e.node('Reshape', [e.node('Range', [zero, scalar(B1), one]), e.int64([1, -1, 1, 1])]);
    const at = e.node('Unsqueeze', [e.node('Add', [past, i]), e.int64([0])]); //                                      [1, B, S, 1]
    const writeAt = e.node('Concat', [hIdx, bIdx, at].map((x) => e.node('Expand', [x, span])), [attr('axis', -1)]);
    // Position j of sequence b is hidden from its new token i unless j < past[b], or j is new token j - past[b] that
    // the mask shows to i (causal without one: j <= past[b] + i). [1, B, 1, S, L], broadcast over the heads.
    const j = e.node('Reshape', [e.node('Range', [zero, scalar(L1), one]), e.int64([1, 1, -1])]); //                    [1, 1, L]
    const rel = e.node('Sub', [j, past]); //                                                                          [B, 1, L]
    let visible: string;
    if (tree) {
      const S = scalar(S1);
      const inNew = e.node('And', [e.node('GreaterOrEqual', [rel, zero]), e.node('Less', [rel, S])]);
      const clipped = e.node('Max', [e.node('Min', [rel, e.node('Sub', [S, one])]), zero]);
      const BSL = e.node('Concat', [B1, S1, L1], [attr('axis', 0)]);
      const shown = e.node('GatherElements', [tree, e.node('Expand', [clipped, BSL])], [attr('axis', 2)]); //           [B, S, L]
      visible = e.node('Or', [e.node('Less', [rel, zero]), e.node('And', [inNew, shown])]);
    } else {
      visible = e.node('LessOrEqual', [rel, i]); //                                                                   [B, S, L]
    }
    return { readAt, writeAt, hidden: e.node('Unsqueeze', [e.node('Not', [visible]), e.int64([0, 2])]) };
  });
  // [B, S, Hkv*D] -> [Hkv, B, S, D]: the new rows in the gathered copy's order.
  const rows = (x: string) => e.node('Transpose', [e.node('Reshape', [x, e.int64([0, 0, Hkv, D])])], [attr('perm', [2, 0, 1, 3])]);
  // Each sequence's keys, head by head, the new ones put in: [Hkv, B, L, D] -> [Hkv, B, 1, L, D].
  const read = (c: string, x: string) => e.node('Unsqueeze', [e.node('ScatterND', [e.node('Gather', [c, readAt], [attr('axis', 1)]), writeAt, rows(x)]), e.int64([2])]);
  const q5 = e.node('Transpose', [e.node('Reshape', [q, e.int64([0, 0, Hkv, G, D])])], [attr('perm', [2, 0, 3, 1, 4])]); // [Hkv, B, G, S, D]
  const kT = e.node('Transpose', [read(kc, k)], [attr('perm', [0, 1, 2, 4, 3])]);
  const scores = e.node('Mul', [e.node('MatMul', [q5, kT]), e.float(new Float32Array([scale]), [], type)]); //       [Hkv, B, G, S, L]
  const masked = e.node('Where', [hidden, e.float(new Float32Array([-Infinity]), [], type), scores]);
  const o = e.node('MatMul', [e.node('Softmax', [masked], [attr('axis', -1)]), read(vc, v)]); //                         [Hkv, B, G, S, D]
  return [e.node('Reshape', [e.node('Transpose', [o], [attr('perm', [1, 3, 0, 2, 4])]), e.int64([0, 0, Hq * D])])];
}
