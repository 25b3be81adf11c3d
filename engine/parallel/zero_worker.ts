/**
 * One worker of data-parallel training with ZeRO (Rajbhandari et al. 2020), run by zero.ts. Stage 0 is plain data
 * parallelism (DDP: whole parameters, gradients and Adam state on every worker, gradients all-reduced); stage 1
 * partitions the optimizer states (each worker updates its shard, then the shards are all-gathered); stage 2 also
 * the gradients (reduce-scattered as soon as each is complete, the whole gradient freed); stage 3 also the
 * parameters (each segment's parameters all-gathered just before its forward and again before its backward, and
 * freed after). The model runs segment by segment (engine/train/segments.ts), so what a worker holds at each moment
 * is what the paper counts. Every stage reduces with the same ring and the same shards, so all four compute the same
 * weights bit for bit.
 */
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { BytesByTag } from '../memory/tracker.ts';
import { AdamW } from '../train/adamw.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { SegmentedModel, type SegmentBatch, type SegmentHooks } from '../train/segments.ts';
import { COLLECTIVES, type CommStats } from './comm.ts';
import { loadJobParams } from './job.ts';
import { shardRange } from './shard.ts';
import { ShardedAdamW } from './sharded_adamw.ts';
import { sumGrads } from './sum_grads.ts';
import type { ZeroStage } from './zero_memory.ts';
import type { WorkerContext } from './worker.ts';

export interface ZeroInit {
  stage: ZeroStage;
  model?: string;
  lr: number;
  weightDecay: number;
}

interface ZeroState {
  stage: ZeroStage;
  model: SegmentedModel;
  shapes: number[][];
  names: string[];
  /** Whole parameters (stages 0-2), or null. */
  full: Tensor[] | null;
  /** This worker's shard of each parameter (stage 3), or null. */
  shards: Tensor[] | null;
  adam: AdamW | null;
  sharded: ShardedAdamW | null;
}

export interface ZeroWorkerStep {
  loss: number;
  ms: number;
  /** Bytes by tag held right after the backward (and reduction), before the update: the paper's model states. */
  states: Pick<BytesByTag, 'weights' | 'grads' | 'optimizer'>;
  peak: number;
  peakByTag: BytesByTag;
  /** Bytes this worker sent during the step, per collective. */
  sent: Partial<Record<keyof CommStats, number>>;
}

const state = (ctx: WorkerContext) => ctx.state.get('zero') as ZeroState;
const bf16Round = (v: Float32Array) => bf16ArrayToFp32(fp32ArrayToBf16(v));

export function init(ctx: WorkerContext, a: ZeroInit): { params: number } {
  const { cfg, values } = loadJobParams(a.model);
  const specs = paramSpecs(cfg);
  const shapes = specs.map((s) => s.shape);
  const names = specs.map((s) => s.name);
  const own = (v: Float32Array) => {
    const { start, end } = shardRange(v.length, ctx.size, ctx.rank);
    return bf16Round(v.subarray(start, end));
  };
  const model = new SegmentedModel(ctx.dev, cfg, { precision: 'bf16' });
  const s: ZeroState = { stage: a.stage, model, shapes, names, full: null, shards: null, adam: null, sharded: null };
  const opt = { lr: a.lr, weightDecay: a.weightDecay };
  if (a.stage < 3) s.full = values.map((v, i) => ctx.dev.tensor(v, shapes[i], 'bf16', { tag: 'weights', label: names[i] }));
  const shards = a.stage === 0 ? [] : values.map(own);
  if (a.stage === 3) s.shards = shards.map((v, i) => ctx.dev.tensor(v, [v.length], 'bf16', { tag: 'weights', label: `${names[i]} shard` }));
  if (a.stage === 0) s.adam = new AdamW(ctx.dev, s.full!, opt);
  else s.sharded = new ShardedAdamW(ctx.dev, 'bf16', shards, opt);
  ctx.state.set('zero', s);
  return { params: values.reduce((n, v) => n + v.length, 0) };
}

