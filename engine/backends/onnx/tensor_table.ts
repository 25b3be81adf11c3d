/**
 * ONNX lowerings of the tensor ops (engine/graph/ops_tensor.ts, ops_slice.ts, ops_index.ts). ONNX indexes with
 * int64 where the engine uses int32: indices are widened and results narrowed inside the graph.
 */
import { keepDims, reduceAxes } from '../../graph/ops_quant.ts';
import { normAxis } from '../../graph/infer.ts';
import { rangeAttrs } from '../../graph/ops_tensor.ts';
import { sliceAxes, splitSizes } from '../../graph/ops_slice.ts';
import { scatterReduction, topKAttrs } from '../../graph/ops_index.ts';
import type { Dim } from '../../graph/dims.ts';
import type { Node } from '../../graph/graph.ts';
import { attr, type Emitter } from './emitter.ts';
import { all, guard } from './guard.ts';
import { OnnxType } from './proto.ts';
import type { Lowering } from './table.ts';

const same: Lowering = (e, n, ins) => [e.node(n.op, ins)];
const cast = (e: Emitter, x: string, to: number) => e.node('Cast', [x], [attr('to', to)]);
const reduce: Lowering = (e, n, ins) => [e.node(n.op, [ins[0], e.int64(reduceAxes(n.inputs[0]!.shape, n.attrs.axes, n.op))], [attr('keepdims', keepDims(n.attrs) ? 1 : 0)])];
/**
 * int32 indices [..., r] widened to int64 and checked against the run's sizes of the r axes they address: the
 * WebGPU provider writes or reads an out-of-range index silently (onnxruntime's CPU kernels refuse it), so a bad
 * slot in a KV cache write stops the run on every provider.
 */
function checkedIndices(e: Emitter, n: Node, idx: string): string {
  const shape = n.inputs[1]!.shape;
  const r = shape[shape.length - 1] as number;
  const wide = cast(e, idx, OnnxType.INT64);
  const dims = e.shape(n.inputs[0]!.shape.slice(0, r));
  const inside = e.node('And', [e.node('GreaterOrEqual', [wide, e.node('Neg', [dims])]), e.node('Less', [wide, dims])]);
  const checked = guard(e, wide, all(e, inside), `${n.op}: an index is outside the axis of data it addresses`);
  return e.node('Reshape', [checked, e.node('Shape', [wide])], [attr('allowzero', 1)]);
}

/** Bounds past what an int64 holds exactly from a double are capped; ONNX clamps them to the axis anyway. */
const cap = (v: number) => Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, v));

