/**
 * LLM.int8() matrix multiplication (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers
 * at Scale", section 3): find the feature dimensions where any |x| >= threshold (default 6.0), multiply those in fp16,
 * the rest in vector-wise int8, and sum. The graph is in ./llm_int8_nodes.ts, with the paper and bitsandbytes variants.
 *
 * What runs where. The host finds the outlier dimensions (max |x| per column, compared with the threshold; see
 * ./outlier_scan.ts for why, and for the device alternative), and the device runs the product as one graph: Gather of
 * X's outlier columns and W's outlier rows with those int32 indices, the fp16 MatMul, X's int8 quantization,
 * MatMulInteger, the rescale and the Add. The outlier set is decided on the host because it sizes the fp16 product:
 * a graph's sizes follow from its inputs' sizes, never from their values, so the number of outlier dimensions (in
 * power-of-two buckets) picks the graph, while the rows are symbolic (bitsandbytes, too, reads the outlier columns
 * back, through torch.argwhere).
 */
import { Graph } from '../graph/graph.ts';
import { fp32Rows } from '../graph/row_shape.ts';
import { Tensor } from '../tensor/tensor.ts';
import { DeviceError, ShapeError } from '../errors.ts';
import { assertFinite, assertFloat, QuantizationError } from './errors.ts';
import { checkThreshold, DEFAULT_THRESHOLD, outlierDimsOf, scanColumnsDevice, scanColumnsHost, type ScanSite } from './outlier_scan.ts';
import { Consts, deviceOf } from './nodes.ts';
import { quantizeWeightVectorwise, type Int8Weight } from './vectorwise.ts';
import { addBias, addLlmInt8Matmul, bucketOf, LLM_INT8_VARIANTS, outlierArrays, type LlmInt8Variant } from './llm_int8_nodes.ts';

/** The largest finite fp16: outlier dimensions are multiplied in fp16, so their activations must fit. */
export const FP16_MAX = 65504;

/** A weight W [K, N] (y = x @ W) ready for LLM.int8: int8 codes and column scales, plus its fp16 original (paper). */
export interface LlmInt8Weight {
  readonly int8: Int8Weight;
  /**
   * 'paper' only: W in fp16 [K, N]. The paper multiplies the outlier dimensions by the original weights, and which
   * dimensions are outliers is known only per batch, so any row may be needed: 2 bytes per weight on top of the int8
   * codes. bitsandbytes avoids that copy by dequantizing the int8 rows instead (null here).
   */
  readonly fp16: Tensor | null;
  readonly variant: LlmInt8Variant;
  readonly shape: readonly [number, number];
  readonly label: string;
  /** Bytes held, as the tracker counts them: int8 codes, fp32 scales, the fp16 copy (paper), total, bits per weight. */
  readonly bytes: { int8: number; scales: number; fp16: number; total: number; bitsPerValue: number };
}

export function checkVariant(variant: string): LlmInt8Variant {
  if (!(LLM_INT8_VARIANTS as readonly string[]).includes(variant)) {
    throw new QuantizationError(`unknown LLM.int8 variant ${JSON.stringify(variant)}; expected one of ${LLM_INT8_VARIANTS.join(', ')}`);
  }
  return variant as LlmInt8Variant;
}

/** A weight tensor moved to its own memory label and tag (kernel outputs arrive as activations). */
function own(t: Tensor, label: string): Tensor {
  const { device, shape, dtype, data } = t;
  t.dispose();
  return Tensor.adopt(device, shape, dtype, data, 'weights', label);
}

/** Quantizes W [K, N] vector-wise on its device; the paper variant also keeps W in fp16 (refused beyond fp16's range). */
export async function quantizeLlmInt8Weight(w: Tensor, opts: { variant?: LlmInt8Variant; label?: string } = {}): Promise<LlmInt8Weight> {
  const variant = checkVariant(opts.variant ?? 'paper');
  const label = opts.label ?? (w.label || 'w');
  assertFloat('quantizeLlmInt8Weight', w, 'w');
  if (w.shape.length !== 2) throw new ShapeError('quantizeLlmInt8Weight', [w.shape], 'the weight must be 2-D [K, N], used as x @ w');
  assertFinite('quantizeLlmInt8Weight', w);
  if (variant === 'paper') {
    const v = w.toFloat32();
    const far = v.findIndex((x) => Math.abs(x) > FP16_MAX);
    if (far >= 0) throw new QuantizationError(`quantizeLlmInt8Weight: w[${far}] = ${v[far]} is beyond fp16's range (${FP16_MAX}); the paper variant keeps W in fp16`);
  }
  const int8 = await quantizeWeightVectorwise(w, { label });
  int8.q.retag('weights');
  int8.scale.retag('weights');
  let fp16: Tensor | null = null;
  if (variant === 'paper') {
    const dev = deviceOf(w, 'quantizeLlmInt8Weight');
    const g = dev.graph(dev, `fp16 copy|${w.dtype}`, () => {
      const g = new Graph('fp16 copy');
      return g.output(g.op('Cast', [g.input('w', w.dtype, ['k', 'n'])], { to: 'fp16' })[0]);
    });
    fp16 = w.dtype === 'fp16' ? dev.copyFrom(w, { tag: 'weights', label: `${label}.fp16` }) : own((await dev.run(g, [w]))[0], `${label}.fp16`);
  }
  const [K, N] = w.shape;
  const b = { int8: int8.q.bytes, scales: int8.scale.bytes, fp16: fp16?.bytes ?? 0 };
  const total = b.int8 + b.scales + b.fp16;
  return { int8, fp16, variant, shape: [K, N], label, bytes: { ...b, total, bitsPerValue: (total * 8) / (K * N) } };
}

