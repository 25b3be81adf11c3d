/**
 * Quantization granularity (per tensor, row, column, block; Dettmers et al. 2022, section 2): which values share one
 * scale, as a 2-D view of the tensor whose rows or columns are the scale groups, so a single per-axis
 * QuantizeLinear quantizes every group at once.
 */
import { ShapeError } from '../errors.ts';
import { QuantizationError } from './errors.ts';

export const GRANULARITIES = ['tensor', 'row', 'column', 'block'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export interface Layout {
  readonly granularity: Granularity;
  readonly blockSize: number | null;
  /** A transpose applied before the view (per column above rank 2: the column axis moves last), or null. */
  readonly perm: readonly number[] | null;
  /** The (transposed) tensor viewed as [rows, cols]. */
  readonly view: readonly [number, number];
  /** The view axis one scale group runs along; scales are indexed by the other one. */
  readonly reduceAxis: 0 | 1;
  /**
   * The scales' shape: a scalar per tensor; else x's rank, with 1 where a group spans the axis (row: last axis 1;
   * column: axis -2 is 1) and K / blockSize in the last axis per block. Every scale shape but block broadcasts
   * against x.
   */
  readonly scaleShape: readonly number[];
  readonly numScales: number;
  /** Values that share each scale. */
  readonly groupSize: number;
}

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

export function layoutFor(shape: readonly number[], granularity: Granularity, blockSize?: number): Layout {
  const op = `quantize per ${granularity}`;
  if (!(GRANULARITIES as readonly string[]).includes(granularity)) {
    throw new QuantizationError(`unknown granularity ${JSON.stringify(granularity)}; expected one of ${GRANULARITIES.join(', ')}`);
  }
  if (granularity !== 'block' && blockSize !== undefined) {
    throw new QuantizationError(`blockSize applies to granularity 'block' only, got blockSize ${blockSize} with '${granularity}'`);
  }
  const n = numel(shape);
  const r = shape.length;
  if (n === 0) throw new ShapeError(op, [shape], 'the tensor is empty: there is no absmax to take');
  const last = shape[r - 1];
  switch (granularity) {
    case 'tensor':
      return { granularity, blockSize: null, perm: null, view: [1, n], reduceAxis: 1, scaleShape: [], numScales: 1, groupSize: n };
    case 'row':
      if (r < 1) throw new ShapeError(op, [shape], 'a scalar has no rows; quantize it per tensor');
      return { granularity, blockSize: null, perm: null, view: [n / last, last], reduceAxis: 1, scaleShape: [...shape.slice(0, -1), 1], numScales: n / last, groupSize: last };
    case 'column': {
      if (r < 2) throw new ShapeError(op, [shape], 'columns need a tensor of rank 2 or more ([..., K, N]: one scale per column of K values)');
      const k = shape[r - 2];
      const scaleShape = [...shape.slice(0, -2), 1, last];
      if (r === 2) return { granularity, blockSize: null, perm: null, view: [k, last], reduceAxis: 0, scaleShape, numScales: last, groupSize: k };
      // Batched columns are not contiguous along one axis of any 2-D view: swap the last two axes first.
      const perm = [...Array(r).keys()];
      [perm[r - 2], perm[r - 1]] = [r - 1, r - 2];
      return { granularity, blockSize: null, perm, view: [n / k, k], reduceAxis: 1, scaleShape, numScales: n / k, groupSize: k };
    }
    case 'block': {
      if (blockSize === undefined || !Number.isSafeInteger(blockSize) || blockSize < 1) {
        throw new QuantizationError(`per-block quantization needs blockSize, a positive integer; got ${blockSize}`);
      }
      if (r < 1) throw new ShapeError(op, [shape], 'a scalar has no last axis to split into blocks');
      if (last % blockSize !== 0) throw new ShapeError(op, [shape], `blockSize ${blockSize} does not divide the last dimension (${last})`);
      return { granularity, blockSize, perm: null, view: [n / blockSize, blockSize], reduceAxis: 1, scaleShape: [...shape.slice(0, -1), last / blockSize], numScales: n / blockSize, groupSize: blockSize };
    }
  }
}
