/**
 * One stage of a pipeline (pipeline.ts), run in a worker: its segments' params and AdamW, and a step that runs the
 * stage's ops in schedule order. F(j) receives the activation from stage s - 1 (or embeds the tokens), runs the
 * segments forward keeping each one's input (the activations of the backward: each segment's VJP recomputes its
 * forward from its input) and sends the output to stage s + 1; the last stage keeps the head's input and runs the
 * head in B(j), whose VJP gives the loss. B(j) receives d output from stage s + 1, runs the VJPs back to front,
 * sends d input to stage s - 1 and adds the params' gradients to fp32 sums, in the order the B ops run. Sends are
 * started and not awaited (a stage in 1F1B sends a forward's output while its neighbour sends it a gradient); the
 * step awaits them all before the flush. Then the tied embedding's two gradients (embed's on the first stage, the
 * head's on the last) are exchanged and summed, the same on both, and the stage's AdamW updates its own params.
 */
import { ServelabError } from '../errors.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { AdamW } from '../train/adamw.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { SegmentedModel, type SegmentExtras } from '../train/segments.ts';
import { loadJobParams } from './job.ts';
import { pipelineStages } from './pipeline.ts';
import type { PipelineOp, PipelineOpKind, TimedOp } from './pipeline_schedule.ts';
import type { WorkerContext } from './worker.ts';

const KEY = 'pipeline stage';

interface Stage {
  model: SegmentedModel;
  /** The stage's segments (indices into model.segments), in order. */
  segs: number[];
  /** The params it holds (paramSpecs indices, ascending) and their tensors. */
  owned: number[];
  params: Map<number, Tensor>;
  opt: AdamW;
  /** The stage that holds the other copy of the tied embedding; null if none. */
  tiedPeer: number | null;
}

export interface StageInit {
  stages: number;
  model?: string;
  precision: 'fp32' | 'bf16';
  lr?: number;
  weightDecay?: number;
}

export function init(ctx: WorkerContext, a: StageInit): { segments: string[]; params: number[] } {
  const { cfg, values } = loadJobParams(a.model);
  const model = new SegmentedModel(ctx.dev, cfg, { precision: a.precision });
  const segs = pipelineStages(cfg, a.stages)[ctx.rank];
  const owned = [...new Set(segs.flatMap((i) => model.segments[i].params))].sort((x, y) => x - y);
  const specs = paramSpecs(cfg);
  const params = new Map(owned.map((i) => [i, ctx.dev.tensor(values[i], specs[i].shape, a.precision, { tag: 'weights', label: specs[i].name })]));
  const opt = new AdamW(ctx.dev, owned.map((i) => params.get(i)!), { lr: a.lr, weightDecay: a.weightDecay });
  const last = a.stages - 1;
  const tiedPeer = cfg.tieWordEmbeddings && a.stages > 1 && (ctx.rank === 0 || ctx.rank === last) ? last - ctx.rank : null;
  ctx.state.set(KEY, { model, segs, owned, params, opt, tiedPeer } satisfies Stage);
  return { segments: segs.map((i) => model.segments[i].name), params: owned };
}

export interface StageStepArgs {
  ops: PipelineOp[];
  /** Each micro-batch's size; tokens for the first stage, labels for the last. */
  micro: { batch: number; seq: number; tokens?: Int32Array; labels?: Int32Array }[];
  scale: number;
  /** Throw just before this op (a test of failure). */
  fault: { kind: PipelineOpKind; microBatch: number } | null;
}

export interface StageStepOut {
  records: TimedOp[];
  /** The loss summed over micro-batches: the last stage only. */
  loss: number | null;
  peakInFlight: number;
  /** Live 'activations' bytes after each op. */
  activationBytes: number[];
  embeddingGradBytes: number;
}

const now = () => performance.timeOrigin + performance.now();