export const TENSOR_LOWERINGS = {
  ReduceSum: reduce,
  ReduceMean: reduce,
  Expand: (e, n, ins) => [e.node('Expand', [ins[0], e.shape(n.outputs[0].shape)])],
  Exp: same,
  Log: same,
  Sqrt: same,
  Neg: same,
  Equal: same,
  Less: same,
  Where: same,
  Range: (e, n, ins) => {
    const { length, start, delta, dtype } = rangeAttrs(n.attrs);
    let r: string;
    if (typeof length === 'number') {
      const v = Array.from({ length }, (_, i) => start + i * delta);
      r = dtype === 'int32' ? e.int32s(Int32Array.from(v), [length]) : e.float(Float32Array.from(v), [length]);
    } else {
      // int64 0..length-1 from the run's size, then scaled and shifted in the range's dtype.
      const i = e.node('Range', [e.int64([0], []), e.node('Squeeze', [e.dim(length), e.int64([0])]), e.int64([1], [])]);
      if (dtype === 'int32') {
        let v = delta === 1 ? i : e.node('Mul', [i, e.int64([delta], [])]);
        if (start !== 0) v = e.node('Add', [v, e.int64([start], [])]);
        r = cast(e, v, OnnxType.INT32);
      } else {
        r = cast(e, i, OnnxType.FLOAT);
        if (delta !== 1) r = e.node('Mul', [r, e.float(Float32Array.of(delta), [])]);
        if (start !== 0) r = e.node('Add', [r, e.float(Float32Array.of(start), [])]);
      }
    }
    return [ins[0] ? e.node('Add', [r, ins[0]]) : r];
  },
  Slice: (e, n, ins) => {
    const axes = sliceAxes('Slice', n.inputs[0]!.shape, n.attrs);
    const starts = (n.attrs.starts as number[]).map(cap);
    const ends = n.attrs.ends as Dim[];
    const endT = ends.every((v) => typeof v === 'number') ? e.int64(ends.map(cap)) : e.node('Concat', ends.map((v) => (typeof v === 'number' ? e.int64([cap(v)]) : e.dim(v))), [attr('axis', 0)]);
    const out = e.node('Slice', [ins[0], e.int64(starts), endT, e.int64(axes.map((a) => a.axis)), e.int64(axes.map((a) => a.step))]);
    // onnxruntime clamps every bound; where the graph's shape took a bound as given, a reshape to that shape makes
    // a bound outside its axis an error of this run instead of a tensor shorter than its shape says.
    return [axes.some((a) => a.trusted) ? e.node('Reshape', [out, e.shape(n.outputs[0].shape)], [attr('allowzero', 1)]) : out];
  },
  Concat: (e, n, ins) => [e.node('Concat', ins, [attr('axis', normAxis('Concat', (n.attrs.axis ?? 0) as number, n.inputs[0]!.shape.length, n.inputs[0]!.shape))])],
  Split: (e, n, ins) => {
    const { axis, sizes } = splitSizes('Split', n.inputs[0]!, n.attrs);
    return e.nodeMulti('Split', [ins[0], e.shape(sizes)], sizes.length, [attr('axis', axis)]);
  },
  ArgMax: (e, n, ins) => {
    const axis = normAxis('ArgMax', (n.attrs.axis ?? 0) as number, n.inputs[0]!.shape.length, n.inputs[0]!.shape);
    return [cast(e, e.node('ArgMax', ins, [attr('axis', axis), attr('keepdims', keepDims(n.attrs) ? 1 : 0), attr('select_last_index', 0)]), OnnxType.INT32)];
  },
  TopK: (e, n, ins) => {
    const { k, axis, largest } = topKAttrs('TopK', n.inputs[0]!, n.attrs);
    const [values, indices] = e.nodeMulti('TopK', [ins[0], e.int64([k])], 2, [attr('axis', axis), attr('largest', largest ? 1 : 0), attr('sorted', 1)]);
    return [values, cast(e, indices, OnnxType.INT32)];
  },
  GatherND: (e, n, ins) => [e.node('GatherND', [ins[0], checkedIndices(e, n, ins[1])])],
  ScatterND: (e, n, ins) => {
    const red = scatterReduction(n.attrs);
    const idx = checkedIndices(e, n, ins[1]);
    if (red === 'none') return [e.node('ScatterND', [ins[0], idx, ins[2]])];
    const add = (data: string, upd: string) => e.node('ScatterND', [data, idx, upd], [attr('reduction', 'add')]);
    const dt = n.outputs[0].dtype;
    // The WebGPU provider adds with atomics, which it has only for 32-bit types: native fp16 sums in fp32, once rounded.
    if (dt === 'fp16' && e.opts.nativeFp16) return [cast(e, add(cast(e, ins[0], OnnxType.FLOAT), cast(e, ins[2], OnnxType.FLOAT)), OnnxType.FLOAT16)];
    // Sums of fp16 or bf16 values carried as fp32 need rounding back; lower.ts counts ScatterND as exact data movement.
    const out = add(ins[0], ins[2]);
    if (dt !== 'bf16' && dt !== 'fp16') return [out];
    return [cast(e, cast(e, out, dt === 'fp16' ? OnnxType.FLOAT16 : OnnxType.BFLOAT16), OnnxType.FLOAT)];
  },
} satisfies Record<string, Lowering>;