export function disposeLlmInt8Weight(w: LlmInt8Weight): void {
  w.int8.q.dispose();
  w.int8.scale.dispose();
  w.fp16?.dispose();
}

export interface LlmInt8Options {
  /** Default 6.0 (the paper's). */
  threshold?: number;
  /** Where the outlier dimensions are found: 'host' (default) or 'device'; see ./outlier_scan.ts. */
  scan?: ScanSite;
  /** [N], added in fp32 before the result is rounded to x's dtype; bound as a graph constant. */
  bias?: Tensor | null;
}

export interface LlmInt8Stats {
  variant: LlmInt8Variant;
  threshold: number;
  /** The outlier feature dimensions of this batch, ascending. */
  outlierDims: number[];
  /** Share of X's values (and of W's rows) that went through int8: (K - |O|) / K. */
  int8Share: number;
  /** |O| / K: the share kept in fp16. */
  fp16Share: number;
  /**
   * Bytes in each format. weight: int8 codes and fp32 column scales, the fp16 outlier rows this product gathered,
   * and the fp16 copy held for them (paper). activation: X's int8 codes and fp32 row scales, its fp16 outlier columns.
   */
  bytes: {
    weight: { int8: number; scales: number; fp16Rows: number; fp16Held: number };
    activation: { int8: number; scales: number; fp16Columns: number };
  };
}

export interface LlmInt8Result extends LlmInt8Stats {
  /** [..., N] in x's dtype. */
  y: Tensor;
}

/** The product with its intermediates (x flattened to [M, K]); see LlmInt8Nodes in ./llm_int8_nodes.ts. */
export interface LlmInt8Parts extends LlmInt8Result {
  y8: Tensor;
  acc: Tensor;
  xq: Tensor;
  xScale: Tensor;
  yOutlier: Tensor | null;
}

function check(x: Tensor, w: LlmInt8Weight, opts: LlmInt8Options): number {
  const op = 'llmInt8Matmul';
  const threshold = checkThreshold(opts.threshold ?? DEFAULT_THRESHOLD);
  if (w.int8.q.disposed || w.int8.scale.disposed || w.fp16?.disposed) throw new DeviceError(`${op}: the weight '${w.label}' was disposed`);
  assertFloat(op, x);
  const [K, N] = w.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== K) throw new ShapeError(op, [x.shape, w.shape], `x's last dimension must be the weight's K=${K}`);
  if (x.numel === 0) throw new ShapeError(op, [x.shape, w.shape], 'x is empty');
  if (x.device !== w.int8.q.device) throw new DeviceError(`${op}: x is on ${x.device.name}, the weight on ${w.int8.q.device.name}`);
  const b = opts.bias;
  if (b && (b.shape.length !== 1 || b.shape[0] !== N)) throw new ShapeError(op, [b.shape], `the bias must be [${N}]`);
  if (b && b.device !== x.device) throw new DeviceError(`${op}: the bias is on ${b.device.name}, x on ${x.device.name}`);
  if (opts.scan !== undefined && opts.scan !== 'host' && opts.scan !== 'device') throw new QuantizationError(`${op}: scan must be 'host' or 'device', got ${JSON.stringify(opts.scan)}`);
  return threshold;
}

/**
 * One graph per weight, x dtype and rank (rows symbolic), outlier bucket, bias and outputs, memoized on the device and
 * held by the weight's codes.
 */
