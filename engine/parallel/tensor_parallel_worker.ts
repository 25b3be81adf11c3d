/**
 * What each worker of a tensor-parallel job runs (Megatron-LM, Shoeybi et al. 2019): its shard of every decoder layer
 * (tensor_parallel_shard.ts: attention by heads, the MLP by columns then rows), the embedding and the final norm
 * replicated. The 'embed' and 'head' segments (train/segments.ts) run redundantly on every rank on the same inputs, so
 * their gradients come out identical everywhere and need no communication. Per layer, forward: each block's partial
 * output from this rank's heads or MLP columns, all-reduced (Megatron's g), plus the residual; backward, in reverse:
 * the block's VJP gives a partial d h (all-reduced: f's backward) plus the residual's dOut, and this rank's shard
 * gradients whole. The blocks' norms are differentiated through each rank's heads only, so their gradients are
 * partial too: they are summed after the backward in ONE small all-reduce of the 2 L hidden-sized vectors (a bucket,
 * in fp32), counted apart from the four b s h all-reduces of each layer. Each block's input is kept from its forward
 * to its VJP (the VJP recomputes the block): 2 L tensors of b s h activations per rank, not divided by N.
 */
import { Tensor } from '../tensor/tensor.ts';
import type { Graph } from '../graph/graph.ts';
import type { LlamaConfig } from '../model/config.ts';
import { AdamW } from '../train/adamw.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { Rng } from '../train/rng.ts';
import { segmentGraph, segmentSpecs } from '../train/segments.ts';
import { loadJobParams } from './job.ts';
import { tensorParallelLayer, type TensorParallelLayer, type TensorParallelPrecision } from './tensor_parallel.ts';
import { LAYER_PARAMS, shardLayer, shardShapes } from './tensor_parallel_shard.ts';
import type { WorkerContext } from './worker.ts';
import { sumGrads } from './sum_grads.ts';

const PER_LAYER = LAYER_PARAMS.length;

export interface TpInitArgs {
  /** A config to initialize at random (seeded: the same on every rank), or null for the checkpoint `model`. */
  config: LlamaConfig | null;
  model?: string;
  seed: number;
  precision: TensorParallelPrecision;
  lr?: number;
  weightDecay?: number;
}

export interface TpBatch {
  tokens: Int32Array;
  labels: Int32Array;
  batch: number;
  seq: number;
}

/** Bytes this rank sent in all-reduces during one step, by where they happened. */
export interface TpCommRecord {
  /** Per layer: the forward's two b s h all-reduces (g of each block). */
  forward: number[];
  /** Per layer: the backward's two b s h all-reduces (f of each block). */
  backward: number[];
  /** The norms' partial gradients, one all-reduce of 2 L hidden fp32 values after the backward. */
  norms: number;
  /** All-reduce calls in each part. */
  calls: { forward: number; backward: number; norms: number };
}

export interface TpStepResult {
  loss: number;
  stepMs: number;
  comm: TpCommRecord;
  /** Mode 'grads': this rank's gradients (fp32 values, its shapes, paramSpecs order); norms already summed. */
  grads?: Float32Array[];
}

interface TpState {
  cfg: LlamaConfig;
  precision: TensorParallelPrecision;
  tp: TensorParallelLayer;
  embed: { forward: Graph; vjp: Graph };
  head: { forward: Graph; vjp: Graph; params: number[] };
  params: Tensor[];
  opt: AdamW;
}

/** Fresh parameters as initParams draws them (GPT-2's init), as values: the same on every rank for a seed. */
export function initValues(cfg: LlamaConfig, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return paramSpecs(cfg).map((s) => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const init = s.init;
    return init === 'one' ? new Float32Array(n).fill(1) : Float32Array.from({ length: n }, () => rng.normal(0, init.std));
  });
}

/** This rank's shapes of every parameter, paramSpecs order: layers sharded, the rest whole. */
export function rankParamShapes(cfg: LlamaConfig, size: number): number[][] {
  const layer = shardShapes(cfg, size);
  return paramSpecs(cfg).map((s, i) => (i >= 1 && i < 1 + PER_LAYER * cfg.numLayers ? layer[(i - 1) % PER_LAYER] : s.shape));
}