export async function step(ctx: WorkerContext, a: { batch: SegmentBatch; scale: number; lr: number }): Promise<ZeroWorkerStep> {
  const s = state(ctx);
  const { comm, dev } = ctx;
  const t0 = performance.now();
  const sentBefore = comm.stats();
  dev.memory.resetPeak();
  const n = s.shapes.length;
  // How many segments use each parameter (2 for a tied embedding): its gradient is complete after the last.
  const left = new Array<number>(n).fill(0);
  for (const seg of s.model.segments) for (const i of seg.params) left[i]++;
  const partial = new Map<number, Tensor>();
  const whole: (Tensor | null)[] = new Array(n).fill(null);
  const shards: (Tensor | null)[] = new Array(n).fill(null);
  const hooks: SegmentHooks = {
    acquire: async (seg) => {
      if (s.stage < 3) return seg.params.map((i) => s.full![i]);
      const gathered: Tensor[] = [];
      for (const i of seg.params) gathered.push(await comm.allGatherTensor(s.shards![i], s.shapes[i], 'weights', s.names[i]));
      return gathered;
    },
    release: (_seg, params) => {
      if (s.stage === 3) for (const p of params) p.dispose();
    },
    onGrads: async (seg, grads) => {
      for (let k = 0; k < grads.length; k++) {
        const i = seg.params[k];
        const prev = partial.get(i);
        const g = prev ? await sumGrads(prev, grads[k]) : grads[k];
        if (--left[i] > 0) {
          partial.set(i, g);
          continue;
        }
        partial.delete(i);
        if (s.stage === 0) whole[i] = await comm.allReduceTensor(g);
        else if (s.stage === 1) whole[i] = g;
        else {
          shards[i] = await comm.reduceScatterTensor(g, 'grads');
          g.dispose();
        }
      }
    },
  };
  let loss: number;
  try {
    loss = await s.model.step(a.batch, a.scale, hooks);
  } catch (e) {
    for (const t of [...partial.values(), ...whole, ...shards]) t?.dispose();
    throw e;
  }
  const live = dev.memory.liveByTag();
  const states = { weights: live.weights, grads: live.grads, optimizer: live.optimizer };
  try {
    if (s.stage === 0) {
      await s.adam!.step(whole as Tensor[], a.lr);
    } else {
      if (s.stage === 1) {
        for (let i = 0; i < n; i++) {
          shards[i] = await comm.reduceScatterTensor(whole[i]!, 'grads');
          whole[i]!.dispose();
          whole[i] = null;
        }
      }
      const updated = await s.sharded!.step(shards as Tensor[], a.lr);
      for (let i = 0; i < n; i++) {
        if (s.stage === 3) s.shards![i].assign(updated[i]);
        else {
          s.full![i].assign(await comm.allGatherTensor(updated[i], s.shapes[i], 'weights', s.names[i]));
          updated[i].dispose();
        }
      }
    }
  } finally {
    for (const t of [...whole, ...shards]) if (t && !t.disposed) t.dispose();
  }
  const after = comm.stats();
  const sent = Object.fromEntries(COLLECTIVES.map((c) => [c, after[c].sent - sentBefore[c].sent]).filter(([, b]) => (b as number) > 0));
  return { loss, ms: performance.now() - t0, states, peak: dev.memory.peak, peakByTag: dev.memory.peakByTag(), sent };
}

/** The whole parameters as fp32 values on rank 0 (every rank takes part in stage 3's all-gathers); null elsewhere. */
export async function weights(ctx: WorkerContext): Promise<Float32Array[] | null> {
  const s = state(ctx);
  if (s.stage < 3) return ctx.rank === 0 ? s.full!.map((t) => t.toFloat32()) : null;
  const out: Float32Array[] = [];
  for (let i = 0; i < s.shapes.length; i++) {
    const t = await ctx.comm.allGatherTensor(s.shards![i], s.shapes[i], 'other');
    out.push(t.toFloat32());
    t.dispose();
  }
  return ctx.rank === 0 ? out : null;
}
