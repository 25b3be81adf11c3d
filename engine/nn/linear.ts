/**
 * A Linear layer y = x W + b with one interface for every weight format (fp32, fp16, bf16, vector-wise int8, LLM.int8,
 * 4-bit), so a model can swap its linears and compare quality, speed and memory per format (Dettmers et al. 2022,
 * "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale"). W is [inFeatures, outFeatures] (x @ W; a
 * PyTorch or Hugging Face weight is [out, in] and needs one transpose when loaded). The weights live on the device,
 * tagged 'weights' under `${label}.*`, and are bound as graph constants, so onnxruntime prepacks them once.
 */
import { Graph, type Value } from '../graph/graph.ts';
import { rowShape } from '../graph/row_shape.ts';
import type { Device } from '../device/device.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { FloatDType } from '../dtype/dtype.ts';
import { DeviceError, ShapeError } from '../errors.ts';
import { assertFloat, QuantizationError } from '../quant/errors.ts';
import { Consts } from '../quant/nodes.ts';
import { addVectorwiseMatmul, quantizeWeightVectorwise, type Int8Weight } from '../quant/vectorwise.ts';
import { quantize, type QuantizedTensor } from '../quant/int8.ts';
import { checkVariant, llmInt8Matmul, quantizeLlmInt8Weight, type LlmInt8Weight } from '../quant/llm_int8.ts';
import { checkThreshold, DEFAULT_THRESHOLD } from '../quant/outlier_scan.ts';
import { addBias, addLlmInt8Matmul, type LlmInt8Variant } from '../quant/llm_int8_nodes.ts';
import { quantizeWeightInt4, type Int4Weight } from '../quant/int4_blockwise.ts';
import { addNf4Absmax, nf4WeightTensors, quantizeNf4Weight, type Nf4Weight } from '../quant/nf4_nodes.ts';

export const LINEAR_FORMATS = ['fp32', 'fp16', 'bf16', 'int8-tensor', 'int8', 'llm.int8', 'int4', 'nf4', 'fp4'] as const;
export type LinearFormat = (typeof LINEAR_FORMATS)[number];

export interface LinearOptions {
  /** Default 'fp32'. */
  format?: LinearFormat;
  /** [outFeatures]; stored in the format's compute dtype (fp16, bf16, else fp32). */
  bias?: Tensor | ArrayLike<number> | null;
  /** llm.int8: the outlier threshold, default 6.0. */
  threshold?: number;
  /** llm.int8: 'paper' (default; keeps W in fp16 for the outlier rows) or 'bitsandbytes' (dequantizes int8 rows). */
  variant?: LlmInt8Variant;
  /**
   * int4: weights per scale along K, a power of two >= 16 dividing K; default 32. nf4/fp4: weights per absmax
   * (bitsandbytes' blocks over W^T flattened), one of 16, 32, 64, 128, 256 (MatMulBnb4's list); default 64.
   */
  blockSize?: number;
  /** nf4/fp4: quantize the absmax constants to 8 bits too (QLoRA's double quantization); default false. */
  doubleQuant?: boolean;
  /** nf4/fp4 with doubleQuant: absmax values per second-level scale; default 256. */
  blockSize2?: number;
  /**
   * int4: MatMulNBits' accuracy level. 0 (default): x stays fp32, the product is x times the dequantized weight.
   * 4: x is quantized to int8 per block on the fly (faster on CPUs with VNNI, and no longer weight-only).
   */
  accuracyLevel?: 0 | 4;
  /** Memory labels become `${label}.w`, `${label}.q`, ...; default 'linear'. */
  label?: string;
}

export interface LinearBytes {
  /** Every weight part (codes, scales, fp16 copies), bias excluded. */
  weights: number;
  bias: number;
  total: number;
  /** Bytes per tensor, by memory label. */
  parts: Record<string, number>;
  /** weights * 8 / (inFeatures * outFeatures): 32, 16, 8 plus scales, 4 plus scales. */
  bitsPerWeight: number;
}

