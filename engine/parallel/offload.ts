/**
 * CPU offloading on one device (ZeRO-Offload, Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model
 * Training"): the accelerator keeps what the forward and backward passes need, and the host keeps the rest. With
 * mixed-precision Adam a parameter costs 2 (bf16 weight) + 2 (bf16 gradient) + 12 (fp32 master, m, v) bytes; ZeRO-
 * Offload moves the 12 bytes of optimizer state and the update itself to the host (its "CPU Adam"), sends each
 * segment's gradients there as the backward pass makes them, and sends the new bf16 weights back after the update.
 * Offloading the weights too (ZeRO-Infinity, Rajbhandari et al. 2021) streams each segment's params to the device just
 * before it runs, for the forward and again for the backward, and frees them after: the device holds one segment's
 * params and the checkpointed activations. `spill` puts the optimizer states in a file between steps (ZeRO-Infinity's
 * NVMe tier). Here the host is a second cpu device with its own memory tracker, so both memories are measured.
 * DeepSpeed: zero_optimization.offload_optimizer { device: 'cpu' | 'nvme' } and offload_param { device: 'cpu' }.
 * The graphs and the AdamW update are the same on both devices, so offloading changes where values live, not what
 * they are: the weights after any number of steps are bit-identical to training with everything on the device.
 */
import type { Device } from '../device/device.ts';
import { createDevice } from '../device/select.ts';
import { Graph } from '../graph/graph.ts';
import { ServelabError } from '../errors.ts';
import type { BytesByTag } from '../memory/tracker.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { Batch } from '../train/corpus.ts';
import { AdamW, type AdamWOptions } from '../train/adamw.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { SegmentedModel, type SegmentHooks } from '../train/segments.ts';
import { JOB_LR, loadJobParams, lossScale, type JobOptions } from './job.ts';
import { assertFits, segmentNeeds, type OffloadMode } from './offload_plan.ts';
import { StateSpill, type SpillStats } from './offload_spill.ts';

export interface OffloadOptions extends JobOptions {
  /** What lives on the host; default 'optimizer+params'. */
  offload?: OffloadMode;
  /** The accelerator's budget in bytes (tensors and compiled sessions); null: unbounded. */
  budget?: number | null;
  /** The accelerator's kind; default 'cpu' (the same kernels as the host, so results compare bit for bit). */
  device?: string;
  /** A directory to keep the optimizer states in between steps (NVMe offload); needs offload != 'none'. */
  spill?: string;
  /** onnxruntime threads per run on each device; default one per core. */
  threads?: number;
}

export interface OffloadStep {
  step: number;
  /** Mean next-token cross entropy of the batch. */
  loss: number;
  stepMs: number;
  /** Of stepMs: copying params and gradients between host and device. */
  transferMs: number;
  /** Of stepMs: the AdamW update (where the optimizer is), with the spill file's reads and writes. */
  updateMs: number;
  /** The accelerator's peak bytes during the step, in all and by tag. */
  device: { peak: number; peakByTag: BytesByTag };
  /** The host's peak bytes during the step, in all and by tag. */
  host: { peak: number; peakByTag: BytesByTag };
  /** Bytes offloading moved host -> device (streamed params, updated weights). */
  h2dBytes: number;
  /** Bytes offloading moved device -> host (gradients). */
  d2hBytes: number;
  /** The accelerator's own transfer counts for the step (dev.stats(); 0 on cpu, where device memory is the host's). */
  deviceStats: { hostToDeviceBytes: number; deviceToHostBytes: number };
  /** Bytes of optimizer state written to and read from the spill file; null without spill. */
  spill: SpillStats | null;
}