export async function step(ctx: WorkerContext, a: StageStepArgs): Promise<StageStepOut> {
  const st = ctx.state.get(KEY) as Stage | undefined;
  if (!st) throw new ServelabError('pipeline stage: step before init');
  const { dev, comm, rank: s, size: p } = ctx;
  const { model, segs } = st;
  const first = s === 0;
  const last = s === p - 1;
  const H = model.cfg.hiddenSize;
  dev.memory.resetPeak();
  const records: TimedOp[] = [];
  const activationBytes: number[] = [];
  const held = new Map<number, Tensor[]>(); // micro-batch -> the inputs of the stage's segments
  const sums = new Map<string, Tensor>(); // `${segment}/${k}` -> fp32 gradient sum, tagged 'grads'
  const sends: Promise<void>[] = [];
  const extras: SegmentExtras[] = a.micro.map((mb) => ({
    positions: dev.tensor(Int32Array.from({ length: mb.batch * mb.seq }, (_, k) => k % mb.seq), [mb.batch, mb.seq], 'int32', { tag: 'other', label: 'positions' }),
    ...(last ? { labels: dev.tensor(mb.labels!, [mb.batch, mb.seq], 'int32', { tag: 'other', label: 'labels' }) } : {}),
    scale: a.scale,
  }));
  const ps = (i: number) => model.segments[i].params.map((k) => st.params.get(k)!);
  /** Copies t's bytes, frees t and starts sending them (awaited before the flush). */
  const send = async (dst: number, t: Tensor) => {
    const data = (await t.read()) as Float32Array;
    t.dispose();
    const sent = comm.send(dst, { dtype: 'fp32', data });
    sent.catch(() => undefined); // a failed send rejects the step when awaited below; never an unhandled rejection
    sends.push(sent);
  };
  let loss = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  let embeddingGradBytes = 0;
  try {
    for (const op of a.ops) {
      if (a.fault && a.fault.kind === op.kind && a.fault.microBatch === op.microBatch) {
        throw new ServelabError(`pipeline stage ${s}: failing before ${op.kind}${op.microBatch}, as the step's fault asked`);
      }
      const j = op.microBatch;
      const mb = a.micro[j];
      const hShape = [mb.batch, mb.seq, H];
      let start: number;
      let end: number;
      if (op.kind === 'F') {
        const input = first ? dev.tensor(mb.tokens!, [mb.batch, mb.seq], 'int32', { label: `tokens ${j}` }) : await comm.recvTensor(dev, s - 1, hShape, 'fp32', 'activations', `h ${j}`);
        start = now();
        const inputs = [input];
        held.set(j, inputs);
        for (const i of segs) {
          if (model.segments[i].kind === 'head') break;
          inputs.push(await model.forward(i, inputs[inputs.length - 1], ps(i), extras[j]));
        }
        peakInFlight = Math.max(peakInFlight, ++inFlight);
        end = now();
        // The last stage keeps its layers' output as the head's input; the others send it on.
        if (!last) await send(s + 1, inputs.pop()!);
      } else {
        let dOut = last ? null : await comm.recvTensor(dev, s + 1, hShape, 'fp32', 'activations', `d h ${j}`);
        start = now();
        const inputs = held.get(j)!;
        for (let k = segs.length - 1; k >= 0; k--) {
          const r = await model.backward(segs[k], inputs[k], ps(segs[k]), dOut, extras[j]);
          dOut?.dispose();
          dOut = r.dInput;
          inputs[k].dispose();
          if (r.loss !== undefined) loss += r.loss;
          for (const [q, g] of r.grads.entries()) await accumulate(dev, sums, `${segs[k]}/${q}`, g);
        }
        held.delete(j);
        inFlight--;
        end = now();
        if (!first) await send(s - 1, dOut!);
      }
      // An op ends when its compute does; its send's bytes leave after (a receiver never starts before the sender ends).
      records.push({ kind: op.kind, microBatch: j, stage: s, start, end });
      activationBytes.push(dev.memory.liveByTag().activations);
    }
    await Promise.all(sends);
    // Flush: each param's gradient is the sum over the segments that use it (added into the first part's sum, in
    // place); the tied embedding's parts may live on two stages.
    const grads = new Map<number, Tensor>();
    for (const i of segs) {
      model.segments[i].params.forEach((param, q) => {
        const part = sums.get(`${i}/${q}`)!;
        const have = grads.get(param);
        if (have) addInto(have, part.data as Float32Array);
        else grads.set(param, part);
      });
    }
    if (st.tiedPeer !== null) {
      const mine = grads.get(0)!;
      const [, theirs] = await Promise.all([comm.send(st.tiedPeer, { dtype: 'fp32', data: mine.data as Float32Array }), comm.recv(st.tiedPeer, 'fp32')]);
      embeddingGradBytes = mine.bytes;
      // Addition is commutative in IEEE arithmetic: both stages get the same bits.
      addInto(mine, theirs.data as Float32Array);
    }
    await st.opt.step(st.owned.map((i) => grads.get(i)!));
    return { records, loss: last ? loss : null, peakInFlight, activationBytes, embeddingGradBytes };
  } finally {
    for (const inputs of held.values()) for (const t of inputs) if (!t.disposed) t.dispose();
    for (const t of sums.values()) t.dispose();
    for (const e of extras) for (const t of [e.positions, e.labels]) if (t && !t.disposed) t.dispose();
  }
}

/** sums[key] += g in fp32 (g widened from bf16), starting from zero; g is freed. */
async function accumulate(dev: Device, sums: Map<string, Tensor>, key: string, g: Tensor): Promise<void> {
  const v = await g.values();
  let acc = sums.get(key);
  if (!acc) {
    acc = dev.tensor(new Float32Array(v.length), g.shape, 'fp32', { tag: 'grads', label: `sum ${g.label}` });
    sums.set(key, acc);
  }
  g.dispose();
  addInto(acc, v);
}

/** acc += b in fp32, in place. */
function addInto(acc: Tensor, b: Float32Array): void {
  const d = acc.data as Float32Array;
  for (let i = 0; i < d.length; i++) d[i] += b[i];
  acc.touch();
}

export interface StageWeights {
  indices: number[];
  values: Float32Array[];
}

export async function weights(ctx: WorkerContext): Promise<StageWeights> {
  const st = ctx.state.get(KEY) as Stage | undefined;
  if (!st) throw new ServelabError('pipeline stage: weights before init');
  return { indices: st.owned, values: await Promise.all(st.owned.map((i) => st.params.get(i)!.values())) };
}
