/**
 * Pipeline parallelism on a group of workers (GPipe, Huang et al. 2019; 1F1B as PipeDream-Flush, Narayanan et al.
 * 2021, and Megatron-LM's non-interleaved schedule): the model's segments (embed, layer 0..L-1, head) are cut into p
 * contiguous stages, one per worker, the layers spread evenly, the embedding on the first stage and the head on the
 * last. A step splits the batch into m micro-batches and every stage runs its forwards F(j) and backwards B(j) in
 * the order of a schedule (pipeline_schedule.ts): activations go forward and their gradients back by send/recv,
 * parameter gradients are summed over micro-batches in micro-batch order (in fp32, as Megatron's main_grad), and at
 * the flush each stage's AdamW updates its own parameters. With tied embeddings the first and last stages both hold
 * the embedding and sum its two gradients between them before the update (Megatron's embedding group), so both
 * copies stay identical. The head's loss is scaled by 1 / tokens of the whole batch, so the micro-batches'
 * gradients add up to the whole batch's mean gradient.
 *
 * A step is measured: each op's start and end on one clock across the workers (a MeasuredTimeline, analysed for the
 * bubble against (p - 1)/(m + p - 1)), each stage's activations held and micro-batches in flight (GPipe holds all m
 * on stage 0, 1F1B at most p - s on stage s), the bytes each stage sent, the step's time and loss.
 */
import { ServelabError } from '../errors.ts';
import { BUILTIN_DIR } from '../model/builtin.ts';
import type { LlamaConfig } from '../model/config.ts';
import { loadLlamaConfig } from '../model/hf_config.ts';
import type { Batch } from '../train/corpus.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { segmentSpecs } from '../train/segments.ts';
import type { CommStats } from './comm.ts';
import { JOB_LR, lossScale, splitBatch, type JobOptions } from './job.ts';
import type { WorkerMemory } from './layout.ts';
import { WorkerGroup } from './group.ts';
import { analyzeTimeline, gpipeSchedule, measuredTimeline, oneFOneBSchedule, type MeasuredTimeline, type PipelineOpKind, type PipelineSchedule, type TimelineAnalysis } from './pipeline_schedule.ts';
import { shardRange } from './shard.ts';
import type { StageInit, StageStepArgs, StageStepOut, StageWeights } from './pipeline_worker.ts';

const TASKS = new URL('./pipeline_worker.ts', import.meta.url);

export type PipelineScheduleName = 'gpipe' | '1f1b';

export interface PipelineOptions extends JobOptions {
  /** p: workers, each running one stage. At most the model's number of layers. */
  stages: number;
  schedule: PipelineScheduleName;
  /** m: micro-batches per step; at most the batch's sequences. */
  microBatches: number;
  /** Bytes each worker's device may hold; null or absent: unbounded. */
  budget?: number | null;
  /** Each worker's device kind; default 'cpu'. */
  device?: string;
  /** onnxruntime threads per worker; default the machine's cores shared out. */
  threads?: number;
}

/** Which segments (indices into segmentSpecs) each stage runs: the layers cut into p contiguous, even runs. */
export function pipelineStages(cfg: LlamaConfig, stages: number): number[][] {
  const L = cfg.numLayers;
  if (!Number.isSafeInteger(stages) || stages < 1) throw new ServelabError(`pipeline: stages must be an integer >= 1, got ${stages}`);
  if (stages > L) throw new ServelabError(`pipeline: ${stages} stages for a model of ${L} layers; every stage needs at least one layer, so use at most ${L} stages`);
  return Array.from({ length: stages }, (_, s) => {
    const { start, end } = shardRange(L, stages, s);
    const layers = Array.from({ length: end - start }, (_, k) => 1 + start + k); // segment i + 1 is layer i
    return [...(s === 0 ? [0] : []), ...layers, ...(s === stages - 1 ? [L + 1] : [])];
  });
}

/** The schedule a step follows. */
export function pipelineSchedule(name: PipelineScheduleName, stages: number, microBatches: number): PipelineSchedule {
  if (name === 'gpipe') return gpipeSchedule(stages, microBatches);
  if (name === '1f1b') return oneFOneBSchedule(stages, microBatches);
  throw new ServelabError(`pipeline: schedule must be 'gpipe' or '1f1b', got ${JSON.stringify(name)}`);
}

export interface PipelineStageStats {
  stage: number;
  /** The segments the stage runs, e.g. ['embed', 'layer 0', 'layer 1']. */
  segments: string[];
  /** Most micro-batches whose forward had run and backward had not, counted as the stage ran. */
  peakInFlight: number;
  /** Most bytes of kept activations (the segments' inputs, tag 'activations') after any op. */
  peakActivationBytes: number;
  /** Kept activation bytes after each op, in the order the stage ran them. */
  activationBytes: number[];
  /** Bytes sent to the neighbouring stages in this step (activations, their gradients, the tied embedding's gradient). */
  bytesSent: number;
  /** Of bytesSent, the tied embedding's gradient (0 unless this stage shares it). */
  embeddingGradBytes: number;
}

export interface PipelineStepResult {
  step: number;
  /** The whole batch's mean loss (the head's scaled losses summed over micro-batches). */
  loss: number;
  /** Wall time of the step on the main thread. */
  stepMs: number;
  schedule: string;
  stages: number;
  microBatches: number;
  /** Every op's start and end, on one clock across workers. */
  timeline: MeasuredTimeline;
  /** Makespan, busy and idle time, the measured bubble and its theory (p - 1)/(m + p - 1), peak in flight. */
  analysis: TimelineAnalysis;
  perStage: PipelineStageStats[];
  /** Each worker's memory after the step; peaks (peakByTag) are over this step. */
  memory: WorkerMemory[];
  /** Bytes each worker sent in this step. */
  commBytes: number[];
  /** Each worker's traffic by collective since the group started. */
  comm: CommStats[];
}

