/**
 * Megatron-LM tensor parallelism (Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language
 * Models Using Model Parallelism"; Megatron's --tensor-model-parallel-size N) on a group of worker threads: every
 * decoder layer is split across the N ranks (attention by heads, the MLP by columns then rows), the embedding and the
 * final norm are replicated, and every rank runs the WHOLE batch. Per layer and step the ranks all-reduce four
 * b x s x h activations (NCCL's all-reduce): the partial outputs of the attention and MLP blocks in the forward (g),
 * their partial d h in the backward (f); plus, once per step, the norms' partial gradients (tensor_parallel_worker.ts).
 * What it buys: each rank holds about 1/N of the layers' weights, gradients and optimizer state, and does 1/N of
 * their arithmetic; what it costs: those all-reduces on the critical path of every layer, which is why Megatron keeps
 * tensor parallelism inside one NVLink node.
 *
 * The main thread starts the workers (each reads the checkpoint itself, or draws the same seeded random init for a
 * given `config`), hands each step the batch, and gathers results: the loss, the step's time, each rank's memory by
 * tag and the all-reduce bytes per layer, next to Megatron's count (tpCommBytesPerLayer).
 */
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { loadLlamaConfig } from '../model/hf_config.ts';
import { BUILTIN_DIR } from '../model/builtin.ts';
import type { Batch } from '../train/corpus.ts';
import { paramSpecs } from '../train/lm_params.ts';
import type { CommStats } from './comm.ts';
import { WorkerGroup, type WorkerGroupOptions } from './group.ts';
import { JOB_LR, lossScale, type JobOptions } from './job.ts';
import type { WorkerMemory } from './layout.ts';
import { tpCommBytesPerLayer, type TensorParallelComm, type TensorParallelPrecision } from './tensor_parallel.ts';
import { checkTensorParallelSize, gatherShards, LAYER_PARAMS, shardShapes } from './tensor_parallel_shard.ts';
import type { TpCommRecord, TpInitArgs, TpStepResult } from './tensor_parallel_worker.ts';

const TASKS = new URL('./tensor_parallel_worker.ts', import.meta.url);
const PER_LAYER = LAYER_PARAMS.length;

/** JobOptions (precision default bf16, lr default JOB_LR) and the group's: device, budget, threads per worker. */
export interface TensorParallelOptions extends JobOptions, Omit<WorkerGroupOptions, 'workers'> {
  /** Ranks N: must divide the query heads, the kv heads and the MLP width. */
  workers: number;
  /** A (small) model to initialize at random instead of loading `model`; the same values on every rank. */
  config?: LlamaConfig;
  /** The random init's seed (with `config`); default 0. */
  seed?: number;
}

export interface TensorParallelStep {
  /** The batch's mean cross entropy (the same on every rank). */
  loss: number;
  /** Wall time of the step, the slowest rank's. */
  stepMs: number;
  /** Each rank's memory after the step: live by tag, and the step's peak by tag. */
  memory: WorkerMemory[];
  /** Each rank's all-reduce bytes sent, per layer, forward and backward, and the norms' all-reduce. */
  comm: TpCommRecord[];
  /** Megatron's count for this batch and N (activations move in fp32: 4 bytes per element). */
  predicted: TensorParallelComm;
}

/** Bytes of parameters one rank holds: the replicated ones whole, every layer's sharded ones 1/N. */
export interface TensorParallelWeightBytes {
  replicated: number;
  sharded: number;
  perRank: number;
}

/** Parameter bytes per rank in the given precision (without the rotary tables every rank also keeps). */
export function tensorParallelWeightBytes(cfg: LlamaConfig, size: number, precision: TensorParallelPrecision): TensorParallelWeightBytes {
  const bytes = precision === 'fp32' ? 4 : 2;
  const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
  const layer = shardShapes(cfg, size);
  let replicated = 0;
  let sharded = 0;
  paramSpecs(cfg).forEach((s, i) => {
    const inLayer = i >= 1 && i < 1 + PER_LAYER * cfg.numLayers;
    const k = (i - 1) % PER_LAYER;
    if (!inLayer || s.shape.length === 1) replicated += numel(s.shape) * bytes;
    else sharded += numel(layer[k]) * bytes;
  });
  return { replicated, sharded, perRank: replicated + sharded };
}

export class TensorParallelTrainer {
  private constructor(
    private readonly group: WorkerGroup,
    readonly cfg: LlamaConfig,
    readonly precision: TensorParallelPrecision,
    /** AdamW's learning rate unless a step names another. */
    readonly lr: number,
  ) {}

  get size(): number {
    return this.group.size;
  }

