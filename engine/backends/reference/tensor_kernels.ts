/** Plain TypeScript kernels of the tensor ops, in float64: reductions, selection, slicing, joining, indexing. */
import { ShapeError } from '../../errors.ts';
import type { F } from './kernels.ts';
import { strides } from './kernels.ts';

const numel = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/** Sum over sorted, distinct `axes` (float64, in index order). */
export function reduceSum(x: F, shape: readonly number[], axes: readonly number[], _keepdims: boolean): F {
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Float64Array(numel(kept));
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    for (let d = 0; d < rank; d++) o = o * kept[d] + (axes.includes(d) ? 0 : idx[d]);
    out[o] += x[i];
    for (let d = rank - 1; d >= 0 && ++idx[d] === shape[d]; d--) idx[d] = 0; // row-major odometer
  }
  return out;
}

export function reduceMean(x: F, shape: readonly number[], axes: readonly number[]): F {
  const n = numel(axes.map((a) => shape[a]));
  return reduceSum(x, shape, axes, true).map((v) => v / n);
}

/** [outer, len, inner] around one axis: a row-major tensor seen as outer blocks of len rows of inner elements. */
function around(shape: readonly number[], axis: number): [number, number, number] {
  return [numel(shape.slice(0, axis)), shape[axis], numel(shape.slice(axis + 1))];
}

/** The first index of the largest value along `axis` (NaN never wins). */
export function argMax(x: F, shape: readonly number[], axis: number): Int32Array {
  const [outer, len, inner] = around(shape, axis);
  const out = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      for (let j = 1; j < len; j++) if (x[(o * len + j) * inner + i] > x[(o * len + best) * inner + i] || Number.isNaN(x[(o * len + best) * inner + i])) best = j;
      out[o * inner + i] = best;
    }
  }
  return out;
}

/** The k largest (or smallest) values along `axis`, sorted, ties in index order; with their indices. */
export function topK(x: F, shape: readonly number[], axis: number, k: number, largest: boolean): [F, Int32Array] {
  const [outer, len, inner] = around(shape, axis);
  if (k > len) throw new ShapeError('TopK', [shape], `k = ${k} is more than the ${len} elements along axis ${axis} in this run`);
  const vals = new Float64Array(outer * k * inner);
  const idx = new Int32Array(outer * k * inner);
  const order = Array.from({ length: len }, (_, j) => j);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number) => x[(o * len + j) * inner + i];
      order.sort((p, q) => (at(p) === at(q) ? p - q : largest === at(p) > at(q) ? -1 : 1));
      for (let t = 0; t < k; t++) {
        vals[(o * k + t) * inner + i] = at(order[t]);
        idx[(o * k + t) * inner + i] = order[t];
      }
      order.sort((p, q) => p - q);
    }
  }
  return [vals, idx];
}

/** out[i] = x[start + i * step] on every axis (unsliced axes: start 0, step 1). */
export function slice(x: F, shape: readonly number[], starts: readonly number[], steps: readonly number[], outShape: readonly number[]): F {
  const st = strides(shape);
  const r = shape.length;
  const out = new Float64Array(numel(outShape));
  const idx = new Array<number>(r).fill(0);
  for (let i = 0; i < out.length; i++) {
    let j = 0;
    for (let d = 0; d < r; d++) j += (starts[d] + idx[d] * steps[d]) * st[d];
    out[i] = x[j];
    for (let d = r - 1; d >= 0 && ++idx[d] === outShape[d]; d--) idx[d] = 0;
  }
  return out;
}

export function concat(xs: readonly F[], shapes: readonly (readonly number[])[], axis: number): F {
  const lens = shapes.map((s) => s[axis]);
  const total = lens.reduce((p, q) => p + q, 0);
  const [outer, , inner] = around(shapes[0], axis);
  const out = new Float64Array(outer * total * inner);
  for (let o = 0; o < outer; o++) {
    let at = o * total * inner;
    xs.forEach((x, k) => {
      const n = lens[k] * inner;
      out.set(x.subarray(o * n, (o + 1) * n), at);
      at += n;
    });
  }
  return out;
}

export function split(x: F, shape: readonly number[], axis: number, lens: readonly number[]): F[] {
  const [outer, len, inner] = around(shape, axis);
  let from = 0;
  return lens.map((n) => {
    const out = new Float64Array(outer * n * inner);
    for (let o = 0; o < outer; o++) out.set(x.subarray((o * len + from) * inner, (o * len + from + n) * inner), o * n * inner);
    from += n;
    return out;
  });
}

/** The flat offsets of the data slices int32 [..., r] indices address (negative indices count from the end). */
function ndOffsets(op: string, dataShape: readonly number[], idx: Int32Array, idxShape: readonly number[]): { offsets: Int32Array; inner: number } {
  const r = idxShape[idxShape.length - 1];
  const st = strides(dataShape);
  const n = idx.length / r;
  const offsets = new Int32Array(n);
  for (let t = 0; t < n; t++) {
    let o = 0;
    for (let m = 0; m < r; m++) {
      let v = idx[t * r + m];
      const d = dataShape[m];
      if (v < -d || v >= d) throw new ShapeError(op, [dataShape, idxShape], `index ${v} at indices position ${t * r + m} is out of range for axis ${m} of length ${d}`);
      if (v < 0) v += d;
      o += v * st[m];
    }
    offsets[t] = o;
  }
  return { offsets, inner: numel(dataShape.slice(r)) };
}

export function gatherND(data: F, dataShape: readonly number[], idx: Int32Array, idxShape: readonly number[]): F {
  const { offsets, inner } = ndOffsets('GatherND', dataShape, idx, idxShape);
  const out = new Float64Array(offsets.length * inner);
  offsets.forEach((o, t) => out.set(data.subarray(o, o + inner), t * inner));
  return out;
}

/** In index order, so with 'none' and repeated indices the last write wins; 'add' sums in float64. */
export function scatterND(data: F, dataShape: readonly number[], idx: Int32Array, idxShape: readonly number[], updates: F, reduction: 'none' | 'add'): F {
  const { offsets, inner } = ndOffsets('ScatterND', dataShape, idx, idxShape);
  const out = Float64Array.from(data);
  offsets.forEach((o, t) => {
    for (let i = 0; i < inner; i++) out[o + i] = reduction === 'add' ? out[o + i] + updates[t * inner + i] : updates[t * inner + i];
  });
  return out;
}
