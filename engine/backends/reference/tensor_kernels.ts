/** Plain TypeScript kernels of the tensor ops, in float64: reductions, selection, slicing, scattering. */
import type { F } from './kernels.ts';

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