  /**
   * Starts N workers, each holding its shard of every layer and the replicated embedding and norm, with its own AdamW.
   * Refuses an N that does not divide the heads, kv heads and MLP width (ShapeError) before any worker starts.
   */
  static async start(opts: TensorParallelOptions): Promise<TensorParallelTrainer> {
    const precision = opts.precision ?? 'bf16';
    if (precision !== 'fp32' && precision !== 'bf16') throw new ServelabError(`TensorParallelTrainer: precision must be 'fp32' or 'bf16', got ${String(precision)}`);
    const cfg = opts.config ?? loadLlamaConfig(opts.model ?? BUILTIN_DIR);
    checkTensorParallelSize(cfg, opts.workers);
    const lr = opts.lr ?? JOB_LR;
    const group = await WorkerGroup.start({ ...opts, workers: opts.workers });
    const args: TpInitArgs = { config: opts.config ?? null, model: opts.model, seed: opts.seed ?? 0, precision, lr, weightDecay: opts.weightDecay ?? 0.01 };
    try {
      await group.run(TASKS, 'init', args);
    } catch (e) {
      await group.close();
      throw e;
    }
    return new TensorParallelTrainer(group, cfg, precision, lr);
  }

  private async pass(batch: Batch, mode: 'loss' | 'grads' | 'train', lr = this.lr): Promise<TpStepResult[]> {
    const { batch: B, context: S } = batch;
    if (!(B >= 1 && S >= 1 && batch.tokens.length === B * S && batch.labels.length === B * S)) {
      throw new ServelabError(`TensorParallelTrainer: a batch of ${B} x ${S} must hold ${B * S} tokens and labels, got ${batch.tokens.length} and ${batch.labels.length}`);
    }
    if (S > this.cfg.maxPositions) throw new ServelabError(`TensorParallelTrainer: context ${S} is longer than the model's ${this.cfg.maxPositions} positions`);
    const tb = { tokens: batch.tokens, labels: batch.labels, batch: B, seq: S };
    return this.group.run<TpStepResult>(TASKS, 'step', { batch: tb, mode, scale: lossScale(batch), lr });
  }

  /** One training step on the whole batch: forward, backward, all-reduces, AdamW on every rank. */
  async step(batch: Batch, lr = this.lr): Promise<TensorParallelStep> {
    const rs = await this.pass(batch, 'train', lr);
    return {
      loss: rs[0].loss,
      stepMs: Math.max(...rs.map((r) => r.stepMs)),
      memory: this.group.memory(),
      comm: rs.map((r) => r.comm),
      predicted: tpCommBytesPerLayer({ batch: batch.batch, seq: batch.context, hidden: this.cfg.hiddenSize, bytesPerElement: 4, size: this.size }),
    };
  }

  /** The batch's mean loss, forward only (two all-reduces per layer, nothing updated). */
  async loss(batch: Batch): Promise<number> {
    return (await this.pass(batch, 'loss'))[0].loss;
  }

  /** The whole model's gradients for a batch (paramSpecs order, full shapes), without updating: shards joined. */
  async gradients(batch: Batch): Promise<Float32Array[]> {
    return this.gather((await this.pass(batch, 'grads')).map((r) => r.grads!));
  }

  /** The whole model's parameters (paramSpecs order, full shapes, fp32 values of what the ranks hold). */
  async weights(): Promise<Float32Array[]> {
    return this.gather(await this.group.run<Float32Array[]>(TASKS, 'weights'));
  }

  /** Each rank's memory now, by tag (readable while a step runs). */
  memory(): WorkerMemory[] {
    return this.group.memory();
  }

  /** Bytes each rank has sent and received per collective since the start. */
  commStats(): CommStats[] {
    return this.group.commStats();
  }

  close(): Promise<void> {
    return this.group.close();
  }

  /** Every rank's values (its shapes) joined into full parameters; replicated ones (identical on all ranks) from rank 0. */
  private gather(perRank: Float32Array[][]): Float32Array[] {
    const L = this.cfg.numLayers;
    // The replicated values must be bit-identical on every rank (the same inputs, the same all-reduced d h).
    const replicated = [0, ...Array.from({ length: perRank[0].length - 1 - PER_LAYER * L }, (_, k) => 1 + PER_LAYER * L + k)];
    for (const i of replicated) {
      perRank.forEach((p, r) => {
        if (p[i].some((v, j) => !Object.is(v, perRank[0][i][j]))) throw new ServelabError(`TensorParallelTrainer: replicated parameter ${i} differs between rank 0 and rank ${r}`);
      });
    }
    const out: Float32Array[] = [perRank[0][0]];
    for (let l = 0; l < L; l++) {
      const from = 1 + PER_LAYER * l;
      out.push(...gatherShards(this.cfg, perRank.map((p) => p.slice(from, from + PER_LAYER)), 'first').values);
    }
    out.push(...perRank[0].slice(1 + PER_LAYER * L));
    return out;
  }
}
