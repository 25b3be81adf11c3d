/**
 * AdamW over this worker's shard of every parameter (ZeRO's partitioned optimizer, Rajbhandari et al. 2020): the fp32
 * master weights, m and v of shardRange(numel, N, rank) of each 16-bit parameter, tagged 'optimizer', so a worker
 * holds K Psi / N bytes of them (K = 12). A step takes the reduced gradient shards and returns the
 * updated parameter shards in the parameters' dtype; the caller all-gathers them into whole parameters (stages 1 and
 * 2) or keeps them as its shards (stage 3). The update is adamw.ts's graph, element by element, so the new values are
 * exactly those an AdamW over the whole parameters computes.
 */
import type { Device } from '../device/device.ts';
import { Tensor } from '../tensor/tensor.ts';
import { DTypeError, ServelabError, ShapeError } from '../errors.ts';
import { adamwGraph, adamwHyperparameters, type AdamWOptions, type UpdateSpec } from '../train/adamw.ts';
import type { DType } from '../dtype/dtype.ts';

export type ShardedAdamWOptions = Pick<AdamWOptions, 'lr' | 'betas' | 'eps' | 'weightDecay'>;

export class ShardedAdamW {
  readonly lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  t = 0;
  private readonly master: Tensor[] = [];
  private readonly m: Tensor[] = [];
  private readonly v: Tensor[] = [];

  /** `shards`: this worker's shard of each parameter (1-d, the parameter's dtype); fp32 state is made from them. */
  constructor(
    readonly device: Device,
    readonly dtype: DType,
    shards: readonly Float32Array[],
    opts: ShardedAdamWOptions = {},
  ) {
    ({ lr: this.lr, betas: this.betas, eps: this.eps, weightDecay: this.weightDecay } = adamwHyperparameters(opts, 'ShardedAdamW'));
    if (dtype !== 'bf16' && dtype !== 'fp16') throw new DTypeError('ShardedAdamW', [dtype], 'ZeRO partitions mixed-precision training: parameters must be bf16 or fp16, with fp32 masters');
    try {
      shards.forEach((values, i) => {
        this.master.push(device.tensor(values, [values.length], 'fp32', { tag: 'optimizer', label: `param ${i} master shard` }));
        this.m.push(Tensor.empty(device, [values.length], 'fp32', 'optimizer', `param ${i} m shard`));
        this.v.push(Tensor.empty(device, [values.length], 'fp32', 'optimizer', `param ${i} v shard`));
      });
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** Bytes of optimizer state this worker holds. */
  bytes(): number {
    return [...this.master, ...this.m, ...this.v].reduce((n, t) => n + t.bytes, 0);
  }

  /**
   * One update from the reduced gradient shards (one per parameter); returns the new parameter shards (1-d, `dtype`,
   * tagged 'weights'). Fails without changing any state.
   */
  async step(grads: readonly Tensor[], lr = this.lr): Promise<Tensor[]> {
    if (grads.length !== this.master.length) throw new ServelabError(`ShardedAdamW.step: ${grads.length} gradient shards for ${this.master.length} parameters`);
    grads.forEach((g, i) => {
      if (g.numel !== this.master[i].numel) throw new ShapeError('ShardedAdamW', [this.master[i].shape, g.shape], `gradient shard ${i} must hold ${this.master[i].numel} elements`);
    });
    const t = this.t + 1;
    const [b1, b2] = this.betas;
    const specs: UpdateSpec[] = grads.map((g, i) => ({ shape: this.master[i].shape, weight: 'fp32', grad: g.dtype, param: this.dtype }));
    const key = specs.map((s) => `${s.grad}[${s.shape[0]}]`).join(' ');
    const graph = this.device.graph(this, key, () => adamwGraph(specs, this.betas, this.eps));
    const scalars = [1 - lr * this.weightDecay, lr / (1 - b1 ** t), 1 / (1 - b2 ** t)].map((x) => this.device.tensor([x], [], 'fp32'));
    let outs: Tensor[];
    try {
      outs = await this.device.run(graph, [...scalars, ...grads.flatMap((g, i) => [this.master[i], g, this.m[i], this.v[i]])], { tag: 'optimizer' });
    } finally {
      for (const x of scalars) x.dispose();
    }
    // Synchronous from here: every state takes its new value.
    const params: Tensor[] = [];
    let k = 0;
    for (let i = 0; i < specs.length; i++) {
      this.master[i].assign(outs[k++]);
      this.m[i].assign(outs[k++]);
      this.v[i].assign(outs[k++]);
      params.push(outs[k++].retag('weights'));
    }
    this.t = t;
    return params;
  }

  dispose(): void {
    for (const x of [...this.master, ...this.m, ...this.v]) x.dispose();
  }
}