/** For tests of failure: the stage that throws just before running op `kind`(microBatch). */
export interface PipelineFault {
  stage: number;
  kind: PipelineOpKind;
  microBatch: number;
}

export class PipelineTrainer {
  private steps = 0;

  private constructor(
    private readonly group: WorkerGroup,
    readonly cfg: LlamaConfig,
    readonly opts: Readonly<PipelineOptions>,
    /** Segment names per stage. */
    readonly stageSegments: readonly string[][],
  ) {}

  /** Checks the options (before any worker starts), starts p workers and loads each stage's params and optimizer. */
  static async start(opts: PipelineOptions): Promise<PipelineTrainer> {
    const cfg = loadLlamaConfig(opts.model ?? BUILTIN_DIR);
    const plan = pipelineStages(cfg, opts.stages);
    pipelineSchedule(opts.schedule, opts.stages, opts.microBatches); // validates the name and m
    const precision = opts.precision ?? 'bf16';
    if (precision !== 'fp32' && precision !== 'bf16') throw new ServelabError(`pipeline: precision must be 'fp32' or 'bf16', got ${JSON.stringify(precision)}`);
    const group = await WorkerGroup.start({ workers: opts.stages, device: opts.device, budget: opts.budget ?? null, threads: opts.threads });
    try {
      const init: StageInit = { stages: opts.stages, model: opts.model, precision, lr: opts.lr ?? JOB_LR, weightDecay: opts.weightDecay ?? 0.01 };
      await group.run(TASKS, 'init', init);
    } catch (e) {
      await group.close();
      throw e;
    }
    const names = segmentSpecs(cfg).map((s) => s.name);
    return new PipelineTrainer(group, cfg, { ...opts, precision }, plan.map((segs) => segs.map((i) => names[i])));
  }

  get stages(): number {
    return this.opts.stages;
  }

  /** One training step over the batch: m micro-batches through the schedule, then every stage's AdamW update. */
  async step(batch: Batch, opts: { fault?: PipelineFault } = {}): Promise<PipelineStepResult> {
    const { stages: p, microBatches: m } = this.opts;
    const micro = splitBatch(batch, m, 'micro-batches');
    const schedule = pipelineSchedule(this.opts.schedule, p, m);
    const scale = lossScale(batch);
    const before = this.group.commStats();
    const args = (s: number): StageStepArgs => ({
      ops: schedule.ops[s],
      micro: micro.map((mb) => ({ batch: mb.batch, seq: mb.seq, ...(s === 0 ? { tokens: mb.tokens } : {}), ...(s === p - 1 ? { labels: mb.labels } : {}) })),
      scale,
      fault: opts.fault && opts.fault.stage === s ? { kind: opts.fault.kind, microBatch: opts.fault.microBatch } : null,
    });
    const t0 = performance.now();
    const outs = await this.group.run<StageStepOut>(TASKS, 'step', args);
    const stepMs = performance.now() - t0;
    const timeline = measuredTimeline(schedule, outs.flatMap((o) => o.records));
    const comm = this.group.commStats();
    const commBytes = comm.map((c, r) => sumSent(c) - sumSent(before[r]));
    return {
      step: ++this.steps,
      loss: outs[p - 1].loss!,
      stepMs,
      schedule: schedule.name,
      stages: p,
      microBatches: m,
      timeline,
      analysis: analyzeTimeline(timeline),
      perStage: outs.map((o, s) => ({
        stage: s,
        segments: [...this.stageSegments[s]],
        peakInFlight: o.peakInFlight,
        peakActivationBytes: Math.max(0, ...o.activationBytes),
        activationBytes: o.activationBytes,
        bytesSent: commBytes[s],
        embeddingGradBytes: o.embeddingGradBytes,
      })),
      memory: this.group.memory(),
      commBytes,
      comm,
    };
  }

  /**
   * Every parameter's values in paramSpecs order, gathered from the stages (fp32; bf16 params widened). Throws if the
   * two copies of a tied embedding differ.
   */
  async weights(): Promise<Float32Array[]> {
    const outs = await this.group.run<StageWeights>(TASKS, 'weights');
    const all: (Float32Array | null)[] = paramSpecs(this.cfg).map(() => null);
    outs.forEach((o, s) =>
      o.indices.forEach((i, k) => {
        const prev = all[i];
        if (prev && (prev.length !== o.values[k].length || prev.some((v, j) => !Object.is(v, o.values[k][j])))) {
          throw new ServelabError(`pipeline: stage ${s}'s copy of param ${i} differs from another stage's; the tied embedding's copies diverged`);
        }
        all[i] = o.values[k];
      }),
    );
    return all.map((v, i) => {
      if (!v) throw new ServelabError(`pipeline: no stage holds param ${i}`);
      return v;
    });
  }

  /** Each worker's live and peak memory by tag, read at any moment (also while a step runs). */
  memory(): WorkerMemory[] {
    return this.group.memory();
  }

  close(): Promise<void> {
    return this.group.close();
  }
}

const sumSent = (c: CommStats): number => Object.values(c).reduce((n, x) => n + x.sent, 0);
