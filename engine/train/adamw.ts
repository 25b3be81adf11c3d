/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019): Adam's moment estimates with
 * bias correction, and weight decay applied to the weights directly instead of through the gradient. Per step t:
 *   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;
 *   p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * (PyTorch's torch.optim.AdamW). The moments are fp32 device tensors tagged 'optimizer'. fp16 and bf16 parameters
 * are updated through fp32 master copies, also tagged 'optimizer' (mixed-precision training, Micikevicius et al.
 * 2018), so a parameter costs 2 (weight) + 2 (gradient) + 12 (master, m, v) bytes, as the tracker then shows.
 * Every parameter is updated by ONE graph run per step; the step's numbers are inputs, so it compiles once.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { isFloat, type DType } from '../dtype/dtype.ts';
import { DTypeError, ServelabError, ShapeError } from '../errors.ts';

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
}

interface Slot {
  param: Tensor;
  /** fp32 master copy of an fp16/bf16 param, or null when the update reads the param itself. */
  master: Tensor | null;
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
  private graph: Graph | null = null;

  constructor(
    readonly device: Device,
    readonly params: readonly Tensor[],
    opts: AdamWOptions = {},
  ) {
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    const [b1, b2] = this.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new ServelabError(`AdamW: betas must lie in [0, 1), got [${b1}, ${b2}]`);
    if (!(this.lr >= 0 && this.eps >= 0 && this.weightDecay >= 0)) {
      throw new ServelabError(`AdamW: lr, eps and weightDecay must be non-negative, got ${this.lr}, ${this.eps}, ${this.weightDecay}`);
    }
    const useMaster = opts.masterWeights ?? true;
    this.slots = params.map((p, i) => {
      if (p.device !== device) throw new ServelabError(`AdamW: param ${i} (${p.describe()}) is not on ${device.name}`);
      if (!isFloat(p.dtype)) throw new DTypeError('AdamW', [p.dtype], `param ${i} must be a float tensor`);
      const label = p.label || `param ${i}`;
      const state = (what: string) => device.empty(p.shape, 'fp32', { tag: 'optimizer', label: `${label} ${what}` });
      const master = useMaster && p.dtype !== 'fp32' ? device.tensor(p.toFloat32(), p.shape, 'fp32', { tag: 'optimizer', label: `${label} master` }) : null;
      return { param: p, master, m: state('m'), v: state('v') };
    });
  }

  /**
   * Applies one update from `grads` (one per param, same shape; the param's dtype or fp32) and writes params,
   * masters and moments back in place (tensor.assign: same tensors, versions bumped).
   */
  async step(grads: readonly Tensor[], lr = this.lr): Promise<void> {
    if (grads.length !== this.slots.length) throw new ServelabError(`AdamW.step: ${grads.length} gradients for ${this.slots.length} params`);
    grads.forEach((gr, i) => {
      const p = this.slots[i].param;
      if (gr.shape.join() !== p.shape.join()) throw new ShapeError('AdamW', [p.shape, gr.shape], `gradient ${i} must have its param's shape`);
      if (gr.dtype !== p.dtype && gr.dtype !== 'fp32') throw new DTypeError('AdamW', [p.dtype, gr.dtype], `gradient ${i} must be ${p.dtype} or fp32`);
    });
    this.graph ??= this.build(grads.map((gr) => gr.dtype));
    const t = this.t + 1;
    const [b1, b2] = this.betas;
    const scalars = [1 - lr * this.weightDecay, lr / (1 - b1 ** t), 1 / (1 - b2 ** t)].map((x) => this.device.tensor([x], [], 'fp32'));
    const feeds = this.slots.flatMap((s, i) => [s.master ?? s.param, grads[i], s.m, s.v]);
    let outs: Tensor[];
    try {
      outs = await this.device.run(this.graph, [...scalars, ...feeds]);
    } finally {
      for (const x of scalars) x.dispose();
    }
    let k = 0;
    for (const s of this.slots) {
      (s.master ?? s.param).assign(outs[k++]);
      s.m.assign(outs[k++]);
      s.v.assign(outs[k++]);
      if (s.master) s.param.assign(outs[k++]);
    }
    this.t = t;
  }

  /** Bytes the optimizer holds: masters and moments, as tagged 'optimizer'. */
  bytes(): number {
    return this.slots.reduce((n, s) => n + (s.master?.bytes ?? 0) + s.m.bytes + s.v.bytes, 0);
  }

  /** The fp32 state of param i (master weights null for fp32 params), for inspection. */
  state(i: number): { master: Tensor | null; m: Tensor; v: Tensor } {
    const { master, m, v } = this.slots[i];
    return { master, m, v };
  }

  dispose(): void {
    for (const s of this.slots) for (const x of [s.master, s.m, s.v]) x?.dispose();
  }

  /** One graph for every param: inputs [decay, stepSize, vScale, (weight, grad, m, v) per param]. */
  private build(gradTypes: readonly DType[]): Graph {
    const g = new Graph('adamw step');
    const [b1, b2] = this.betas;
    const k = (value: number) => g.op('Constant', [], { value, dtype: 'fp32' })[0];
    const op = (name: 'Add' | 'Sub' | 'Mul' | 'Div' | 'Sqrt', ...ins: Value[]) => g.op(name, ins)[0];
    const fp32 = (x: Value) => (x.dtype === 'fp32' ? x : g.op('Cast', [x], { to: 'fp32' })[0]);
    // 1 - lr wd; lr / (1 - b1^t); 1 / (1 - b2^t)
    const decay = g.input('decay', 'fp32', []);
    const stepSize = g.input('stepSize', 'fp32', []);
    const vScale = g.input('vScale', 'fp32', []);
    const outs: Value[] = [];
    this.slots.forEach((s, i) => {
      const shape = s.param.shape;
      const w = g.input(`w${i}`, s.master ? 'fp32' : s.param.dtype, shape);
      const grad = fp32(g.input(`g${i}`, gradTypes[i], shape));
      const m = op('Add', op('Mul', g.input(`m${i}`, 'fp32', shape), k(b1)), op('Mul', grad, k(1 - b1)));
      const v = op('Add', op('Mul', g.input(`v${i}`, 'fp32', shape), k(b2)), op('Mul', op('Mul', grad, grad), k(1 - b2)));
      const denom = op('Add', op('Sqrt', op('Mul', v, vScale)), k(this.eps));
      const w32 = op('Sub', op('Mul', fp32(w), decay), op('Div', op('Mul', m, stepSize), denom));
      outs.push(w.dtype === 'fp32' ? w32 : g.op('Cast', [w32], { to: w.dtype })[0], m, v);
      if (s.master) outs.push(g.op('Cast', [w32], { to: s.param.dtype })[0]);
    });
    return g.output(...outs);
  }
}
