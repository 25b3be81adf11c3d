/**
 * A Llama decoder's parameters as trainable device tensors, and its training graph: every parameter is a graph input
 * (so the optimizer's updates never rebuild a session), attention is causal over the whole window, and the loss is
 * the mean cross entropy of the next token (language modelling, as GPT and Llama are trained).
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { backward } from '../autograd/backward.ts';
import { rotaryTables } from '../graph/ops_model.ts';
import { HF_NAMES, type LlamaConfig } from '../model/config.ts';
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

export interface LossGraph {
  graph: Graph;
  loss: Value;
  params: Value[];
  tables: Tensor[];
}

/**
 * The forward graph with the loss: inputs tokens, positions, labels (int32 [batch, seq]) then every parameter;
 * output the next-token cross entropy (nats), the mean (default) or the sum over tokens. Labels equal to -100 are
 * ignored. `tables` are the rotary tables the graph holds as constants: dispose them with the graph.
 */
export function lossGraph(cfg: LlamaConfig, dev: Device, opts: { reduction?: 'mean' | 'sum' } = {}): LossGraph {
  const g = new Graph(`${cfg.numLayers}-layer Llama training step`);
  const tokens = g.input('tokens', 'int32', ['batch', 'seq']);
  const positions = g.input('positions', 'int32', ['batch', 'seq']);
  const labels = g.input('labels', 'int32', ['batch', 'seq']);
  const params = paramSpecs(cfg).map((s) => g.input(s.name, 'fp32', s.shape));
  const byName = new Map(paramSpecs(cfg).map((s, i) => [s.name, params[i]]));
  const p = (name: string) => byName.get(name)!;
  const mm = (name: string) => (x: Value) => g.op('MatMul', [x, p(name)])[0];
  const { cos, sin } = rotaryTables(cfg.maxPositions, cfg.headDim, cfg.ropeTheta);
  const half = [cfg.maxPositions, cfg.headDim / 2];
  const tables = [dev.tensor(cos, half, 'fp32', { tag: 'weights', label: 'rope.cos' }), dev.tensor(sin, half, 'fp32', { tag: 'weights', label: 'rope.sin' })];
  const w: DecoderWeights = {
    embedding: p(HF_NAMES.embedding),
    layers: Array.from({ length: cfg.numLayers }, (_, i) => {
      const n = HF_NAMES.layer(i);
      return { attnNorm: p(n.attnNorm), mlpNorm: p(n.mlpNorm), q: mm(n.q), k: mm(n.k), v: mm(n.v), o: mm(n.o), gate: mm(n.gate), up: mm(n.up), down: mm(n.down) };
    }),
    finalNorm: p(HF_NAMES.finalNorm),
    head: cfg.tieWordEmbeddings ? (x) => g.op('MatMul', [x, g.op('Transpose', [p(HF_NAMES.embedding)], { perm: [1, 0] })[0]])[0] : mm(HF_NAMES.lmHead),
    cos: g.constant('rope.cos', tables[0]),
    sin: g.constant('rope.sin', tables[1]),
  };
  const logits = decoder(g, cfg, w, tokens, positions, causalAttention(g, cfg));
  const [loss] = g.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: opts.reduction ?? 'mean' });
  g.output(loss);
  return { graph: g, loss, params, tables };
}

/** The backward graph of lossGraph: outputs the loss, then d loss / d param for every parameter in order. */
export function trainingGraph(cfg: LlamaConfig, dev: Device): { graph: Graph; tables: Tensor[] } {
  const { graph, loss, params, tables } = lossGraph(cfg, dev);
  return { graph: backward(graph, loss, params, { name: `${graph.name} (backward)` }).graph, tables };
}
