/**
 * A Llama decoder's parameters as trainable device tensors, and its training graph: every parameter is a graph input
 * (so the optimizer's updates never rebuild a session), attention is causal over the whole window, and the loss is
 * the mean cross entropy of the next token (language modelling, as GPT and Llama are trained). One graph serves full
 * fine-tuning, LoRA and QLoRA: each parameter's value comes from a supplier (an fp32 input by default, NF4 codes
 * dequantized inside the graph for QLoRA) and optional low-rank adapters add scaling (x A) B to their projections.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ShapeError } from '../errors.ts';
import { backward } from '../autograd/backward.ts';
import { rotaryTables } from '../graph/ops_model.ts';
import { HF_NAMES, PROJECTIONS, type LlamaConfig, type ProjectionName } from '../model/config.ts';
import { causalAttention, decoder, type DecoderWeights } from '../model/decoder.ts';
import { transpose2d } from '../model/llama.ts';
import type { Rng } from './rng.ts';

export interface ParamSpec {
  /** Hugging Face name. */
  name: string;
  /** The engine's layout: a linear is [in, out] (Hugging Face stores [out, in]). */
  shape: number[];
  /** Stored transposed in a checkpoint. */
  linear: boolean;
  /** 'one' for norms; else normal(0, std). */
  init: 'one' | { std: number };
}

/**
 * Every parameter in graph order. Initialization as GPT-2: normal(0, 0.02), with the projections that write into the
 * residual stream (o, down) scaled by 1/sqrt(2 x layers) so the stream's variance does not grow with depth.
 */
export function paramSpecs(cfg: LlamaConfig): ParamSpec[] {
  const H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const std = { std: 0.02 };
  const resid = { std: 0.02 / Math.sqrt(2 * cfg.numLayers) };
  const lin = (name: string, inF: number, out: number, init = std): ParamSpec => ({ name, shape: [inF, out], linear: true, init });
  const vec = (name: string): ParamSpec => ({ name, shape: [H], linear: false, init: 'one' });
  const specs: ParamSpec[] = [{ name: HF_NAMES.embedding, shape: [cfg.vocabSize, H], linear: false, init: std }];
  for (let i = 0; i < cfg.numLayers; i++) {
    const n = HF_NAMES.layer(i);
    specs.push(vec(n.attnNorm), lin(n.q, H, q), lin(n.k, H, kv), lin(n.v, H, kv), lin(n.o, q, H, resid));
    specs.push(vec(n.mlpNorm), lin(n.gate, H, I), lin(n.up, H, I), lin(n.down, I, H, resid));
  }
  specs.push(vec(HF_NAMES.finalNorm));
  if (!cfg.tieWordEmbeddings) specs.push(lin(HF_NAMES.lmHead, H, cfg.vocabSize));
  return specs;
}

/** Fresh parameters drawn from `rng`, fp32, tagged 'weights'. */
export function initParams(dev: Device, cfg: LlamaConfig, rng: Rng): Tensor[] {
  return paramSpecs(cfg).map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const init = s.init;
    const values = init === 'one' ? new Float32Array(n).fill(1) : Float32Array.from({ length: n }, () => rng.normal(0, init.std));
    return dev.tensor(values, s.shape, 'fp32', { tag: 'weights', label: s.name });
  });
}

/** Parameters in Hugging Face layout by name (linears transposed back to [out, in]), e.g. to save a checkpoint. */
export function toHfWeights(cfg: LlamaConfig, params: readonly Tensor[]): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  paramSpecs(cfg).forEach((s, i) => {
    const v = params[i].toFloat32();
    m.set(s.name, s.linear ? transpose2d(v, s.shape[0], s.shape[1]) : v);
  });
  return m;
}

/** Hugging Face weights by name -> values in the engine's layout, in graph order. */
export function fromHfWeights(cfg: LlamaConfig, weights: ReadonlyMap<string, Float32Array>): Float32Array[] {
  return paramSpecs(cfg).map((s) => {
    const w = weights.get(s.name);
    if (!w) throw new Error(`missing weight ${s.name}`);
    return s.linear ? transpose2d(w, s.shape[1], s.shape[0]) : w;
  });
}

