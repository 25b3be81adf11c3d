/**
 * Data-parallel training with ZeRO on a group of workers (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations
 * Toward Training Trillion Parameter Models"), the lecture's four steps: partition the batch, forward and backward on
 * each worker, synchronise the gradients, update. Stage 0 is plain data parallelism (PyTorch DDP; DeepSpeed
 * zero_optimization.stage 0), stages 1-3 partition the optimizer states, then the gradients, then the parameters
 * (zero_optimization.stage 1, 2, 3). Each step reports, per worker, the model states it held (bytes by tag) beside
 * the paper's formulas (zero_memory.ts), its peak, and the bytes it sent per collective beside 2 Psi (stages 0-2)
 * and 3 Psi (stage 3).
 */
import { ServelabError } from '../errors.ts';
import type { Batch } from '../train/corpus.ts';
import { WorkerGroup, type WorkerGroupOptions } from './group.ts';
import { JOB_LR, lossScale, splitBatch, type JobOptions } from './job.ts';
import type { WorkerMemory } from './layout.ts';
import { zeroCommElements, zeroMemoryBytes, type ZeroMemory, type ZeroStage } from './zero_memory.ts';
import type { ZeroInit, ZeroWorkerStep } from './zero_worker.ts';

const TASKS = new URL('./zero_worker.ts', import.meta.url);

export interface ZeroTrainerOptions extends JobOptions, Omit<WorkerGroupOptions, 'workers'> {
  workers: number;
  /** 0: plain data parallelism; 1: optimizer states partitioned; 2: + gradients; 3: + parameters. */
  stage: ZeroStage;
}

export interface ZeroStepResult {
  step: number;
  /** Mean next-token cross entropy over the whole batch (nats per byte). */
  loss: number;
  /** Wall time of the step on the main thread, ms. */
  stepMs: number;
  workers: ZeroWorkerStep[];
  /** Elements each worker sent in the step (mean over workers): the measured communication volume. */
  commElements: number;
  /** The paper's volume (2 Psi or 3 Psi) and the ring's exact share per worker (x (N - 1) / N). */
  predictedComm: { paper: number; ring: number };
}

export class ZeroTrainer {
  private steps = 0;

  private constructor(
    private readonly group: WorkerGroup,
    readonly stage: ZeroStage,
    /** Parameters of the model (Psi). */
    readonly params: number,
    private readonly lr: number,
  ) {}

  get workers(): number {
    return this.group.size;
  }

  /** Starts the workers; each loads the model (default the built-in one) and takes its share of the training state. */
  static async start(opts: ZeroTrainerOptions): Promise<ZeroTrainer> {
    if (![0, 1, 2, 3].includes(opts.stage)) throw new ServelabError(`ZeroTrainer: stage must be 0, 1, 2 or 3, got ${opts.stage}`);
    if ((opts.precision ?? 'bf16') !== 'bf16') throw new ServelabError(`ZeroTrainer: ZeRO partitions mixed-precision training (bf16 parameters and gradients, fp32 optimizer states); precision ${opts.precision} is not supported`);
    const lr = opts.lr ?? JOB_LR;
    const group = await WorkerGroup.start(opts);
    try {
      const init: ZeroInit = { stage: opts.stage, model: opts.model, lr, weightDecay: opts.weightDecay ?? 0.01 };
      const [first] = await group.run<{ params: number }>(TASKS, 'init', init);
      return new ZeroTrainer(group, opts.stage, first.params, lr);
    } catch (e) {
      await group.close();
      throw e;
    }
  }

  /** The paper's model states per worker for this stage and group (bytes by tag). */
  predicted(): ZeroMemory {
    return zeroMemoryBytes({ params: this.params, workers: this.workers, stage: this.stage });
  }

  /** One step on `batch`: each worker takes shardRange(batch, N, rank) of its sequences. */
  async step(batch: Batch, lr = this.lr): Promise<ZeroStepResult> {
    const parts = splitBatch(batch, this.workers);
    const scale = lossScale(batch);
    const t0 = performance.now();
    const workers = await this.group.run<ZeroWorkerStep>(TASKS, 'step', (rank: number) => ({ batch: parts[rank], scale, lr }));
    const stepMs = performance.now() - t0;
    const sentBytes = workers.map((w) => Object.values(w.sent).reduce((a, b) => a + (b ?? 0), 0));
    const comm = zeroCommElements({ params: this.params, stage: this.stage, workers: this.workers });
    return {
      step: ++this.steps,
      loss: workers.reduce((s, w) => s + w.loss, 0),
      stepMs,
      workers,
      commElements: sentBytes.reduce((a, b) => a + b, 0) / this.workers / 2,
      predictedComm: { paper: comm.paper, ring: comm.ring ?? 0 },
    };
  }

  /** The whole parameters (fp32 values of the bf16 weights, paramSpecs order). */
  async weights(): Promise<Float32Array[]> {
    const out = await this.group.run<Float32Array[] | null>(TASKS, 'weights');
    return out[0]!;
  }

  /** Each worker's memory now, by tag: safe to call while a step runs (live charts). */
  memory(): WorkerMemory[] {
    return this.group.memory();
  }

  close(): Promise<void> {
    return this.group.close();
  }
}

