/**
 * absmax (symmetric) and zero-point (asymmetric) int8 quantization per tensor, row, column or block, with
 * dequantization (Dettmers et al. 2022, "LLM.int8()", section 2.1). Both run on the tensor's own backend as one
 * graph per shape (memoized on the device), activations and weights alike: the same kernels (fp32 division, round
 * half to even, saturation, as ONNX specifies) give the same codes on every backend, the reference backend is the
 * oracle, and nothing is copied through the host. Only the finiteness check reads x on the host.
 */
import { Graph } from '../graph/graph.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { Device } from '../device/device.ts';
import type { FloatDType } from '../dtype/dtype.ts';
import type { MemoryTag } from '../memory/tracker.ts';
import { DTypeError } from '../errors.ts';
import { assertFinite, assertFloat, QuantizationError } from './errors.ts';
import { layoutFor, type Granularity, type Layout } from './layout.ts';
import { addAbsmax, addDequantize, addZeroPoint, Consts, deviceOf, fromView, toView } from './nodes.ts';
import { errorStats, type QuantErrorStats } from './stats.ts';

export const SCHEMES = ['absmax', 'zeropoint'] as const;
export type QuantScheme = (typeof SCHEMES)[number];

export interface QuantizeOptions {
  /** Default 'absmax'. */
  scheme?: QuantScheme;
  /** Default 'tensor'. */
  granularity?: Granularity;
  /** Values per block along the last axis; granularity 'block' only. */
  blockSize?: number;
  /** The codes' dtype: absmax is int8 only; zero-point defaults to uint8 (int8 codes are the same minus 128). */
  dtype?: 'int8' | 'uint8';
  /** Memory labels become `${label}.q`, `${label}.scale`, `${label}.zeroPoint`; default x's label, else 'x'. */
  label?: string;
}

/** Bytes held per part: the codes, and the scales (and zero points) counted separately, as the tracker sees them. */
export interface QuantBytes {
  data: number;
  scales: number;
  zeroPoints: number;
  total: number;
  /** total * 8 / number of values: 8 plus the scales' overhead. */
  bitsPerValue: number;
}

export interface QuantizedTensor {
  /** The codes, with x's shape. */
  readonly q: Tensor;
  /** fp32, shaped as layout.scaleShape (see engine/quant/layout.ts). */
  readonly scale: Tensor;
  /** Zero-point scheme only: the codes' dtype, the scale's shape. */
  readonly zeroPoint?: Tensor;
  readonly scheme: QuantScheme;
  readonly granularity: Granularity;
  readonly blockSize: number | null;
  /** The quantized tensor's shape. */
  readonly shape: readonly number[];
  /** The dtype it was quantized from, which dequantize returns by default. */
  readonly sourceDtype: FloatDType;
  readonly label: string;
  readonly bytes: QuantBytes;
}

function validate(x: Tensor, opts: QuantizeOptions): { scheme: QuantScheme; dtype: 'int8' | 'uint8'; layout: Layout } {
  const scheme = opts.scheme ?? 'absmax';
  if (!(SCHEMES as readonly string[]).includes(scheme)) throw new QuantizationError(`unknown scheme ${JSON.stringify(scheme)}; expected one of ${SCHEMES.join(', ')}`);
  const dtype = opts.dtype ?? (scheme === 'absmax' ? 'int8' : 'uint8');
  if (dtype !== 'int8' && dtype !== 'uint8') throw new DTypeError('quantize', [String(dtype)], 'codes must be int8 or uint8');
  if (scheme === 'absmax' && dtype !== 'int8') throw new QuantizationError('absmax is symmetric around 0: its codes are int8 (use scheme zeropoint for uint8)');
  return { scheme, dtype, layout: layoutFor(x.shape, opts.granularity ?? 'tensor', opts.blockSize) };
}

/**
 * The device's memo of quantize and dequantize graphs. These stay per shape: a layout's 2-D view, transpose and scale
 * shape are sizes computed from the shape, and weights, quantized once, are what they are mostly used for.
 */
function cached(dev: Device, key: string, build: () => Graph): Graph {
  return dev.graph(dev, `quant.int8|${key}`, build);
}

/** Moves a kernel output to its own memory label (the tracker records one label per allocation). */
export function relabel(t: Tensor, label: string): Tensor {
  const { device, shape, dtype, tag } = t;
  const data = t.data;
  t.dispose(); // first, so the bytes are never counted twice
  return Tensor.adopt(device, shape, dtype, data, tag, label);
}