/** Where a parameter's value in the training graph comes from; it may add inputs and nodes (a dequantization). */
export type ParamSupplier = (g: Graph, spec: ParamSpec) => Value;

/** The default supplier: the parameter is an fp32 graph input named by its Hugging Face name. */
export const fp32Param: ParamSupplier = (g, s) => g.input(s.name, 'fp32', s.shape);

/**
 * Mixed precision (Micikevicius et al. 2018): the parameter is a 16-bit graph input, cast to fp32 for the arithmetic;
 * its gradient comes back in 16 bits through the Cast, and AdamW keeps the fp32 master copy.
 */
export const castParam =
  (dtype: 'fp16' | 'bf16'): ParamSupplier =>
  (g, s) =>
    g.op('Cast', [g.input(s.name, dtype, s.shape)], { to: 'fp32' })[0];

export { PROJECTIONS, type ProjectionName };

/** A low-rank adapter on one projection of the graph: y = x W + scaling (x A) B, A [in, r] and B [r, out] inputs. */
export interface AdapterSpec {
  layer: number;
  proj: ProjectionName;
  /** `layers.{layer}.{proj}`: the serving model's Linear label. */
  label: string;
  inFeatures: number;
  outFeatures: number;
  r: number;
  scaling: number;
}

export interface LossGraphOptions {
  /** 'mean' (default) or 'sum' of the token losses. */
  reduction?: 'mean' | 'sum';
  /** Supplies each parameter's value; default fp32Param. */
  supply?: ParamSupplier;
  /** Low-rank adapters added to their projections; their A and B are inputs after every parameter's. */
  adapters?: readonly AdapterSpec[];
}

export interface LossGraph {
  graph: Graph;
  loss: Value;
  /** Each parameter's value as the supplier gave it, in paramSpecs order (a graph input with the default). */
  params: Value[];
  /** Each adapter's A [in, r] and B [r, out] inputs, in the order of opts.adapters. */
  /** The graph input each parameter's supplier declared (null where it declared none or several). */
  leaves: (Value | null)[];
  adapters: { A: Value; B: Value }[];
  tables: Tensor[];
}

/**
 * The forward graph with the loss: inputs tokens, positions, labels (int32 [batch, seq]), then what the supplier
 * adds for each parameter in paramSpecs order (with the default, one fp32 input each), then A and B of each adapter;
 * output the next-token cross entropy (nats), the mean (default) or the sum over tokens. Labels equal to -100 are
 * ignored. `tables` are the rotary tables the graph holds as constants: dispose them with the graph.
 */
