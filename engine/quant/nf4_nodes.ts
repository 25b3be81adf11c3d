/**
 * A frozen 4-bit weight dequantized inside a graph (QLoRA, Dettmers et al. 2023, section 3: "we dequantize the
 * storage data type to the computation data type to perform the forward and backward pass"). The weight stays NF4
 * (or FP4) on the device: packed codes, absmax (optionally double-quantized) and the code tables; each forward pass
 * rebuilds the fp32 [in, out] matrix from them with Cast, Expand, Gather, Mul and Add, so a MatMul after it carries
 * gradients to the activations while the weight itself is never a param.
 *
 * Use:
 *   const w = quantizeNf4Weight(device, wFloat, [inFeatures, outFeatures], { label: 'layers.0.q_proj' });
 *   const feeds = new Map<Value, Tensor>();
 *   const W = addNf4Weight(g, w, 'layers.0.q_proj', { feeds });   // Value fp32 [inFeatures, outFeatures]
 *   const y = g.op('MatMul', [x, W])[0];
 *   ... device.run(g, g.inputs.map((v) => feeds.get(v) ?? yourFeed(v)));  disposeNf4Weight(w) when done.
 * Without `feeds` the tensors are graph constants (see Nf4Binding for what that costs in onnxruntime).
 *
 * Layout, shared with the Linear 'nf4' format and with bitsandbytes' Linear4bit: the codes are those of W^T
 * ([out, in], PyTorch's layout) flattened, so each block of blockSize runs along the input dimension, packed first
 * element in the high nibble (bitsandbytes' order, which onnxruntime's MatMulBnb4 reads).
 */
import type { Device } from '../device/device.ts';
import type { Graph, Value } from '../graph/graph.ts';
import { Tensor } from '../tensor/tensor.ts';
import { ShapeError } from '../errors.ts';
import { QuantizationError } from './errors.ts';
import { codebookQuantize, type Codebook4 } from './codebook4.ts';
import { NF4 } from './nf4.ts';
import { FP4 } from './fp4.ts';
import { DYNAMIC_MAP, doubleQuantize } from './double_quant.ts';

export const NF4_FORMATS = ['nf4', 'fp4'] as const;
export type Nf4Format = (typeof NF4_FORMATS)[number];
export const CODEBOOKS: Record<Nf4Format, Codebook4> = { nf4: NF4, fp4: FP4 };

export interface Nf4WeightOptions {
  /** 'nf4' (default) or 'fp4'. */
  format?: Nf4Format;
  /** Weights per absmax, along the input dimension; default 64. */
  blockSize?: number;
  /** Quantize the absmax to 8 bits as well (QLoRA's double quantization); default false. */
  doubleQuant?: boolean;
  /** absmax values per second-level scale; default 256. */
  blockSize2?: number;
  /** Memory labels become `${label}.nf4`, `${label}.absmax`, ...; default 'w'. */
  label?: string;
}

/** The device tensors of a double-quantized absmax. */
export interface Nf4DoubleQuant {
  /** uint8 [numBlocks]: indices into `map`. */
  readonly codes: Tensor;
  /** fp32 [ceil(numBlocks / blockSize2)]. */
  readonly scale: Tensor;
  /** fp32 [1]: the mean subtracted before quantizing. */
  readonly mean: Tensor;
  /** fp32 [256]: bitsandbytes' dynamic 8-bit map (stored with the tensor, as its `nested_quant_map` is). */
  readonly map: Tensor;
  readonly blockSize2: number;
}

export interface Nf4Weight {
  readonly format: Nf4Format;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly blockSize: number;
  readonly label: string;
  /** uint8 [ceil(in * out / 2)]: W^T [out, in] flattened, high nibble first. */
  readonly codes: Tensor;
  /** fp32 [ceil(in * out / blockSize)], or null when double-quantized. */
  readonly absmax: Tensor | null;
  readonly double: Nf4DoubleQuant | null;
  /** fp32 [16]: the level of each code, for the in-graph Gather. */
  readonly levels: Tensor;
}

/**
 * w [inFeatures, outFeatures] (row-major, y = x @ w; a Float32Array or a float Tensor) -> an Nf4Weight on `device`,
 * every tensor tagged 'weights'. The transpose to [out, in] happens here, once, on the host.
 */
