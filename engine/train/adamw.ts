/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019): Adam's moment estimates with
 * bias correction, and weight decay applied to the weights directly instead of through the gradient. Per step t:
 *   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;
 *   p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * (PyTorch's torch.optim.AdamW). The moments are fp32 tensors tagged 'optimizer'. fp16 and bf16 parameters are
 * updated through fp32 master copies, also tagged 'optimizer' (mixed-precision training, Micikevicius et al. 2018), so
 * a parameter costs 2 (weight) + 2 (gradient) + 12 (master, m, v) bytes, as the tracker then shows.
 * Every parameter is updated by ONE graph run per step; the step's numbers are inputs, so it compiles once.
 * With `paged: true` the states that do not fit the device's budget live in host memory and are paged in for the
 * update (QLoRA's paged optimizer, engine/train/paged_adamw.ts), through the same update graph, one group at a time.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import { Tensor } from '../tensor/tensor.ts';
import { isFloat, type DType } from '../dtype/dtype.ts';
import { DTypeError, ServelabError, ShapeError } from '../errors.ts';
import { commit, stateBytesOf, StatePager, type PagingStats } from './paged_adamw.ts';

export interface AdamWOptions {
  /** Learning rate; default 1e-3. step() may override it (a schedule). */
  lr?: number;
  /** Decay rates of the first and second moment; default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** Added to sqrt(v) so a tiny second moment cannot blow a step up; default 1e-8. */
  eps?: number;
  /** Decoupled weight decay; default 0.01. */
  weightDecay?: number;
  /** Keep fp32 master weights for fp16 and bf16 params; default true (fp32 params never need them). */
  masterWeights?: boolean;
  /**
   * Page optimizer states between the device and host memory (Dettmers et al. 2023, "Paged Optimizers"): states that
   * do not fit the budget live on the host and visit the device only for their update. Default false.
   */
  paged?: boolean;
  /**
   * With `paged`: bytes of the budget that placing states must leave free (for activations, gradients and the
   * update's outputs); states past that start on the host. Default 0.
   */
  reserveBytes?: number;
}

export type AdamWHyperparameters = Required<Pick<AdamWOptions, 'lr' | 'betas' | 'eps' | 'weightDecay'>>;

/** The options' learning rate, betas, eps and weight decay with their defaults, checked; `who` leads the error. */
export function adamwHyperparameters(opts: Pick<AdamWOptions, 'lr' | 'betas' | 'eps' | 'weightDecay'>, who: string): AdamWHyperparameters {
  const h = { lr: opts.lr ?? 1e-3, betas: opts.betas ?? ([0.9, 0.999] as const), eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0.01 };
  const [b1, b2] = h.betas;
  if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new ServelabError(`${who}: betas must lie in [0, 1), got [${b1}, ${b2}]`);
  if (!(h.lr >= 0 && h.eps >= 0 && h.weightDecay >= 0)) {
    throw new ServelabError(`${who}: lr, eps and weightDecay must be non-negative, got ${h.lr}, ${h.eps}, ${h.weightDecay}`);
  }
  return h;
}

/**
 * One parameter and its fp32 state. The state tensors are on the device, or (paged) on the optimizer's host memory;
 * the pager moves them, so they are not readonly.
 */
export interface Slot {
  readonly param: Tensor;
  /** fp32 master copy of an fp16/bf16 param, or null when the update reads the param itself. */
  master: Tensor | null;
  m: Tensor;
  v: Tensor;
}

/** What the update graph needs to know of a param: its shape, the dtype of the weight it reads, and its gradient's. */
export interface UpdateSpec {
  shape: readonly number[];
  /** fp32 when a master copy is updated; else the param's dtype. */
  weight: DType;
  grad: DType;
  /** The param's dtype when a master is updated (the param is its rounding), else null. */
  param: DType | null;
}

/**
 * The update of any number of params: inputs [decay, stepSize, vScale, (weight, grad, m, v) per param], outputs
 * (weight, m, v[, param]) per param. Each param's update is its own elementwise chain, so updating params in one
 * graph or in several rounds every value identically.
 */
export function adamwGraph(specs: readonly UpdateSpec[], betas: readonly [number, number], eps: number): Graph {
  const g = new Graph('adamw step');
  const [b1, b2] = betas;
  const k = (value: number) => g.op('Constant', [], { value, dtype: 'fp32' })[0];
  const op = (name: 'Add' | 'Sub' | 'Mul' | 'Div' | 'Sqrt', ...ins: Value[]) => g.op(name, ins)[0];
  const fp32 = (x: Value) => (x.dtype === 'fp32' ? x : g.op('Cast', [x], { to: 'fp32' })[0]);
  // 1 - lr wd; lr / (1 - b1^t); 1 / (1 - b2^t)
  const decay = g.input('decay', 'fp32', []);
  const stepSize = g.input('stepSize', 'fp32', []);
  const vScale = g.input('vScale', 'fp32', []);
  const outs: Value[] = [];
  specs.forEach((s, i) => {
    const w = g.input(`w${i}`, s.weight, s.shape);
    const grad = fp32(g.input(`g${i}`, s.grad, s.shape));
    const m = op('Add', op('Mul', g.input(`m${i}`, 'fp32', s.shape), k(b1)), op('Mul', grad, k(1 - b1)));
    const v = op('Add', op('Mul', g.input(`v${i}`, 'fp32', s.shape), k(b2)), op('Mul', op('Mul', grad, grad), k(1 - b2)));
    const denom = op('Add', op('Sqrt', op('Mul', v, vScale)), k(eps));
    const w32 = op('Sub', op('Mul', fp32(w), decay), op('Div', op('Mul', m, stepSize), denom));
    outs.push(w.dtype === 'fp32' ? w32 : g.op('Cast', [w32], { to: w.dtype })[0], m, v);
    if (s.param) outs.push(g.op('Cast', [w32], { to: s.param })[0]);
  });
  return g.output(...outs);
}

/** One slot's update outputs: new weight (master or param), m, v, and the param rounded from a master. */
export interface SlotUpdate {
  w: Tensor;
  m: Tensor;
  v: Tensor;
  param: Tensor | null;
}

/** A slot's device-side inputs for one update: the weight it reads and its moments. */
export interface SlotFeeds {
  w: Tensor;
  m: Tensor;
  v: Tensor;
}

export class AdamW {
  readonly lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  /** Steps taken so far (t of the bias correction is t + 1 on the next step). */
  t = 0;
  private readonly slots: Slot[];
  /** Moves states between host and device when paged; null for a plain AdamW. */
  private readonly pager: StatePager | null;

  constructor(
    readonly device: Device,
    readonly params: readonly Tensor[],
    opts: AdamWOptions = {},
  ) {
    ({ lr: this.lr, betas: this.betas, eps: this.eps, weightDecay: this.weightDecay } = adamwHyperparameters(opts, 'AdamW'));
    const reserve = opts.reserveBytes ?? 0;
    if (!(Number.isFinite(reserve) && reserve >= 0)) throw new ServelabError(`AdamW: reserveBytes must be a non-negative number of bytes, got ${reserve}`);
    if (opts.reserveBytes !== undefined && !opts.paged) throw new ServelabError('AdamW: reserveBytes applies to paged states only; pass paged: true');
    const useMaster = opts.masterWeights ?? true;
    params.forEach((p, i) => {
      if (p.device !== device) throw new ServelabError(`AdamW: param ${i} (${p.describe()}) is not on ${device.name}`);
      if (!isFloat(p.dtype)) throw new DTypeError('AdamW', [p.dtype], `param ${i} must be a float tensor`);
    });
    this.pager = opts.paged ? new StatePager(device, reserve) : null;
    this.slots = [];
    try {
      params.forEach((p, i) => {
        const label = p.label || `param ${i}`;
        const master = useMaster && p.dtype !== 'fp32';
        // Paged: a param's states go where they all fit, so a param is never split between host and device.
        const where = this.pager ? this.pager.placeFor(stateBytesOf(p.numel, master)) : device;
        const state = (what: string) => Tensor.empty(where, p.shape, 'fp32', 'optimizer', `${label} ${what}`);
        const slot: Slot = { param: p, master: null, m: state('m'), v: state('v') };
        this.slots.push(slot);
        if (master) slot.master = Tensor.from(where, p.toFloat32(), p.shape, 'fp32', 'optimizer', `${label} master`);
      });
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /**
   * Applies one update from `grads` (one per param, same shape; the param's dtype or fp32) and writes params,
   * masters and moments back in place (tensor.assign: same tensors, versions bumped). A step that fails (out of
   * memory, an abort) leaves every param and state as it was before it.
   */
  async step(grads: readonly Tensor[], lr = this.lr): Promise<void> {
    if (grads.length !== this.slots.length) throw new ServelabError(`AdamW.step: ${grads.length} gradients for ${this.slots.length} params`);
    grads.forEach((gr, i) => {
      const p = this.slots[i].param;
      if (gr.shape.join() !== p.shape.join()) throw new ShapeError('AdamW', [p.shape, gr.shape], `gradient ${i} must have its param's shape`);
      if (gr.dtype !== p.dtype && gr.dtype !== 'fp32') throw new DTypeError('AdamW', [p.dtype, gr.dtype], `gradient ${i} must be ${p.dtype} or fp32`);
    });
    const t = this.t + 1;
    const [b1, b2] = this.betas;
    const scalars = [1 - lr * this.weightDecay, lr / (1 - b1 ** t), 1 / (1 - b2 ** t)].map((x) => this.device.tensor([x], [], 'fp32'));
    const run = (group: readonly number[], feeds: readonly SlotFeeds[]) => this.update(group, feeds, grads, scalars);
    try {
      if (this.pager) {
        await this.pager.step(this.slots, run);
      } else {
        const all = this.slots.map((_, i) => i);
        const outs = await run(all, this.slots.map((s) => ({ w: s.master ?? s.param, m: s.m, v: s.v })));
        // Synchronous from here: every param and state takes its new value, or (before the run ended) none does.
        this.slots.forEach((s, i) => commit(s, outs[i]));
      }
    } finally {
      for (const x of scalars) x.dispose();
    }
    this.t = t;
  }

  /** Bytes of optimizer state on the device: masters and moments, as tagged 'optimizer' there. */
  bytes(): number {
    return this.slots.reduce((n, s) => n + [s.master, s.m, s.v].reduce((b, x) => b + (x && x.device === this.device ? x.bytes : 0), 0), 0);
  }

  /** Bytes of optimizer state paged out to host memory (0 unless paged). */
  get hostBytes(): number {
    return this.pager?.host.memory.live ?? 0;
  }

  /** Paging counts and times of the last step and of all steps; null for a plain AdamW. */
  paging(): { lastStep: PagingStats; total: PagingStats } | null {
    return this.pager ? { lastStep: { ...this.pager.lastStep }, total: { ...this.pager.total } } : null;
  }

  /**
   * The fp32 state of param i (master weights null for fp32 params), where it is now: device tensors, or host tensors
   * of a paged optimizer (read with toFloat32, restore with write: a checkpoint works the same for both).
   */
  state(i: number): { master: Tensor | null; m: Tensor; v: Tensor } {
    const { master, m, v } = this.slots[i];
    return { master, m, v };
  }

  dispose(): void {
    for (const s of this.slots) for (const x of [s.master, s.m, s.v]) x?.dispose();
  }

  /** Runs the update graph over the params `group` (indices), fed from `feeds`; returns each param's outputs. */
  private async update(group: readonly number[], feeds: readonly SlotFeeds[], grads: readonly Tensor[], scalars: readonly Tensor[]): Promise<SlotUpdate[]> {
    const specs: UpdateSpec[] = group.map((i) => {
      const s = this.slots[i];
      return { shape: s.param.shape, weight: s.master ? 'fp32' : s.param.dtype, grad: grads[i].dtype, param: s.master ? s.param.dtype : null };
    });
    const key = specs.map((s) => `${s.weight}/${s.grad}/${s.param ?? '-'}[${s.shape.join(',')}]`).join(' ');
    const graph = this.device.graph(this, key, () => adamwGraph(specs, this.betas, this.eps));
    const outs = await this.device.run(graph, [...scalars, ...group.flatMap((i, j) => [feeds[j].w, grads[i], feeds[j].m, feeds[j].v])]);
    let k = 0;
    return specs.map((s) => ({ w: outs[k++], m: outs[k++], v: outs[k++], param: s.param ? outs[k++] : null }));
  }
}
