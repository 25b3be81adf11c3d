/**
 * QLoRA (Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023): LoRA whose frozen base
 * linears are stored in 4-bit NormalFloat, their absmax double-quantized to 8 bits, and dequantized to fp32 inside
 * the training graph for each forward and backward pass; only the adapters get gradients and optimizer state.
 * Embedding, norms and an untied head stay fp32, as in the paper's setup (bitsandbytes keeps the head unquantized).
 */
import type { Device } from '../device/device.ts';
import { Graph, type Value } from '../graph/graph.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { HF_NAMES, type LlamaConfig } from '../model/config.ts';
import { transpose2d } from '../model/llama.ts';
import { addNf4Weight, disposeNf4Weight, quantizeNf4Weight, type Nf4Format, type Nf4Weight } from '../quant/nf4_nodes.ts';
import { fp32Param, fromHfWeights, paramSpecs, PROJECTIONS, type ParamSupplier } from './lm_params.ts';
import type { FrozenBase } from './finetune.ts';

export interface QloraOptions {
  /** 'nf4' (default, the paper's) or 'fp4'. */
  format?: Nf4Format;
  /** Weights per absmax; default 64, the paper's. */
  blockSize?: number;
  /** Quantize the absmax to 8 bits in blocks of 256 (the paper's double quantization); default true. */
  doubleQuant?: boolean;
}

/** Hugging Face names of the linears QLoRA stores in 4 bits: every projection of every decoder layer. */
export function quantizedNames(cfg: LlamaConfig): Set<string> {
  return new Set(Array.from({ length: cfg.numLayers }, (_, i) => PROJECTIONS.map((p) => HF_NAMES.layer(i)[p])).flat());
}

/**
 * The base of a QLoRA run: the decoder layers' linears as 4-bit device tensors that the graph dequantizes, the rest as
 * fp32 inputs. The 4-bit tensors are graph inputs, not constants: as constants, onnxruntime would fold their whole
 * dequantization when it builds the session and keep every weight in fp32 inside it, undoing the saving. A failure
 * frees everything.
 */
export function nf4Base(dev: Device, cfg: LlamaConfig, weights: ReadonlyMap<string, Float32Array>, opts: QloraOptions = {}): FrozenBase {
  const specs = paramSpecs(cfg);
  const values = fromHfWeights(cfg, weights);
  const quantized = quantizedNames(cfg);
  const nf4 = new Map<string, Nf4Weight>();
  const feeds: Tensor[] = [];
  const dispose = () => {
    for (const w of nf4.values()) disposeNf4Weight(w);
    for (const t of feeds) t.dispose();
  };
  try {
    specs.forEach((s, i) => {
      if (!quantized.has(s.name)) {
        feeds.push(dev.tensor(values[i], s.shape, 'fp32', { tag: 'weights', label: s.name }));
        return;
      }
      const w = quantizeNf4Weight(dev, values[i], [s.shape[0], s.shape[1]], {
        format: opts.format ?? 'nf4', blockSize: opts.blockSize ?? 64, doubleQuant: opts.doubleQuant ?? true, label: s.name,
      });
      nf4.set(s.name, w);
    });
  } catch (e) {
    dispose();
    throw e;
  }
  // Every graph declares its inputs in paramSpecs order, so one probe graph gives the order of the feeds.
  const supply = (into: Map<Value, Tensor>): ParamSupplier => (g, s) => {
    const w = nf4.get(s.name);
    return w ? addNf4Weight(g, w, s.name, { feeds: into }) : fp32Param(g, s);
  };
  const probe = new Graph('nf4 base inputs');
  const quantFeeds = new Map<Value, Tensor>();
  const fp32ByName = new Map(specs.filter((s) => !quantized.has(s.name)).map((s, i) => [s.name, feeds[i]]));
  for (const s of specs) supply(quantFeeds)(probe, s);
  const ordered = probe.inputs.map((v) => quantFeeds.get(v) ?? fp32ByName.get(v.name)!);
  return {
    feeds: ordered,
    supply: (g, s) => supply(new Map())(g, s),
    weights: () => dequantized(dev, cfg, specs.map((s, i) => (quantized.has(s.name) ? null : values[i])), nf4),
    dispose,
  };
}

/** Hugging Face weights as the training graph sees them: the 4-bit linears dequantized by the same graph nodes. */
async function dequantized(dev: Device, cfg: LlamaConfig, fp32: readonly (Float32Array | null)[], nf4: ReadonlyMap<string, Nf4Weight>): Promise<Map<string, Float32Array>> {
  const g = new Graph('nf4 base, dequantized');
  const names = [...nf4.keys()];
  const feeds = new Map<Value, Tensor>();
  g.output(...names.map((n) => addNf4Weight(g, nf4.get(n)!, n, { feeds })));
  const outs = await dev.run(g, g.inputs.map((v) => feeds.get(v)!));
  const m = new Map<string, Float32Array>();
  paramSpecs(cfg).forEach((s, i) => {
    const v = fp32[i];
    if (v) m.set(s.name, s.linear ? transpose2d(v, s.shape[0], s.shape[1]) : v);
  });
  names.forEach((n, i) => {
    const [K, N] = outs[i].shape;
    m.set(n, transpose2d(outs[i].toFloat32(), K, N));
    outs[i].dispose();
  });
  return m;
}