export function lossGraph(cfg: LlamaConfig, dev: Device, opts: LossGraphOptions = {}): LossGraph {
  const g = new Graph(`${cfg.numLayers}-layer Llama training step${opts.adapters?.length ? ` (${opts.adapters.length} adapters)` : ''}`);
  const tokens = g.input('tokens', 'int32', ['batch', 'seq']);
  const positions = g.input('positions', 'int32', ['batch', 'seq']);
  const labels = g.input('labels', 'int32', ['batch', 'seq']);
  const supply = opts.supply ?? fp32Param;
  const specs = paramSpecs(cfg);
  // The one graph input each parameter's supplier declared, if it declared exactly one: what full fine-tuning trains.
  const leaves: (Value | null)[] = [];
  const params = specs.map((s) => {
    const before = g.inputs.length;
    const v = supply(g, s);
    leaves.push(g.inputs.length === before + 1 ? g.inputs[before] : null);
    return v;
  });
  params.forEach((v, i) => {
    if (v.shape.join() !== specs[i].shape.join() || v.dtype !== 'fp32') {
      throw new ShapeError('lossGraph', [specs[i].shape, v.shape], `the supplier gave ${specs[i].name} as ${v.dtype}; it must be fp32 [${specs[i].shape.join(', ')}]`);
    }
  });
  const byName = new Map(specs.map((s, i) => [s.name, params[i]]));
  const p = (name: string) => byName.get(name)!;
  const adapters = (opts.adapters ?? []).map((a) => ({ A: g.input(`lora.${a.label}.A`, 'fp32', [a.inFeatures, a.r]), B: g.input(`lora.${a.label}.B`, 'fp32', [a.r, a.outFeatures]) }));
  const adapterAt = new Map((opts.adapters ?? []).map((a, i) => [a.label, { spec: a, ...adapters[i] }]));
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const project = (layer: number, proj: ProjectionName, name: string) => (x: Value) => {
    const y = op('MatMul', [x, p(name)]);
    const a = adapterAt.get(`layers.${layer}.${proj}`);
    if (!a) return y;
    // LoRA (Hu et al. 2021): the rank-r path costs r (in + out) per row instead of in x out, and B = 0 starts at W.
    const low = op('MatMul', [op('MatMul', [x, a.A]), a.B]);
    return op('Add', [y, op('Mul', [low, op('Constant', [], { value: a.spec.scaling, dtype: 'fp32' })])]);
  };
  const { cos, sin } = rotaryTables(cfg.maxPositions, cfg.headDim, cfg.ropeTheta);
  const half = [cfg.maxPositions, cfg.headDim / 2];
  const tables = [dev.tensor(cos, half, 'fp32', { tag: 'weights', label: 'rope.cos' }), dev.tensor(sin, half, 'fp32', { tag: 'weights', label: 'rope.sin' })];
  const w: DecoderWeights = {
    embedding: p(HF_NAMES.embedding),
    layers: Array.from({ length: cfg.numLayers }, (_, i) => {
      const n = HF_NAMES.layer(i);
      const [q, k, v, o, gate, up, down] = PROJECTIONS.map((proj) => project(i, proj, n[proj]));
      return { attnNorm: p(n.attnNorm), mlpNorm: p(n.mlpNorm), q, k, v, o, gate, up, down };
    }),
    finalNorm: p(HF_NAMES.finalNorm),
    head: cfg.tieWordEmbeddings ? (x) => op('MatMul', [x, op('Transpose', [p(HF_NAMES.embedding)], { perm: [1, 0] })]) : (x) => op('MatMul', [x, p(HF_NAMES.lmHead)]),
    cos: g.constant('rope.cos', tables[0]),
    sin: g.constant('rope.sin', tables[1]),
  };
  const logits = decoder(g, cfg, w, tokens, positions, causalAttention(g, cfg));
  const [loss] = g.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: opts.reduction ?? 'mean' });
  g.output(loss);
  return { graph: g, loss, params, leaves, adapters, tables };
}

/**
 * The backward graph of lossGraph: outputs the loss, then d loss / d value for every trainable value in order. With
 * adapters only their A and B are trainable (A0, B0, A1, B1, ...: LoRA, the base frozen, no gradient for it);
 * without, every parameter (full fine-tuning: the graph input its supplier declared, fp32 or 16-bit as castParam does).
 */
export function trainingGraph(cfg: LlamaConfig, dev: Device, opts: Omit<LossGraphOptions, 'reduction'> = {}): { graph: Graph; tables: Tensor[] } {
  const { graph, loss, leaves, adapters, tables } = lossGraph(cfg, dev, opts);
  const missing = paramSpecs(cfg).find((_, i) => leaves[i] === null);
  if (adapters.length === 0 && missing) {
    for (const t of tables) t.dispose();
    throw new ShapeError('trainingGraph', [missing.shape], `full fine-tuning trains graph inputs, and the supplier gave ${missing.name} as no single input`);
  }
  const trainable = adapters.length > 0 ? adapters.flatMap((a) => [a.A, a.B]) : (leaves as Value[]);
  try {
    return { graph: backward(graph, loss, trainable, { name: `${graph.name} (backward)` }).graph, tables };
  } catch (e) {
    for (const t of tables) t.dispose();
    throw e;
  }
}
