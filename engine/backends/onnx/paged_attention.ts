/**
 * PagedAttention lowered to plain ONNX, so it runs on every provider. The pool, viewed as [Hkv, blocks, blockSize*D],
 * is read block by block: Gather through each sequence's block table gives [Hkv, B, nb*blockSize, D], each head's
 * cached keys contiguous. The step's new keys and values come from the inputs: their scores are computed apart and
 * joined to the cached ones before one softmax, so nothing is written into the gathered copy and the pool is only read.
 */
import type { Node } from '../../graph/graph.ts';
import { attr, onnxType, type Emitter } from './emitter.ts';
import { OnnxType } from './proto.ts';

export function lowerPagedAttention(e: Emitter, n: Node, ins: string[]): string[] {
  const [q, k, v, kc, vc, table, lens, tree] = ins;
  const Hq = n.attrs.numHeads as number;
  const Hkv = n.attrs.kvNumHeads as number;
  const bs = (n.attrs.blockSize as number | undefined) ?? 1;
  const D = (n.inputs[0]!.shape[2] as number) / Hq;
  const G = Hq / Hkv;
  const type = onnxType(n.inputs[0]!.dtype, e.opts);
  const scale = (n.attrs.scale as number | undefined) ?? 1 / Math.sqrt(D);
  // Every layer reads the same blocks at the same lengths: indices and masks are built once per graph.
  const { readAt, hiddenOld, hiddenNew, L1 } = e.memo(`paged|${table}|${lens}|${tree ?? ''}|${bs}`, () => {
    const zero = e.int64([0], []);
    const one = e.int64([1], []);
    const scalar = (x: string) => e.node('Squeeze', [x, e.int64([0])]);
    const readAt = e.node('Cast', [table], [attr('to', OnnxType.INT64)]);
    const L1 = e.node('Mul', [e.node('Shape', [table], [attr('start', 1), attr('end', 2)]), e.int64([bs])]);
    const S1 = e.node('Shape', [q], [attr('start', 1), attr('end', 2)]);
    // Cached position j of sequence b is hidden unless j < past[b]: [1, B, 1, 1, L], broadcast over heads and queries.
    const past = e.node('Reshape', [e.node('Cast', [lens], [attr('to', OnnxType.INT64)]), e.int64([1, -1, 1, 1, 1])]);
    const j = e.node('Range', [zero, scalar(L1), one]);
    const hiddenOld = e.node('GreaterOrEqual', [j, past]);
    // New token j is hidden from new token i unless the mask shows it (causal without one): [1, B or 1, 1, S, S].
    let hiddenNew: string;
    if (tree) {
      hiddenNew = e.node('Unsqueeze', [e.node('Not', [tree]), e.int64([0, 2])]);
    } else {
      const r = e.node('Range', [zero, scalar(S1), one]);
      hiddenNew = e.node('Greater', [e.node('Unsqueeze', [r, e.int64([0])]), e.node('Unsqueeze', [r, e.int64([1])])]); // [S, S]: j > i
    }
    return { readAt, hiddenOld, hiddenNew, L1 };
  });
  const minusInf = e.float(new Float32Array([-Infinity]), [], type);
  const sc = e.float(new Float32Array([scale]), [], type);
  // Each sequence's cached keys, head by head, a block at a time: [Hkv, B, nb, bs*D] -> [Hkv, B, 1, L, D].
  const cached = (c: string) => {
    const blocks = e.node('Reshape', [c, e.int64([Hkv, -1, bs * D])]);
    return e.node('Reshape', [e.node('Gather', [blocks, readAt], [attr('axis', 1)]), e.int64([Hkv, 0, 1, -1, D])]);
  };
  // The new tokens' keys and values, [B, S, Hkv*D] -> [Hkv, B, 1, S, D].
  const fresh = (x: string) => e.node('Unsqueeze', [e.node('Transpose', [e.node('Reshape', [x, e.int64([0, 0, Hkv, D])])], [attr('perm', [2, 0, 1, 3])]), e.int64([2])]);
  const q5 = e.node('Transpose', [e.node('Reshape', [q, e.int64([0, 0, Hkv, G, D])])], [attr('perm', [2, 0, 3, 1, 4])]); // [Hkv, B, G, S, D]
  const scores = (keys: string, hidden: string) => {
    const s = e.node('Mul', [e.node('MatMul', [q5, e.node('Transpose', [keys], [attr('perm', [0, 1, 2, 4, 3])])]), sc]);
    return e.node('Where', [hidden, minusInf, s]);
  };
  const joined = e.node('Concat', [scores(cached(kc), hiddenOld), scores(fresh(k), hiddenNew)], [attr('axis', -1)]); // [Hkv, B, G, S, L + S]
  const p = e.node('Softmax', [joined], [attr('axis', -1)]);
  const big = e.int64([2 ** 62]);
  const pOld = e.node('Slice', [p, e.int64([0]), L1, e.int64([-1])]);
  const pNew = e.node('Slice', [p, L1, big, e.int64([-1])]);
  const o = e.node('Add', [e.node('MatMul', [pOld, cached(vc)]), e.node('MatMul', [pNew, fresh(v)])]); //                 [Hkv, B, G, S, D]
  return [e.node('Reshape', [e.node('Transpose', [o], [attr('perm', [1, 3, 0, 2, 4])]), e.int64([0, 0, Hq * D])])];
}