function graphFor(x: Tensor, w: LlmInt8Weight, bucket: number, bias: Tensor | null, parts: boolean): Graph {
  const dev = deviceOf(x, 'llmInt8Matmul');
  return dev.graph(w.int8.q, `${x.dtype}|${x.shape.length}|${bucket}|${bias ? bias.id : '-'}|${parts}`, () => {
    const g = new Graph(`LLM.int8 matmul (${w.variant})`);
    const c = new Consts(g, dev);
    const [K, N] = w.shape;
    const { rows, back } = fp32Rows(g, x.dtype, x.shape.length, K);
    const outliers = bucket === 0 ? null : {
      mask: g.input('mask', 'fp32', [K]),
      idx: g.input('idx', 'int32', [bucket]),
      threshold: w.variant === 'bitsandbytes' ? g.input('threshold', 'fp32', []) : null,
    };
    const weight = { wq: g.constant(`${w.label}.q`, w.int8.q), wScale: g.constant(`${w.label}.scale`, w.int8.scale), w16: w.fp16 ? g.constant(`${w.label}.fp16`, w.fp16) : null };
    const n = addLlmInt8Matmul(c, rows, weight, w.variant, outliers);
    let y = n.y;
    if (bias) y = addBias(c, y, bias.dtype === 'fp32' ? g.constant('bias', bias) : g.op('Cast', [g.constant('bias', bias)], { to: 'fp32' })[0]);
    return g.output(back(y, N), ...(parts ? [n.y8, n.acc, n.xq, n.xScale, ...(n.yOutlier ? [n.yOutlier] : [])] : []));
  });
}

async function run(x: Tensor, w: LlmInt8Weight, opts: LlmInt8Options, parts: boolean): Promise<{ out: Tensor[]; stats: LlmInt8Stats }> {
  const threshold = check(x, w, opts);
  const dev = deviceOf(x, 'llmInt8Matmul');
  let colAbsmax: Float32Array;
  if (opts.scan === 'device') {
    assertFinite('llmInt8Matmul', x);
    colAbsmax = await scanColumnsDevice(x);
  } else {
    colAbsmax = scanColumnsHost(x, 'llmInt8Matmul'); // also the finiteness check
  }
  const dims = outlierDimsOf(colAbsmax, threshold);
  const far = dims.find((d) => colAbsmax[d] > FP16_MAX);
  if (far !== undefined) throw new QuantizationError(`llmInt8Matmul: outlier dimension ${far} holds |x| = ${colAbsmax[far]}, beyond fp16's range (${FP16_MAX}); LLM.int8 multiplies outliers in fp16`);
  const [K, N] = w.shape;
  const bucket = bucketOf(dims.length, K);
  const feeds = [x];
  const temp: Tensor[] = [];
  if (bucket > 0) {
    const { mask, idx } = outlierArrays(dims, K);
    temp.push(dev.tensor(mask, [K], 'fp32', { label: 'llm.int8.mask' }), dev.tensor(idx, [bucket], 'int32', { label: 'llm.int8.idx' }));
    if (w.variant === 'bitsandbytes') temp.push(dev.tensor([threshold], [], 'fp32', { label: 'llm.int8.threshold' }));
  }
  let out: Tensor[];
  try {
    out = await dev.run(graphFor(x, w, bucket, opts.bias ?? null, parts), [...feeds, ...temp], { label: 'llm.int8' });
  } finally {
    for (const t of temp) t.dispose();
  }
  const M = x.numel / K;
  const o = dims.length;
  const stats: LlmInt8Stats = {
    variant: w.variant,
    threshold,
    outlierDims: dims,
    int8Share: (K - o) / K,
    fp16Share: o / K,
    bytes: {
      weight: { int8: w.int8.q.bytes, scales: w.int8.scale.bytes, fp16Rows: 2 * o * N, fp16Held: w.fp16?.bytes ?? 0 },
      activation: { int8: M * K, scales: 4 * M, fp16Columns: 2 * M * o },
    },
  };
  return { out, stats };
}

/** x [..., K] (fp32, fp16 or bf16) times an LLM.int8 weight -> [..., N] in x's dtype, with the decomposition's statistics. */
export async function llmInt8Matmul(x: Tensor, w: LlmInt8Weight, opts: LlmInt8Options = {}): Promise<LlmInt8Result> {
  const { out, stats } = await run(x, w, opts, false);
  return { y: out[0], ...stats };
}

/** The same product with its intermediates; the int32 accumulator as an output keeps onnxruntime from fusing the rescale. */
export async function llmInt8MatmulParts(x: Tensor, w: LlmInt8Weight, opts: LlmInt8Options = {}): Promise<LlmInt8Parts> {
  const { out, stats } = await run(x, w, opts, true);
  const [y, y8, acc, xq, xScale, yOutlier] = out;
  return { y, y8, acc, xq, xScale, yOutlier: yOutlier ?? null, ...stats };
}