export interface LinearInfo {
  format: LinearFormat;
  inFeatures: number;
  outFeatures: number;
  label: string;
  device: string;
  bytes: LinearBytes;
  /** How forward computes, in words. */
  compute: string;
  options: { threshold?: number; variant?: LlmInt8Variant; blockSize?: number; accuracyLevel?: number; doubleQuant?: boolean; blockSize2?: number };
}

type Held = { kind: 'float'; w: Tensor } | { kind: 'int8'; w: Int8Weight } | { kind: 'int8-tensor'; w: QuantizedTensor } | { kind: 'llm.int8'; w: LlmInt8Weight } | { kind: 'int4'; w: Int4Weight } | { kind: 'nf4'; w: Nf4Weight };

const COMPUTE_DTYPE: Record<LinearFormat, FloatDType> = { fp32: 'fp32', fp16: 'fp16', bf16: 'bf16', 'int8-tensor': 'fp32', int8: 'fp32', 'llm.int8': 'fp32', int4: 'fp32', nf4: 'fp32', fp4: 'fp32' };

export class Linear {
  private disposedFlag = false;

  private constructor(
    readonly device: Device,
    readonly format: LinearFormat,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly label: string,
    private readonly held: Held,
    private readonly bias: Tensor | null,
    private readonly opts: LinearInfo['options'],
  ) {}

  /** Converts or quantizes w [inFeatures, outFeatures] (fp32, fp16 or bf16, any device) into the format, on `device`. */
  static async fromWeights(device: Device, w: Tensor, opts: LinearOptions = {}): Promise<Linear> {
    const format = opts.format ?? 'fp32';
    if (!(LINEAR_FORMATS as readonly string[]).includes(format)) throw new QuantizationError(`unknown Linear format ${JSON.stringify(format)}; expected one of ${LINEAR_FORMATS.join(', ')}`);
    assertFloat('Linear.fromWeights', w, 'w');
    if (w.shape.length !== 2) throw new ShapeError('Linear.fromWeights', [w.shape], 'the weight must be 2-D [inFeatures, outFeatures]');
    const [K, N] = w.shape;
    const label = opts.label ?? 'linear';
    const extra: LinearInfo['options'] = {};
    if (format === 'llm.int8') {
      extra.threshold = checkThreshold(opts.threshold ?? DEFAULT_THRESHOLD);
      extra.variant = checkVariant(opts.variant ?? 'paper');
    }
    const b = opts.bias == null ? null : opts.bias instanceof Tensor ? opts.bias.toFloat32() : opts.bias;
    if (b && (b.length !== N || (opts.bias instanceof Tensor && opts.bias.shape.length !== 1))) {
      throw new ShapeError('Linear.fromWeights', [opts.bias instanceof Tensor ? opts.bias.shape : [b.length], [N]], `the bias must be [${N}]`);
    }
    const src = w.device === device ? w : device.copyFrom(w, { tag: 'weights', label: `${label}.source` });
    let held: Held;
    let bias: Tensor | null = null;
    try {
      if (format === 'fp32' || format === 'fp16' || format === 'bf16') {
        // One copy: the source's own bytes when it has the format's dtype, else its values widened once.
        const w = src.dtype === format ? device.copyFrom(src, { tag: 'weights', label: `${label}.w` }) : device.tensor(src.toFloat32(), [K, N], format, { tag: 'weights', label: `${label}.w` });
        held = { kind: 'float', w };
      } else if (format === 'int8') {
        const q = await quantizeWeightVectorwise(src, { label });
        q.q.retag('weights');
        q.scale.retag('weights');
        held = { kind: 'int8', w: q };
      } else if (format === 'int8-tensor') {
        const q = await quantize(src, { scheme: 'absmax', granularity: 'tensor', label });
        q.q.retag('weights');
        q.scale.retag('weights');
        held = { kind: 'int8-tensor', w: q };
      } else if (format === 'llm.int8') {
        held = { kind: 'llm.int8', w: await quantizeLlmInt8Weight(src, { variant: extra.variant, label }) };
      } else if (format === 'nf4' || format === 'fp4') {
        extra.blockSize = opts.blockSize ?? 64;
        extra.doubleQuant = opts.doubleQuant ?? false;
        if (![16, 32, 64, 128, 256].includes(extra.blockSize)) throw new QuantizationError(`${format} blockSize must be one of 16, 32, 64, 128, 256 (onnxruntime's MatMulBnb4), got ${extra.blockSize}`);
        if (typeof extra.doubleQuant !== 'boolean') throw new QuantizationError(`${format} doubleQuant must be true or false, got ${JSON.stringify(extra.doubleQuant)}`);
        if (extra.doubleQuant) extra.blockSize2 = opts.blockSize2 ?? 256;
        held = { kind: 'nf4', w: quantizeNf4Weight(device, src, [K, N], { format, blockSize: extra.blockSize, doubleQuant: extra.doubleQuant, blockSize2: extra.blockSize2, label }) };
      } else {
        extra.blockSize = opts.blockSize ?? 32;
        extra.accuracyLevel = opts.accuracyLevel ?? 0;
        if (extra.accuracyLevel !== 0 && extra.accuracyLevel !== 4) throw new QuantizationError(`int4 accuracyLevel must be 0 or 4, got ${extra.accuracyLevel}`);
        held = { kind: 'int4', w: quantizeWeightInt4(device, src, { blockSize: extra.blockSize, label }) };
      }
      if (b) bias = device.tensor(b, [N], COMPUTE_DTYPE[format], { tag: 'weights', label: `${label}.bias` });
    } finally {
      if (src !== w) src.dispose();
    }
    return new Linear(device, format, K, N, label, held, bias, extra);
  }