const state = (ctx: WorkerContext): TpState => {
  const s = ctx.state.get('tensor parallel') as TpState | undefined;
  if (!s) throw new Error('tensor parallel: init has not run on this worker');
  return s;
};

export function init(ctx: WorkerContext, a: TpInitArgs): { rank: number } {
  const { rank, size, dev } = ctx;
  const { cfg, values } = a.config ? { cfg: a.config, values: initValues(a.config, a.seed) } : loadJobParams(a.model);
  const specs = paramSpecs(cfg);
  const L = cfg.numLayers;
  const local: Float32Array[] = [values[0]];
  for (let l = 0; l < L; l++) local.push(...shardLayer(cfg, values.slice(1 + PER_LAYER * l, 1 + PER_LAYER * (l + 1)), rank, size).values);
  local.push(...values.slice(1 + PER_LAYER * L));
  const shapes = rankParamShapes(cfg, size);
  const params = local.map((v, i) => dev.tensor(v, shapes[i], a.precision, { tag: 'weights', label: specs[i].name }));
  const tp = tensorParallelLayer(cfg, dev, size, a.precision);
  const segs = segmentSpecs(cfg);
  const graphs = (i: number) => ({ forward: segmentGraph(cfg, segs[i], false, a.precision, tp.tables), vjp: segmentGraph(cfg, segs[i], true, a.precision, tp.tables) });
  const opt = new AdamW(dev, params, { lr: a.lr, weightDecay: a.weightDecay });
  const s: TpState = { cfg, precision: a.precision, tp, embed: graphs(0), head: { ...graphs(segs.length - 1), params: segs[segs.length - 1].params }, params, opt };
  ctx.state.set('tensor parallel', s);
  return { rank };
}

/** This rank's parameters as fp32 values (bf16 ones widened), paramSpecs order, its shapes. */
export async function weights(ctx: WorkerContext): Promise<Float32Array[]> {
  return Promise.all(state(ctx).params.map(async (p) => Float32Array.from(await p.values())));
}

/**
 * One pass over a batch: 'loss' runs the forward only; 'grads' the forward and backward, returning the gradients;
 * 'train' the forward, the backward and AdamW on this rank's parameters.
 */