export function quantizeNf4Weight(device: Device, w: Float32Array | Tensor, shape: readonly [number, number], opts: Nf4WeightOptions = {}): Nf4Weight {
  const op = 'quantizeNf4Weight';
  const format = opts.format ?? 'nf4';
  if (!(NF4_FORMATS as readonly string[]).includes(format)) throw new QuantizationError(`${op}: unknown format ${JSON.stringify(format)}; expected one of ${NF4_FORMATS.join(', ')}`);
  const [K, N] = shape;
  if (shape.length !== 2 || !Number.isSafeInteger(K) || !Number.isSafeInteger(N) || K < 1 || N < 1) throw new ShapeError(op, [shape], 'the weight must be 2-D [inFeatures, outFeatures]');
  if (w instanceof Tensor && w.shape.join() !== shape.join()) throw new ShapeError(op, [w.shape, shape], 'the tensor\'s shape and the shape given differ');
  const v = w instanceof Tensor ? w.toFloat32() : w;
  if (!(v instanceof Float32Array) || v.length !== K * N) throw new ShapeError(op, [[v.length], shape], `${K * N} fp32 values needed`);
  const t = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) t[n * K + k] = v[k * N + n];
  // Quantize everything on the host before the first device allocation: a bad value leaves nothing behind.
  const q = codebookQuantize(t, CODEBOOKS[format], { blockSize: opts.blockSize ?? 64, packing: 'bitsandbytes' }, op);
  const dq = opts.doubleQuant ? doubleQuantize(q.absmax, { blockSize2: opts.blockSize2 }) : null;
  const label = opts.label ?? 'w';
  const made: Tensor[] = [];
  const mk = (values: ArrayLike<number>, dims: number[], dtype: 'uint8' | 'fp32', name: string) => {
    const x = device.tensor(values, dims, dtype, { tag: 'weights', label: `${label}.${name}` });
    made.push(x);
    return x;
  };
  try {
    const codes = mk(q.codes, [q.codes.length], 'uint8', format);
    const absmax = dq ? null : mk(q.absmax, [q.absmax.length], 'fp32', 'absmax');
    const double = dq
      ? { codes: mk(dq.codes, [dq.length], 'uint8', 'absmax.q8'), scale: mk(dq.scale, [dq.scale.length], 'fp32', 'absmax.scale'), mean: mk([dq.mean], [1], 'fp32', 'absmax.mean'), map: mk(DYNAMIC_MAP, [256], 'fp32', 'absmax.map'), blockSize2: dq.blockSize2 }
      : null;
    const levels = mk(CODEBOOKS[format].values, [16], 'fp32', `${format}.levels`);
    return { format, inFeatures: K, outFeatures: N, blockSize: q.blockSize, label, codes, absmax, double, levels };
  } catch (e) {
    for (const x of made) x.dispose();
    throw e;
  }
}

/**
 * Bytes quantizeNf4Weight allocates for a [K, N] weight, as the tracker counts them: ceil(K N / 2) of codes, 4 per
 * absmax (or 1 per absmax, 4 per second-level scale, 4 for the mean and 1 KiB for the dynamic map), 64 for the levels.
 */
export function nf4WeightBytes(K: number, N: number, opts: Omit<Nf4WeightOptions, 'format' | 'label'> = {}): number {
  const nb = Math.ceil((K * N) / (opts.blockSize ?? 64));
  const constants = opts.doubleQuant ? nb + 4 * Math.ceil(nb / (opts.blockSize2 ?? 256)) + 4 + 4 * DYNAMIC_MAP.length : 4 * nb;
  return Math.ceil((K * N) / 2) + constants + 4 * 16;
}

/** Every device tensor of w (for byte counts and disposal). */
export function nf4WeightTensors(w: Nf4Weight): Tensor[] {
  const d = w.double;
  return [w.codes, ...(w.absmax ? [w.absmax] : []), ...(d ? [d.codes, d.scale, d.mean, d.map] : []), w.levels];
}

export function disposeNf4Weight(w: Nf4Weight): void {
  for (const t of nf4WeightTensors(w)) t.dispose();
}

const one = (g: Graph, ...args: Parameters<Graph['op']>) => g.op(...args)[0];

