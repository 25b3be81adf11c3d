/** Quantization error statistics (max abs, mean abs, RMS, relative to absmax), computed on the host in float64. */
import { ShapeError } from '../errors.ts';
import { Tensor } from '../tensor/tensor.ts';

export interface QuantErrorStats {
  /** max |x - x̂|. */
  maxAbs: number;
  /** mean |x - x̂|. */
  meanAbs: number;
  /** sqrt(mean (x - x̂)^2). */
  rms: number;
  /** max |x|: absmax quantization's error is at most scale / 2 = absmax / 254 per group. */
  absmax: number;
  /** maxAbs / absmax (0 when x is all zeros): the error in units of the range quantization had to cover. */
  relative: number;
  count: number;
}

const values = (t: Tensor | ArrayLike<number>) => (t instanceof Tensor ? t.toFloat32() : t);
const shapeOf = (t: Tensor | ArrayLike<number>) => (t instanceof Tensor ? t.shape : [t.length]);

/** The error of x̂ (a dequantized tensor) against x. Statistics are reports, not kernels: host float64 is exact enough. */
export function errorStats(x: Tensor | ArrayLike<number>, xhat: Tensor | ArrayLike<number>): QuantErrorStats {
  const a = values(x);
  const b = values(xhat);
  if (a.length !== b.length || shapeOf(x).join() !== shapeOf(xhat).join()) {
    throw new ShapeError('errorStats', [shapeOf(x), shapeOf(xhat)], 'x and its reconstruction must have one shape');
  }
  let maxAbs = 0;
  let sumAbs = 0;
  let sumSq = 0;
  let absmax = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    maxAbs = Math.max(maxAbs, e);
    sumAbs += e;
    sumSq += e * e;
    absmax = Math.max(absmax, Math.abs(a[i]));
  }
  const n = a.length;
  return { maxAbs, meanAbs: n ? sumAbs / n : 0, rms: n ? Math.sqrt(sumSq / n) : 0, absmax, relative: absmax ? maxAbs / absmax : 0, count: n };
}