/** The tied embedding's gradients summed (in fp32, rounded to the param's dtype, as autograd accumulates a .grad). */
function gradSumGraph(dtype: Tensor['dtype'], shape: readonly number[]): Graph {
  const g = new Graph(`sum gradients ${dtype}[${shape.join(', ')}]`);
  const a = g.input('a', dtype, shape);
  const b = g.input('b', dtype, shape);
  if (dtype === 'fp32') return g.output(g.op('Add', [a, b])[0]);
  const f = (x: typeof a) => g.op('Cast', [x], { to: 'fp32' })[0];
  return g.output(g.op('Cast', [g.op('Add', [f(a), f(b)])[0]], { to: dtype })[0]);
}

export class OffloadTrainer {
  private steps = 0;
  private broken: Error | null = null;
  private closed = false;

  private constructor(
    /** The accelerator. */
    readonly dev: Device,
    /** Host memory: a cpu device with a tracker of its own. */
    readonly host: Device,
    readonly mode: OffloadMode,
    readonly precision: 'fp32' | 'bf16',
    readonly model: SegmentedModel,
    /** The weights the optimizer updates, in paramSpecs order: on the host, or on the device for 'none'. */
    private readonly params: Tensor[],
    /** 'optimizer' only: the device's copies of the weights, refreshed after each update. */
    private readonly devParams: Tensor[] | null,
    /** The optimizer; null while spilled (made for each update from the file). */
    private adam: AdamW | null,
    private readonly adamOpts: AdamWOptions,
    private readonly spillFile: StateSpill | null,
  ) {}

  /** Loads the job's model and places weights, gradients and optimizer states as `offload` says. */
  static async create(opts: OffloadOptions = {}): Promise<OffloadTrainer> {
    const mode = opts.offload ?? 'optimizer+params';
    const precision = opts.precision ?? 'bf16';
    if (!['none', 'optimizer', 'optimizer+params'].includes(mode)) throw new ServelabError(`offload must be 'none', 'optimizer' or 'optimizer+params', got ${JSON.stringify(mode)}`);
    if (precision !== 'fp32' && precision !== 'bf16') throw new ServelabError(`offload: precision must be 'fp32' or 'bf16', got ${JSON.stringify(precision)}`);
    if (opts.spill !== undefined && mode === 'none') throw new ServelabError("offload: spill keeps the host's optimizer states on disk; it needs offload 'optimizer' or 'optimizer+params'");
    const { cfg, values } = loadJobParams(opts.model);
    const specs = paramSpecs(cfg);
    const numel = specs.map((s) => s.shape.reduce((a, b) => a * b, 1));
    const adamOpts: AdamWOptions = { lr: opts.lr ?? JOB_LR, weightDecay: opts.weightDecay ?? 0.01 };
    const threads = opts.threads !== undefined ? { threads: opts.threads } : {};
    const spill = opts.spill !== undefined ? await StateSpill.create(opts.spill, numel, precision === 'bf16') : null;
    const dev = await createDevice(opts.device ?? 'cpu', { name: 'accelerator', budget: opts.budget ?? null, ...threads });
    const host = await createDevice('cpu', { name: 'host', ...threads });
    const made: { dispose(): void }[] = [];
    try {
      // Before anything is placed: what stays on the device, and the smallest step's segments on top of it.
      const total = numel.reduce((a, b) => a + b, 0);
      const w = (precision === 'bf16' ? 2 : 4) * total;
      const resident = mode === 'none' ? w + (precision === 'bf16' ? 12 : 8) * total : mode === 'optimizer' ? w : 0;
      assertFits(dev, segmentNeeds(cfg, precision, mode, 1, 1), resident + dev.memory.live);
      const model = new SegmentedModel(dev, cfg, { precision });
      made.push(model);
      const where = mode === 'none' ? dev : host;
      const params = values.map((v, i) => where.tensor(v, specs[i].shape, precision, { tag: 'weights', label: specs[i].name }));
      made.push(...params);
      const devParams = mode === 'optimizer' ? params.map((p) => dev.copyFrom(p)) : null;
      if (devParams) made.push(...devParams);
      let adam: AdamW | null = new AdamW(where, params, adamOpts);
      made.push(adam);
      if (spill) {
        await spill.save(slotStates(adam, params.length), { writtenBytes: 0, readBytes: 0 });
        adam.dispose();
        adam = null;
      }
      return new OffloadTrainer(dev, host, mode, precision, model, params, devParams, adam, adamOpts, spill);
    } catch (e) {
      for (const x of made) x.dispose();
      await Promise.all([dev.dispose(), host.dispose(), spill?.remove()]);
      throw e;
    }
  }