export async function step(ctx: WorkerContext, a: { batch: TpBatch; mode: 'loss' | 'grads' | 'train'; scale: number; lr: number }): Promise<TpStepResult> {
  const t0 = performance.now();
  const { dev, comm } = ctx;
  const s = state(ctx);
  const { cfg, params, tp } = s;
  const { batch: B, seq: S } = a.batch;
  const shape = [B, S, cfg.hiddenSize];
  const L = cfg.numLayers;
  dev.memory.resetPeak();
  const sent = () => comm.stats().allReduce.sent;
  const rec: TpCommRecord = { forward: [], backward: [], norms: 0, calls: { forward: 0, backward: 0, norms: 0 } };
  const own: (Tensor | null)[] = [];
  const keep = <T extends Tensor | null>(t: T): T => (own.push(t), t);
  const free = (...ts: (Tensor | null)[]) => ts.forEach((t) => t && !t.disposed && t.dispose());
  /** The sum over ranks of t (which is disposed), plus `residual`: a new fp32 activation tensor. */
  const reduceAdd = async (t: Tensor, residual: Tensor, label: string): Promise<Tensor> => {
    const sum = (await comm.allReduce({ dtype: 'fp32', data: (await t.read()) as Float32Array })).data as Float32Array;
    free(t);
    const r = await residual.values();
    for (let i = 0; i < sum.length; i++) sum[i] += r[i];
    return keep(Tensor.adopt(dev, shape, 'fp32', sum, 'activations', label));
  };
  const tokens = keep(dev.tensor(a.batch.tokens, [B, S], 'int32', { label: 'tokens' }));
  const labels = keep(dev.tensor(a.batch.labels, [B, S], 'int32', { label: 'labels' }));
  const positions = keep(dev.tensor(Int32Array.from({ length: B * S }, (_, k) => k % S), [B, S], 'int32', { label: 'positions' }));
  const scale = keep(dev.tensor([a.scale], [], 'fp32', { label: 'scale' }));
  const layerParams = (l: number, block: 'attention' | 'mlp') => params.slice(1 + PER_LAYER * l + (block === 'mlp' ? 5 : 0), 1 + PER_LAYER * l + (block === 'mlp' ? 9 : 5));
  const grads: (Tensor | null)[] = params.map(() => null);
  try {
    // Forward: embed (replicated), then each layer's two blocks, keeping each block's input.
    let h = keep((await dev.run(s.embed.forward, [tokens, params[0]]))[0]);
    const inputs: Tensor[] = [];
    for (let l = 0; l < L; l++) {
      const before = sent();
      for (const block of ['attention', 'mlp'] as const) {
        inputs.push(h);
        const [partial] = await dev.run(tp[block].forward, [h, positions, ...layerParams(l, block)]);
        h = await reduceAdd(partial, h, `layer ${l} ${block} output`);
        rec.calls.forward++;
      }
      rec.forward.push(sent() - before);
    }
    const headParams = s.head.params.map((i) => params[i]);
    if (a.mode === 'loss') {
      const [loss] = await dev.run(s.head.forward, [h, labels, scale, ...headParams]);
      const value = (await loss.values())[0];
      free(loss);
      return { loss: value, stepMs: performance.now() - t0, comm: rec };
    }
    // Backward: the head's VJP gives the loss, d h and its params' gradients (replicated: identical on every rank).
    const [lossT, dHead, ...headGrads] = await dev.run(s.head.vjp, [h, labels, scale, ...headParams]);
    const loss = (await lossT.values())[0];
    free(lossT, h);
    let dh = keep(dHead);
    s.head.params.forEach((i, k) => (grads[i] = headGrads[k].retag('grads')));
    for (let l = L - 1; l >= 0; l--) {
      const before = sent();
      for (const block of ['mlp', 'attention'] as const) {
        const x = inputs.pop()!;
        const [dot, dPartial, ...g] = await dev.run(tp[block].vjp, [x, positions, ...layerParams(l, block), dh]);
        free(dot, x);
        const next = await reduceAdd(dPartial, dh, `d layer ${l} ${block} input`);
        free(dh);
        dh = next;
        rec.calls.backward++;
        const base = 1 + PER_LAYER * l + (block === 'mlp' ? 5 : 0);
        g.forEach((t, k) => (grads[base + k] = t.retag('grads')));
      }
      rec.backward.push(sent() - before);
    }
    const [dot, dEmbed] = await dev.run(s.embed.vjp, [tokens, params[0], dh]);
    free(dot, dh);
    grads[0] = grads[0] ? await sumGrads(grads[0], dEmbed) : dEmbed.retag('grads');
    // The norms' partial gradients: one bucket, all-reduced in fp32.
    const norms = Array.from({ length: 2 * L }, (_, k) => 1 + PER_LAYER * Math.floor(k / 2) + (k % 2) * 5);
    const H = cfg.hiddenSize;
    const bucket = new Float32Array(norms.length * H);
    for (const [k, i] of norms.entries()) bucket.set(await grads[i]!.values(), k * H);
    const before = sent();
    await comm.allReduce({ dtype: 'fp32', data: bucket });
    rec.norms = sent() - before;
    rec.calls.norms = 1;
    norms.forEach((i, k) => {
      free(grads[i]);
      grads[i] = Tensor.adopt(dev, [H], 'fp32', bucket.slice(k * H, (k + 1) * H), 'grads', `${params[i].label} grad`);
    });
    const all = grads as Tensor[];
    if (a.mode === 'grads') return { loss, stepMs: performance.now() - t0, comm: rec, grads: await Promise.all(all.map(async (t) => Float32Array.from(await t.values()))) };
    await s.opt.step(all, a.lr);
    return { loss, stepMs: performance.now() - t0, comm: rec };
  } finally {
    free(...own, ...grads);
  }
}
