/**
 * Finding LLM.int8's outlier feature dimensions (Dettmers et al. 2022, "LLM.int8()", section 3.2): the columns of X
 * where any |x| >= threshold (default 6.0), from max over rows of |x| per column.
 *
 * Where it runs. 'host' (the default for a product): one pass over X's values that also makes the finiteness check
 * every quantizer makes, so it adds little to a read that happens anyway. 'device': ReduceMax(Abs(X)) as its own
 * graph, then K floats read back. Both leave the comparison with the threshold to the host, because the outlier set
 * sizes the fp16 product and a graph's sizes follow from its inputs' sizes, not from their values. On the CPU
 * provider a second session per product costs more than the scan itself (measured at 128 x 4096: 7 ms for the int8
 * product alone, 15 ms with a device scan before it, as onnxruntime's per-session worker threads keep spinning after
 * a run and compete with the next session's).
 */
import { Graph } from '../graph/graph.ts';
import { rowShape } from '../graph/row_shape.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ShapeError } from '../errors.ts';
import { assertFloat, NonFiniteError, QuantizationError, unravel } from './errors.ts';
import { deviceOf } from './nodes.ts';

export const DEFAULT_THRESHOLD = 6;

/** threshold >= 0; Infinity turns the decomposition off (all int8), 0 sends every dimension to fp16. */
export function checkThreshold(threshold: number): number {
  if (typeof threshold !== 'number' || Number.isNaN(threshold) || threshold < 0) {
    throw new QuantizationError(`LLM.int8 threshold must be a number >= 0 (Infinity: no outliers, plain int8), got ${threshold}`);
  }
  return threshold;
}

export interface OutlierScan {
  /** max over rows of |x| per feature dimension (column), [K]. */
  colAbsmax: Float32Array;
  /** Dimensions with colAbsmax >= threshold, ascending. */
  dims: number[];
}

export type ScanSite = 'host' | 'device';

/** max |x| per column of x [..., K] in one host pass, raising NonFiniteError at the first NaN or infinity. */
export function scanColumnsHost(x: Tensor, op: string): Float32Array {
  const v = x.dtype === 'fp32' ? (x.data as Float32Array) : x.toFloat32();
  const K = x.shape[x.shape.length - 1];
  const colAbsmax = new Float32Array(K);
  for (let i = 0, k = 0; i < v.length; i++) {
    const a = Math.abs(v[i]);
    if (!(a < Infinity)) throw new NonFiniteError(op, i, unravel(i, x.shape), v[i], x.shape);
    if (a > colAbsmax[k]) colAbsmax[k] = a;
    if (++k === K) k = 0;
  }
  return colAbsmax;
}

/** max |x| per column on x's device: ReduceMax(Abs(x)) over every row, read back to the host. */
export async function scanColumnsDevice(x: Tensor): Promise<Float32Array> {
  const dev = deviceOf(x, 'findOutlierDims');
  const r = x.shape.length;
  const K = x.shape[r - 1];
  // The rows symbolic: one graph per dtype, rank and width scans a batch of any size.
  const g = dev.graph(dev, `LLM.int8 outlier scan|${x.dtype}|${r}|${K}`, () => {
    const g = new Graph('LLM.int8 outlier scan');
    const xin = g.input('x', x.dtype, rowShape(r, K));
    const x2 = r === 2 ? xin : g.op('Reshape', [xin], { shape: [-1, K] })[0];
    return g.output(g.op('ReduceMax', [g.op('Abs', [x2])[0]], { axes: [0], keepdims: false })[0]);
  });
  const [t] = await dev.run(g, [x], { label: 'llm.int8.colAbsmax' });
  const colAbsmax = t.toFloat32();
  t.dispose();
  return colAbsmax;
}

/** The dimensions with colAbsmax >= threshold, ascending. */
export function outlierDimsOf(colAbsmax: Float32Array, threshold: number): number[] {
  const dims: number[] = [];
  for (let k = 0; k < colAbsmax.length; k++) if (colAbsmax[k] >= threshold) dims.push(k);
  return dims;
}

/**
 * The feature dimensions (columns of x [..., K]) where any |x| >= threshold. The device scan does not check
 * finiteness (a NaN never reaches the threshold); the host scan raises NonFiniteError.
 */
export async function findOutlierDims(x: Tensor, threshold = DEFAULT_THRESHOLD, opts: { on?: ScanSite } = {}): Promise<OutlierScan> {
  checkThreshold(threshold);
  assertFloat('findOutlierDims', x);
  if (x.shape.length < 1 || x.numel === 0) throw new ShapeError('findOutlierDims', [x.shape], 'x must be a non-empty [..., K]');
  const on = opts.on ?? 'device';
  if (on !== 'host' && on !== 'device') throw new QuantizationError(`findOutlierDims: 'on' must be 'host' or 'device', got ${JSON.stringify(on)}`);
  const colAbsmax = on === 'host' ? scanColumnsHost(x, 'findOutlierDims') : await scanColumnsDevice(x);
  return { colAbsmax, dims: outlierDimsOf(colAbsmax, threshold) };
}