  /**
   * One step on a batch: forward and backward segment by segment on the device, gradients to the optimizer (on the
   * host unless 'none'), one AdamW update. Checked first: a batch whose segments cannot fit the budget raises
   * SegmentOutOfMemoryError before anything changes; any failure before the update leaves weights and states as
   * they were.
   */
  async step(batch: Batch, lr = this.adamOpts.lr): Promise<OffloadStep> {
    if (this.closed) throw new ServelabError('offload: the trainer was closed');
    if (this.broken) throw new ServelabError(`offload: a previous step failed after the update (${this.broken.message}); dispose this trainer`);
    const { dev, host, mode } = this;
    const resident = dev.memory.live - dev.memory.liveByTag().compiled;
    assertFits(dev, segmentNeeds(this.model.cfg, this.precision, mode, batch.batch, batch.context), resident);
    dev.memory.resetPeak();
    host.memory.resetPeak();
    const stats0 = dev.stats();
    const t0 = performance.now();
    let h2d = 0;
    let d2h = 0;
    let transferMs = 0;
    let updateMs = 0;
    const timed = <T>(f: () => T): T => {
      const t = performance.now();
      try {
        return f();
      } finally {
        transferMs += performance.now() - t;
      }
    };
    // Each param's gradient, summed over the segments that use it, where the optimizer is.
    const grads: (Tensor | null)[] = this.params.map(() => null);
    const gradDev = mode === 'none' ? dev : host;
    const streamed = mode === 'optimizer+params';
    const weights = this.devParams ?? this.params;
    const hooks: SegmentHooks = {
      acquire: (seg) => {
        if (!streamed) return seg.params.map((i) => weights[i]);
        const up: Tensor[] = [];
        try {
          for (const i of seg.params) {
            up.push(timed(() => dev.copyFrom(this.params[i], { tag: 'weights' })));
            h2d += this.params[i].bytes;
          }
        } catch (e) {
          for (const t of up) t.dispose();
          throw e;
        }
        return up;
      },
      release: (_seg, ps) => {
        if (streamed) for (const t of ps) t.dispose();
      },
      onGrads: async (seg, gs) => {
        let k = 0;
        try {
          for (; k < gs.length; k++) {
            const g = mode === 'none' ? gs[k] : timed(() => host.copyFrom(gs[k], { tag: 'grads' }));
            if (g !== gs[k]) {
              d2h += gs[k].bytes;
              gs[k].dispose();
            }
            await this.accumulate(grads, seg.params[k], g, gradDev);
          }
        } finally {
          // A failed copy or sum: the gradients not yet taken are freed here (the taken ones with `grads`).
          for (const g of gs.slice(k)) if (!g.disposed && !grads.includes(g)) g.dispose();
        }
      },
    };
    let spill: SpillStats | null = null;
    let loss: number;
    try {
      loss = await this.model.step({ tokens: batch.tokens, labels: batch.labels, batch: batch.batch, seq: batch.context }, lossScale(batch), hooks);
      const gs = grads as Tensor[];
      const t1 = performance.now();
      if (this.spillFile) spill = await this.spilledUpdate(gs, lr);
      else await this.adam!.step(gs, lr);
      updateMs = performance.now() - t1;
      this.steps++;
      if (this.devParams) {
        try {
          this.devParams.forEach((d, i) => {
            timed(() => d.assign(dev.copyFrom(this.params[i])));
            h2d += this.params[i].bytes;
          });
        } catch (e) {
          this.broken = e as Error;
          throw e;
        }
      }
    } finally {
      for (const g of grads) g?.dispose();
    }
    const stepMs = performance.now() - t0;
    const stats1 = dev.stats();
    return {
      step: this.steps,
      loss,
      stepMs,
      transferMs,
      updateMs,
      device: { peak: dev.memory.peak, peakByTag: dev.memory.peakByTag() },
      host: { peak: host.memory.peak, peakByTag: host.memory.peakByTag() },
      h2dBytes: h2d,
      d2hBytes: d2h,
      deviceStats: { hostToDeviceBytes: stats1.hostToDeviceBytes - stats0.hostToDeviceBytes, deviceToHostBytes: stats1.deviceToHostBytes - stats0.deviceToHostBytes },
      spill,
    };
  }