/** x [n] times one scale per block of bs (scales [ceil(n / bs)]); a partial last block is scaled on its own. */
export function addBlockScale(g: Graph, x: Value, scales: Value, n: number, bs: number): Value {
  const full = Math.floor(n / bs);
  const parts: Value[] = [];
  if (full > 0) {
    const head = full * bs === n ? x : one(g, 'Slice', [x], { starts: [0], ends: [full * bs] });
    const s = full === scales.shape[0] ? scales : one(g, 'Slice', [scales], { starts: [0], ends: [full] });
    const scaled = one(g, 'Mul', [one(g, 'Reshape', [head], { shape: [full, bs] }), one(g, 'Reshape', [s], { shape: [full, 1] })]);
    parts.push(one(g, 'Reshape', [scaled], { shape: [full * bs] }));
  }
  if (full * bs < n) {
    const tail = one(g, 'Slice', [x], { starts: [full * bs], ends: [n] });
    parts.push(one(g, 'Mul', [tail, one(g, 'Slice', [scales], { starts: [full], ends: [full + 1] })]));
  }
  return parts.length === 1 ? parts[0] : one(g, 'Concat', parts, { axis: 0 });
}

/**
 * How the weight's tensors enter a graph. Constants (the default) are baked into the compiled session, where
 * onnxruntime's constant folding evaluates the whole dequantization once and keeps the fp32 result: fast, but the
 * session then holds W in fp32. As inputs (`feeds` given), the 4-bit tensors are fed on every run (zero-copy on the
 * CPU) and dequantized in each pass, so nothing wider than the codes persists: QLoRA's memory saving.
 */
export interface Nf4Binding {
  /** When given, every tensor becomes a graph input, and its feed is recorded here: run with g.inputs.map(v => feeds.get(v)). */
  feeds?: Map<Value, Tensor>;
}

function bind(g: Graph, name: string, t: Tensor, b: Nf4Binding): Value {
  if (!b.feeds) return g.constant(name, t);
  const v = g.input(name, t.dtype, [...t.shape]);
  b.feeds.set(v, t);
  return v;
}

/** The fp32 absmax [numBlocks] of w: the stored constants, or map[code] * scale + mean rebuilt in the graph. */
export function addNf4Absmax(g: Graph, w: Nf4Weight, name: string, b: Nf4Binding = {}): Value {
  if (w.absmax) return bind(g, `${name}.absmax`, w.absmax, b);
  const d = w.double!;
  const n = d.codes.shape[0];
  const idx = one(g, 'Cast', [bind(g, `${name}.absmax.q8`, d.codes, b)], { to: 'int32' });
  const centred = one(g, 'Gather', [bind(g, `${name}.absmax.map`, d.map, b), idx], { axis: 0 });
  return one(g, 'Add', [addBlockScale(g, centred, bind(g, `${name}.absmax.scale`, d.scale, b), n, d.blockSize2), bind(g, `${name}.absmax.mean`, d.mean, b)]);
}

/**
 * The dequantized weight [inFeatures, outFeatures] (fp32, or bf16 rounded once from it). The engine has no integer
 * shifts, so a byte is never split: the 16 levels are expanded (in the graph) to a [256, 2] table holding the levels
 * of each byte's two codes, and one Gather per byte picks both.
 */
export function addNf4Weight(g: Graph, w: Nf4Weight, name: string, opts: Nf4Binding & { dtype?: 'fp32' | 'bf16' } = {}): Value {
  for (const t of nf4WeightTensors(w)) if (t.disposed) throw new QuantizationError(`addNf4Weight: weight '${w.label}' was disposed`);
  const K = w.inFeatures;
  const N = w.outFeatures;
  const numel = K * N;
  const bytes = w.codes.shape[0];
  const levels = bind(g, `${name}.${w.format}.levels`, w.levels, opts);
  const table = (shape: number[]) => one(g, 'Reshape', [one(g, 'Expand', [one(g, 'Reshape', [levels], { shape })], { shape: [16, 16] })], { shape: [256, 1] });
  // Row b of the [256, 2] table: the levels of byte b's two codes in bitsandbytes' order (high nibble first).
  const pairs = one(g, 'Concat', [table([16, 1]), table([1, 16])], { axis: 1 });
  const byte = one(g, 'Cast', [bind(g, `${name}.${w.format}`, w.codes, opts)], { to: 'int32' }); //             [bytes]
  let v = one(g, 'Reshape', [one(g, 'Gather', [pairs, byte], { axis: 0 })], { shape: [2 * bytes] }); //            [2 bytes]
  if (2 * bytes !== numel) v = one(g, 'Slice', [v], { starts: [0], ends: [numel] });
  const wt = one(g, 'Reshape', [addBlockScale(g, v, addNf4Absmax(g, w, name, opts), numel, w.blockSize)], { shape: [N, K] });
  const out = one(g, 'Transpose', [wt], { perm: [1, 0] }); //                                               [K, N]
  return opts.dtype === 'bf16' ? one(g, 'Cast', [out], { to: 'bf16' }) : out;
}