export function bytesOf(q: Tensor, scale: Tensor, zeroPoint?: Tensor): QuantBytes {
  const zp = zeroPoint?.bytes ?? 0;
  const total = q.bytes + scale.bytes + zp;
  return { data: q.bytes, scales: scale.bytes, zeroPoints: zp, total, bitsPerValue: (total * 8) / q.numel };
}

/** Quantizes x (fp32, fp16 or bf16) on its device; the parts keep x's memory tag, so weights stay 'weights'. */
export async function quantize(x: Tensor, opts: QuantizeOptions = {}): Promise<QuantizedTensor> {
  const { scheme, dtype, layout } = validate(x, opts);
  const sourceDtype = assertFloat('quantize', x);
  assertFinite('quantize', x);
  const dev = deviceOf(x, 'quantize');
  const key = `q|${scheme}|${dtype}|${layout.granularity}|${layout.blockSize}|${x.dtype}[${x.shape}]`;
  const g = cached(dev, key, () => {
    const g = new Graph(`quantize ${scheme} per ${layout.granularity}`);
    const c = new Consts(g, dev);
    const xin = g.input('x', x.dtype, x.shape);
    const xf = x.dtype === 'fp32' ? xin : g.op('Cast', [xin], { to: 'fp32' })[0];
    const view = toView(g, xf, layout);
    const parts = scheme === 'absmax' ? addAbsmax(c, view, layout.reduceAxis) : addZeroPoint(c, view, layout.reduceAxis, dtype);
    const shaped = (v: typeof view) => g.op('Reshape', [v], { shape: layout.scaleShape })[0];
    g.output(fromView(g, parts.q, layout, x.shape), shaped(parts.scale), ...(parts.zeroPoint ? [shaped(parts.zeroPoint)] : []));
    return g;
  });
  const label = opts.label ?? (x.label || 'x');
  const [q, scale, zeroPoint] = await dev.run(g, [x], { tag: x.tag, label: `${label}.q` });
  const parts = { q, scale: relabel(scale, `${label}.scale`), ...(zeroPoint ? { zeroPoint: relabel(zeroPoint, `${label}.zeroPoint`) } : {}) };
  return {
    ...parts,
    scheme,
    granularity: layout.granularity,
    blockSize: layout.blockSize,
    shape: [...x.shape],
    sourceDtype,
    label,
    bytes: bytesOf(parts.q, parts.scale, parts.zeroPoint),
  };
}

/** (q - zeroPoint) * scale on the codes' device, in fp32 rounded to `dtype` (default: the dtype quantized from). */
export async function dequantize(qt: QuantizedTensor, opts: { dtype?: FloatDType; tag?: MemoryTag; label?: string } = {}): Promise<Tensor> {
  const layout = layoutFor(qt.shape, qt.granularity, qt.blockSize ?? undefined);
  const out = opts.dtype ?? qt.sourceDtype;
  const dev = deviceOf(qt.q, 'dequantize');
  const zp = qt.zeroPoint ?? null;
  const key = `dq|${qt.q.dtype}|${zp ? 'zp' : '-'}|${layout.granularity}|${layout.blockSize}|${out}[${qt.shape}]`;
  const g = cached(dev, key, () => {
    const g = new Graph(`dequantize per ${layout.granularity}`);
    const flat = [layout.numScales];
    const q = g.input('q', qt.q.dtype, qt.shape);
    const scale = g.op('Reshape', [g.input('scale', 'fp32', layout.scaleShape)], { shape: flat })[0];
    const z = zp ? g.op('Reshape', [g.input('zeroPoint', zp.dtype, layout.scaleShape)], { shape: flat })[0] : null;
    let y = fromView(g, addDequantize(g, toView(g, q, layout), scale, z, layout.reduceAxis), layout, qt.shape);
    if (out !== 'fp32') y = g.op('Cast', [y], { to: out })[0];
    return g.output(y);
  });
  const [y] = await dev.run(g, zp ? [qt.q, qt.scale, zp] : [qt.q, qt.scale], { tag: opts.tag ?? 'activations', label: opts.label ?? `${qt.label}.dequantized` });
  return y;
}

export interface RoundTrip {
  quantized: QuantizedTensor;
  dequantized: Tensor;
  error: QuantErrorStats;
}

/** quantize, dequantize, and the error of the round trip against x. */
export async function roundTrip(x: Tensor, opts: QuantizeOptions = {}): Promise<RoundTrip> {
  const quantized = await quantize(x, opts);
  const dequantized = await dequantize(quantized);
  return { quantized, dequantized, error: errorStats(x, dequantized) };
}

export function disposeQuantized(qt: QuantizedTensor): void {
  qt.q.dispose();
  qt.scale.dispose();
  qt.zeroPoint?.dispose();
}
