/** Reference kernels of the tensor ops (engine/graph/ops_tensor.ts, ops_slice.ts, ops_index.ts). */
import { ShapeError } from '../../errors.ts';
import type { RefKernel } from './kernel.ts';
import { normAxis } from '../../graph/infer.ts';
import { reduceAxes, keepDims } from '../../graph/ops_quant.ts';
import { rangeAttrs } from '../../graph/ops_tensor.ts';
import { sliceAxes } from '../../graph/ops_slice.ts';
import { scatterReduction } from '../../graph/ops_index.ts';
import * as K from './kernels.ts';
import * as T from './tensor_kernels.ts';

const unary = (fn: (p: number) => number): RefKernel => ({ inputs: [x] }) => [x!.f().map(fn)];
const compare = (fn: (p: number, q: number) => boolean): RefKernel => ({ inputs: [a, b] }) => [K.binary((p, q) => (fn(p, q) ? 1 : 0), a!.f(), a!.shape, b!.f(), b!.shape)[0]];

export const TENSOR_KERNELS = {
  ReduceSum: ({ inputs: [x], attrs }) => [T.reduceSum(x!.f(), x!.shape, reduceAxes(x!.shape, attrs.axes, 'ReduceSum'), keepDims(attrs))],
  ReduceMean: ({ inputs: [x], attrs }) => [T.reduceMean(x!.f(), x!.shape, reduceAxes(x!.shape, attrs.axes, 'ReduceMean'))],
  Expand: ({ inputs: [x], outputs: [o] }) => {
    const idx = K.broadcastIndex(x!.shape, o.shape);
    const v = x!.f();
    return [Float64Array.from(idx, (i) => v[i])];
  },
  Exp: unary(Math.exp),
  Log: unary(Math.log),
  Sqrt: unary(Math.sqrt),
  Neg: unary((v) => -v),
  Equal: compare((p, q) => p === q),
  Less: compare((p, q) => p < q),
  Where: ({ inputs: [c, a, b], outputs: [o] }) => {
    const [ic, ia, ib] = [c!, a!, b!].map((v) => K.broadcastIndex(v.shape, o.shape));
    const [cv, av, bv] = [c!.f(), a!.f(), b!.f()];
    return [Float64Array.from(ic, (j, i) => (cv[j] ? av[ia[i]] : bv[ib[i]]))];
  },
  Range: ({ inputs: [offset], attrs, outputs: [o] }) => {
    const { start, delta } = rangeAttrs(attrs);
    const base = offset ? offset.f()[0] : 0;
    return [Float64Array.from({ length: o.shape[0] }, (_, i) => base + start + i * delta)];
  },
  Slice: ({ inputs: [x], attrs, outputs: [o] }) => {
    const shape = x!.shape;
    const starts = shape.map(() => 0);
    const steps = shape.map(() => 1);
    // On concrete sizes, numeric bounds clamp as ONNX says; the graph's shapes took symbolic bounds as given, so
    // the two must agree here, or a bound lay outside its axis.
    for (const a of sliceAxes('Slice', shape, attrs)) {
      const len = o.shape[a.axis];
      const start = a.start as number;
      const fits = a.trusted ? start + len <= shape[a.axis] : a.length === len;
      if (!fits) {
        throw new ShapeError('Slice', [shape, o.shape], `axis ${a.axis} of length ${shape[a.axis]}: the bounds ${JSON.stringify({ starts: attrs.starts, ends: attrs.ends })} reach outside it in this run (the graph expected ${len} elements)`);
      }
      starts[a.axis] = start;
      steps[a.axis] = a.step;
    }
    return [T.slice(x!.f(), shape, starts, steps, o.shape)];
  },
  Concat: ({ inputs, attrs }) => {
    const xs = inputs.map((v) => v!);
    return [T.concat(xs.map((v) => v.f()), xs.map((v) => v.shape), normAxis('Concat', (attrs.axis ?? 0) as number, xs[0].shape.length, xs[0].shape))];
  },
  Split: ({ inputs: [x], attrs, outputs }) => {
    const axis = normAxis('Split', (attrs.axis ?? 0) as number, x!.shape.length, x!.shape);
    return T.split(x!.f(), x!.shape, axis, outputs.map((o) => o.shape[axis]));
  },
  ArgMax: ({ inputs: [x], attrs }) => [T.argMax(x!.f(), x!.shape, normAxis('ArgMax', (attrs.axis ?? 0) as number, x!.shape.length, x!.shape))],
  TopK: ({ inputs: [x], attrs }) => {
    const axis = normAxis('TopK', (attrs.axis ?? -1) as number, x!.shape.length, x!.shape);
    return T.topK(x!.f(), x!.shape, axis, attrs.k as number, Boolean(attrs.largest ?? true));
  },
  GatherND: ({ inputs: [data, idx] }) => [T.gatherND(data!.f(), data!.shape, idx!.data as Int32Array, idx!.shape)],
  ScatterND: ({ inputs: [data, idx, upd], attrs }) => [T.scatterND(data!.f(), data!.shape, idx!.data as Int32Array, idx!.shape, upd!.f(), scatterReduction(attrs))],
} satisfies Record<string, RefKernel>;