  /** The weights now, as fp32 values in paramSpecs order (bf16 widened exactly). */
  async weights(): Promise<Float32Array[]> {
    return Promise.all(this.params.map((p) => p.values()));
  }

  /** The optimizer's fp32 states per param (master null for fp32 params), from the file when spilled. */
  async optimizerState(): Promise<{ master: Float32Array | null; m: Float32Array; v: Float32Array }[]> {
    const adam = this.adam ?? (await this.loadSpilled({ writtenBytes: 0, readBytes: 0 }));
    try {
      return this.params.map((_, i) => {
        const s = adam.state(i);
        return { master: s.master?.toFloat32() ?? null, m: s.m.toFloat32(), v: s.v.toFloat32() };
      });
    } finally {
      if (adam !== this.adam) adam.dispose();
    }
  }

  /** Frees every tensor, both devices and the spill file. */
  close(): Promise<void> {
    return this.dispose();
  }

  /** Same as close(). */
  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.adam?.dispose();
    for (const t of [...this.params, ...(this.devParams ?? [])]) t.dispose();
    this.model.dispose();
    await Promise.all([this.dev.dispose(), this.host.dispose(), this.spillFile?.remove()]);
  }

  /** Adds a segment's gradient of param i to what earlier segments gave (the head's first, then the embedding's). */
  private async accumulate(grads: (Tensor | null)[], i: number, g: Tensor, where: Device): Promise<void> {
    const prev = grads[i];
    if (!prev) {
      grads[i] = g;
      return;
    }
    try {
      const graph = where.graph(this, `sum ${g.dtype} ${g.shape.join(',')}`, () => gradSumGraph(g.dtype, g.shape));
      [grads[i]] = await where.run(graph, [prev, g], { tag: 'grads', label: prev.label });
      prev.dispose();
    } finally {
      g.dispose();
    }
  }

  /** ZeRO-Infinity's NVMe tier: states read from the file into a fresh AdamW, updated, written back, freed. */
  private async spilledUpdate(grads: Tensor[], lr: number | undefined): Promise<SpillStats> {
    const stats: SpillStats = { writtenBytes: 0, readBytes: 0 };
    const adam = await this.loadSpilled(stats);
    try {
      await adam.step(grads, lr);
      try {
        await this.spillFile!.save(slotStates(adam, this.params.length), stats);
      } catch (e) {
        // The weights took the update but the file kept the old states: the two no longer belong to one step.
        this.broken = e as Error;
        throw e;
      }
    } finally {
      adam.dispose();
    }
    return stats;
  }

  private async loadSpilled(stats: SpillStats): Promise<AdamW> {
    const adam = new AdamW(this.host, this.params, this.adamOpts);
    try {
      await this.spillFile!.load(slotStates(adam, this.params.length), stats);
    } catch (e) {
      adam.dispose();
      throw e;
    }
    adam.t = this.steps;
    return adam;
  }
}

/** Each param's optimizer state tensors: [master?, m, v]. */
function slotStates(adam: AdamW, n: number): Tensor[][] {
  return Array.from({ length: n }, (_, i) => {
    const s = adam.state(i);
    return [...(s.master ? [s.master] : []), s.m, s.v];
  });
}