  private tensors(): Tensor[] {
    const h = this.held;
    const ts = h.kind === 'float' ? [h.w] : h.kind === 'int8' || h.kind === 'int8-tensor' ? [h.w.q, h.w.scale] : h.kind === 'llm.int8' ? [h.w.int8.q, h.w.int8.scale, ...(h.w.fp16 ? [h.w.fp16] : [])] : h.kind === 'nf4' ? nf4WeightTensors(h.w) : [h.w.codes, h.w.scales];
    return this.bias ? [...ts, this.bias] : ts;
  }

  private check(x: Tensor): void {
    if (this.disposedFlag) throw new DeviceError(`Linear '${this.label}' was disposed`);
    assertFloat('Linear.forward', x);
    if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== this.inFeatures) {
      throw new ShapeError('Linear.forward', [x.shape, [this.inFeatures, this.outFeatures]], `x's last dimension must be inFeatures=${this.inFeatures}`);
    }
    if (x.numel === 0) throw new ShapeError('Linear.forward', [x.shape], 'x is empty');
    if (x.device !== this.device) throw new DeviceError(`Linear '${this.label}': x is on ${x.device.name}, the layer on ${this.device.name}`);
  }

  /** x [..., inFeatures] (fp32, fp16 or bf16) -> [..., outFeatures] in x's dtype. */
  async forward(x: Tensor): Promise<Tensor> {
    this.check(x);
    if (this.held.kind === 'llm.int8') {
      return (await llmInt8Matmul(x, this.held.w, { threshold: this.opts.threshold, bias: this.bias })).y;
    }
    // One graph per dtype and rank: the leading dims are symbols, so every batch size runs the same session.
    const g = this.device.graph(this, `${x.dtype}|${x.shape.length}`, () => {
      const g = new Graph(`Linear ${this.label} (${this.format})`);
      return g.output(this.addTo(g, g.input('x', x.dtype, rowShape(x.shape.length, this.inFeatures))));
    });
    const [y] = await this.device.run(g, [x], { label: `${this.label}.y` });
    return y;
  }

  /**
   * Adds this layer to a larger graph (a whole decode step): x [..., inFeatures] -> [..., outFeatures] in x's dtype.
   * llm.int8 finds its outlier dimensions in the graph here (a column mask of max |x| >= threshold) and multiplies
   * the outlier part as a full fp16 product with the regular columns zeroed: the same sum as forward(), which
   * gathers the outlier columns found on the host, so a whole model step stays one session call.
   */
  addTo(g: Graph, x: Value): Value {
    if (this.disposedFlag) throw new DeviceError(`Linear '${this.label}' was disposed`);
    const h = this.held;
    const K = this.inFeatures;
    const N = this.outFeatures;
    const lead = x.shape.slice(0, -1);
    const cd = COMPUTE_DTYPE[this.format];
    const one = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
    let v = x.dtype === cd ? x : one('Cast', [x], { to: cd });
    // MatMul and MatMulNBits take [..., K] as it is; the int8 path quantizes rows of a 2-D view. Every Reshape of a
    // symbolic shape costs a few nodes per run (reading the run's sizes), so none is added where none is needed.
    const flat = x.shape.length === 1 || ((h.kind === 'int8' || h.kind === 'int8-tensor' || h.kind === 'llm.int8') && x.shape.length !== 2);
    if (flat) v = one('Reshape', [v], { shape: [-1, K] });
    let y: Value;
    if (h.kind === 'float') y = one('MatMul', [v, g.constant(`${this.label}.w`, h.w)]);
    else if (h.kind === 'int8') y = addVectorwiseMatmul(new Consts(g, this.device), v, g.constant(`${this.label}.q`, h.w.q), g.constant(`${this.label}.scale`, h.w.scale)).y;
    else if (h.kind === 'int8-tensor') {
      const scale = g.op('Reshape', [g.constant(`${this.label}.scale`, h.w.scale)], { shape: [1] })[0];
      y = addVectorwiseMatmul(new Consts(g, this.device), v, g.constant(`${this.label}.q`, h.w.q), scale, { perTensor: true }).y;
    } else if (h.kind === 'llm.int8') y = this.addLlmInt8(g, v, h.w);
    else if (h.kind === 'nf4') {
      // A double-quantized absmax is rebuilt in the graph (8-bit codes -> fp32) and fed to the kernel, which takes fp32.
      const attrs = { K, N, blockSize: h.w.blockSize, quantType: h.w.format === 'nf4' ? 1 : 0 };
      y = one('MatMulBnb4', [v, g.constant(`${this.label}.${h.w.format}`, h.w.codes), addNf4Absmax(g, h.w, this.label)], attrs);
    } else {
      const attrs = { K, N, blockSize: h.w.blockSize, bits: 4, accuracyLevel: this.opts.accuracyLevel ?? 0 };
      y = one('MatMulNBits', [v, g.constant(`${this.label}.q4`, h.w.codes), g.constant(`${this.label}.scales`, h.w.scales), null], attrs);
    }
    if (this.bias) {
      const b = g.constant(`${this.label}.bias`, this.bias);
      // Past an int8 product, a plain Add of the bias would be fused wrongly by onnxruntime (see addBias).
      y = h.kind === 'int8' || h.kind === 'int8-tensor' ? addBias(new Consts(g, this.device), y, b) : one('Add', [y, b]);
    }
    if (flat) y = one('Reshape', [y], { shape: [...lead, N] });
    return y.dtype === x.dtype ? y : one('Cast', [y], { to: x.dtype });
  }

  /** LLM.int8 of x [M, K] fp32 with the outlier mask computed in the graph (see addTo). */
  private addLlmInt8(g: Graph, x: Value, w: LlmInt8Weight): Value {
    const c = new Consts(g, this.device);
    const one = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
    const threshold = c.f32(this.opts.threshold!);
    const colMax = one('ReduceMax', [one('Abs', [x])], { axes: [0], keepdims: false }); //   [K]
    const mask = one('Where', [one('Less', [colMax, threshold]), c.f32(1), c.f32(0)]); //     1 = regular dimension
    const weight = {
      wq: g.constant(`${this.label}.q`, w.int8.q),
      wScale: g.constant(`${this.label}.scale`, w.int8.scale),
      w16: w.fp16 ? g.constant(`${this.label}.w16`, w.fp16) : null,
    };
    const variant = this.opts.variant!;
    return addLlmInt8Matmul(c, x, weight, variant, { mask, idx: null, threshold: variant === 'bitsandbytes' ? threshold : null }).y;
  }

  /**
   * The weight as held: a Tensor (fp32, fp16, bf16), an Int8Weight, a per-tensor QuantizedTensor, an LlmInt8Weight, an
   * Int4Weight, or an Nf4Weight (nf4, fp4), which addNf4Weight can dequantize inside another graph (QLoRA's frozen base).
   */
  get weight(): Tensor | Int8Weight | QuantizedTensor | LlmInt8Weight | Int4Weight | Nf4Weight {
    return this.held.w;
  }

  /** Bytes held on the device, as its tracker counts them. */
  bytes(): LinearBytes {
    const parts: Record<string, number> = {};
    for (const t of this.tensors()) parts[t.label] = t.bytes;
    const bias = this.bias?.bytes ?? 0;
    const total = Object.values(parts).reduce((s, b) => s + b, 0);
    const weights = total - bias;
    return { weights, bias, total, parts, bitsPerWeight: (weights * 8) / (this.inFeatures * this.outFeatures) };
  }

  describe(): LinearInfo {
    const o = this.opts;
    const compute: Record<LinearFormat, string> = {
      fp32: 'fp32 MatMul',
      fp16: `fp16 MatMul (${this.device.kind === 'cpu' ? 'computed in fp32 and rounded to fp16: the CPU has no fp16 GEMM' : 'fp16 kernels'})`,
      bf16: 'bf16 MatMul (computed in fp32 and rounded to bf16 after every op)',
      'int8-tensor': 'per-tensor int8: x quantized with one scale for the whole batch on the fly, W with one scale, int32 accumulation (MatMulInteger), fp32 rescale',
      int8: 'vector-wise int8: x quantized per row on the fly, W per column, int32 accumulation (MatMulInteger), fp32 rescale',
      'llm.int8': `LLM.int8 (${o.variant}): dimensions with |x| >= ${o.threshold} in fp16, the rest vector-wise int8; outliers found per batch on the host`,
      int4: `4-bit weights in blocks of ${o.blockSize} with fp32 scales (MatMulNBits), ${o.accuracyLevel === 4 ? 'x quantized to int8 per block' : 'x in fp32'}`,
      nf4: `NF4 weights (QLoRA) in blocks of ${o.blockSize}, ${o.doubleQuant ? `absmax double-quantized to 8 bits in blocks of ${o.blockSize2}, rebuilt in the graph` : 'fp32 absmax'}; MatMulBnb4 dequantizes to fp32 and runs an fp32 GEMM`,
      fp4: `FP4 weights (bitsandbytes' E2M1) in blocks of ${o.blockSize}, ${o.doubleQuant ? `absmax double-quantized to 8 bits in blocks of ${o.blockSize2}` : 'fp32 absmax'}; MatMulBnb4, fp32 GEMM`,
    };
    return { format: this.format, inFeatures: this.inFeatures, outFeatures: this.outFeatures, label: this.label, device: this.device.name, bytes: this.bytes(), compute: compute[this.format], options: { ...o } };
  }

  /** Frees every weight tensor; a later forward throws. Idempotent. */
  dispose(): void {
    if (this.disposedFlag) return;
    for (const t of this.tensors()) t.dispose();
    this.disposedFlag = true;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  toString(): string {
    return `Linear(${this.label}: ${this.inFeatures} -> ${this.outFeatures}, ${this.format}, ${this.bytes().bitsPerWeight.toFixed(2)} bits/weight)`;
  }
}
