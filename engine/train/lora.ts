/**
 * LoRA, low-rank adaptation (Hu et al., ICLR 2022): a frozen linear W [in, out] gains a trainable path
 * y = x W + (alpha / r) (x A) B with A [in, r] and B [r, out], r << min(in, out). A is drawn as PEFT draws it and B is
 * zero, so the adapted model starts exactly at the base; merging W' = W + (alpha / r) A B serves with no added cost.
 * The engine's layout is x @ W; PEFT stores lora_A.weight [r, in] and lora_B.weight [out, r] (engine/train/lora_peft.ts).
 */
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import { HF_NAMES, type LlamaConfig } from '../model/config.ts';
import type { ProjectionAdapter } from '../model/adapters.ts';
import { PROJECTIONS, type AdapterSpec, type ProjectionName } from './lm_params.ts';
import { Rng } from './rng.ts';

/** A LoRA configuration or adapter that cannot be used as asked: names the value and what was expected. */
export class LoraError extends ServelabError {
  override name = 'LoraError';
}

export type LoraTarget = ProjectionName;
export const LORA_TARGETS: readonly LoraTarget[] = PROJECTIONS;

export interface LoraConfig {
  /** The rank: 1 <= r <= min(in, out) of every targeted linear. */
  r: number;
  /** The scale numerator: the update is (alpha / r) (x A) B, so changing r keeps the update's size (PEFT's lora_alpha). */
  alpha: number;
  /** Projections adapted in every layer; default ['q', 'v'] (the paper's choice); 'all' for q k v o gate up down. */
  targets?: readonly LoraTarget[] | 'all';
  /** How A is drawn: 'kaiming' (default; PEFT's init_lora_weights=True) or 'gaussian' (N(0, (1/r)^2), PEFT's). */
  init?: 'kaiming' | 'gaussian';
  /** Seed of A's draws; default 0. */
  seed?: number;
  /** Dropout on the adapter's input. Only 0 is implemented; a loaded adapter keeps its file's value as a record. */
  dropout?: number;
}

/** A LoraConfig with every default filled in and checked. */
export interface ResolvedLora {
  r: number;
  alpha: number;
  targets: readonly LoraTarget[];
  init: 'kaiming' | 'gaussian';
  seed: number;
  dropout: number;
}

/** The adapted linears of `cfg`, layer by layer, in the order q k v o gate up down. */
export function loraSites(cfg: LlamaConfig, targets: readonly LoraTarget[], r = 1, scaling = 1): AdapterSpec[] {
  const H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const dims: Record<LoraTarget, [number, number]> = { q: [H, q], k: [H, kv], v: [H, kv], o: [q, H], gate: [H, I], up: [H, I], down: [I, H] };
  const sites: AdapterSpec[] = [];
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const proj of LORA_TARGETS) {
      if (targets.includes(proj)) sites.push({ layer, proj, label: `layers.${layer}.${proj}`, inFeatures: dims[proj][0], outFeatures: dims[proj][1], r, scaling });
    }
  }
  return sites;
}

/** Checks `lora` against the model `cfg` and fills in the defaults; throws LoraError naming the bad value. */
export function resolveLora(cfg: LlamaConfig, lora: LoraConfig, opts: { anyDropout?: boolean } = {}): ResolvedLora {
  const targets = lora.targets === undefined ? (['q', 'v'] as const) : lora.targets === 'all' ? LORA_TARGETS : lora.targets;
  if (!Array.isArray(targets) || targets.length === 0) throw new LoraError(`LoRA: targets must be 'all' or a non-empty list of ${LORA_TARGETS.join(', ')}; got ${JSON.stringify(lora.targets)}`);
  for (const t of targets) if (!LORA_TARGETS.includes(t)) throw new LoraError(`LoRA: unknown target ${JSON.stringify(t)}; expected one of ${LORA_TARGETS.join(', ')} or 'all'`);
  if (new Set(targets).size !== targets.length) throw new LoraError(`LoRA: targets ${JSON.stringify(targets)} name a projection twice`);
  const { r, alpha } = lora;
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new LoraError(`LoRA: r must be an integer >= 1, got ${JSON.stringify(r)}`);
  const ordered = LORA_TARGETS.filter((t) => targets.includes(t));
  for (const s of loraSites({ ...cfg, numLayers: 1 }, ordered)) {
    const most = Math.min(s.inFeatures, s.outFeatures);
    if (r > most) throw new LoraError(`LoRA: r = ${r} is larger than min(in, out) = ${most} of the ${s.proj} projection [${s.inFeatures}, ${s.outFeatures}]; a rank-${r} update of it is not low rank`);
  }
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) throw new LoraError(`LoRA: alpha must be a finite number > 0, got ${JSON.stringify(alpha)}`);
  const init = lora.init ?? 'kaiming';
  if (init !== 'kaiming' && init !== 'gaussian') throw new LoraError(`LoRA: init must be 'kaiming' or 'gaussian', got ${JSON.stringify(init)}`);
  const seed = lora.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new LoraError(`LoRA: seed must be an integer, got ${JSON.stringify(seed)}`);
  const dropout = lora.dropout ?? 0;
  if (opts.anyDropout ? !(dropout >= 0 && dropout < 1) : dropout !== 0) {
    throw new LoraError(`LoRA: dropout ${JSON.stringify(dropout)} is not supported; only 0 is implemented (the adapter's input is used as it is)`);
  }
  return { r, alpha, targets: ordered, init, seed, dropout };
}

/** A and B of one site as host values, engine layout: A [in, r], B [r, out]. */
export interface AdapterValues {
  A: Float32Array;
  B: Float32Array;
}

/** One LoRA adapter per targeted linear of a model, as fp32 device tensors tagged 'weights' (`lora.layers.0.q.A`). */
export class LoraAdapters {
  private disposedFlag = false;

  private constructor(
    readonly device: Device,
    /** The model shape the adapters were made for. */
    readonly model: LlamaConfig,
    readonly config: ResolvedLora,
    readonly sites: readonly AdapterSpec[],
    readonly A: readonly Tensor[],
    readonly B: readonly Tensor[],
  ) {}

  /** alpha / r. */
  get scaling(): number {
    return this.config.alpha / this.config.r;
  }

  /**
   * Fresh adapters: A drawn as PEFT does, B = 0. 'kaiming' is torch's kaiming_uniform_(a = sqrt(5)) on lora_A [r, in]:
   * gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound gain sqrt(3 / fan_in) = 1 / sqrt(in), the nn.Linear default the LoRA
   * reference code keeps. 'gaussian' is normal(0, std 1/r). Draws go site by site, A row-major [in, r].
   */
  static create(dev: Device, cfg: LlamaConfig, lora: LoraConfig): LoraAdapters {
    const c = resolveLora(cfg, lora);
    const rng = new Rng(c.seed);
    const values = loraSites(cfg, c.targets, c.r).map((s): AdapterValues => {
      const bound = 1 / Math.sqrt(s.inFeatures);
      const draw = c.init === 'kaiming' ? () => bound * (2 * rng.uniform() - 1) : () => rng.normal(0, 1 / c.r);
      return { A: Float32Array.from({ length: s.inFeatures * c.r }, draw), B: new Float32Array(c.r * s.outFeatures) };
    });
    return LoraAdapters.build(dev, cfg, c, values);
  }

  /** Adapters from given values, one per site of loraSites(cfg, targets) in order (a loaded adapter). */
  static fromValues(dev: Device, cfg: LlamaConfig, lora: LoraConfig, values: readonly AdapterValues[]): LoraAdapters {
    const c = resolveLora(cfg, lora, { anyDropout: true });
    const sites = loraSites(cfg, c.targets, c.r);
    if (values.length !== sites.length) throw new LoraError(`LoRA: ${values.length} adapters given for ${sites.length} targeted linears`);
    sites.forEach((s, i) => {
      const v = values[i];
      if (v.A.length !== s.inFeatures * c.r || v.B.length !== c.r * s.outFeatures) {
        throw new LoraError(`LoRA: ${s.label} needs A [${s.inFeatures}, ${c.r}] and B [${c.r}, ${s.outFeatures}]; got ${v.A.length} and ${v.B.length} values`);
      }
    });
    return LoraAdapters.build(dev, cfg, c, values);
  }

  private static build(dev: Device, cfg: LlamaConfig, c: ResolvedLora, values: readonly AdapterValues[]): LoraAdapters {
    const sites = loraSites(cfg, c.targets, c.r, c.alpha / c.r);
    const A: Tensor[] = [];
    const B: Tensor[] = [];
    try {
      sites.forEach((s, i) => {
        A.push(dev.tensor(values[i].A, [s.inFeatures, c.r], 'fp32', { tag: 'weights', label: `lora.${s.label}.A` }));
        B.push(dev.tensor(values[i].B, [c.r, s.outFeatures], 'fp32', { tag: 'weights', label: `lora.${s.label}.B` }));
      });
    } catch (e) {
      for (const t of [...A, ...B]) t.dispose();
      throw e;
    }
    return new LoraAdapters(dev, { ...cfg }, c, sites, A, B);
  }

  /** The trainable tensors in the training graph's order: A0, B0, A1, B1, ... */
  params(): Tensor[] {
    this.assertLive();
    return this.A.flatMap((a, i) => [a, this.B[i]]);
  }

  /** sum over adapted linears of r (in + out). */
  trainableParams(): number {
    return this.sites.reduce((n, s) => n + s.r * (s.inFeatures + s.outFeatures), 0);
  }

  /** Each site's values (copies, engine layout). */
  values(): AdapterValues[] {
    this.assertLive();
    return this.sites.map((_, i) => ({ A: this.A[i].toFloat32(), B: this.B[i].toFloat32() }));
  }

  /** Throws LoraError unless every adapted linear of these adapters exists in `cfg` with the same [in, out]. */
  checkModel(cfg: LlamaConfig): void {
    const there = new Map(loraSites(cfg, LORA_TARGETS).map((s) => [s.label, s]));
    for (const s of this.sites) {
      const m = there.get(s.label);
      if (!m) throw new LoraError(`LoRA: the adapter on ${s.label} has no linear in a model of ${cfg.numLayers} layers`);
      if (m.inFeatures !== s.inFeatures || m.outFeatures !== s.outFeatures) {
        throw new LoraError(`LoRA: the adapter on ${s.label} is for a [${s.inFeatures}, ${s.outFeatures}] linear; the model's is [${m.inFeatures}, ${m.outFeatures}]`);
      }
    }
  }

  /** The adapters as LlamaModel's `adapters` option: by Linear label, the projection becomes Linear(x) + s (x A) B. */
  forModel(): Map<string, ProjectionAdapter> {
    const v = this.values();
    return new Map(this.sites.map((s, i) => [s.label, { A: v[i].A, B: v[i].B, r: s.r, scaling: s.scaling }]));
  }

  /** Hugging Face weights with W' = W + (alpha / r) B A folded into every adapted linear ([out, in]); others shared. */
  merge(weights: ReadonlyMap<string, Float32Array>): Map<string, Float32Array> {
    return this.fold(weights, 1);
  }

  /** The inverse of merge: W = W' - (alpha / r) B A, equal to the base within fp32 rounding (2^-23 |W'| per element). */
  unmerge(weights: ReadonlyMap<string, Float32Array>): Map<string, Float32Array> {
    return this.fold(weights, -1);
  }

  private fold(weights: ReadonlyMap<string, Float32Array>, sign: 1 | -1): Map<string, Float32Array> {
    this.assertLive();
    const vals = this.values();
    const names = this.sites.map((s) => HF_NAMES.layer(s.layer)[s.proj]);
    this.sites.forEach((s, i) => {
      const w = weights.get(names[i]);
      if (!w) throw new LoraError(`LoRA: the weights have no ${names[i]} for the adapter on ${s.label}`);
      if (w.length !== s.inFeatures * s.outFeatures) throw new LoraError(`LoRA: ${names[i]} has ${w.length} values; the adapter on ${s.label} needs [${s.outFeatures}, ${s.inFeatures}]`);
    });
    const out = new Map(weights);
    this.sites.forEach((s, i) => {
      const { A, B } = vals[i];
      const K = s.inFeatures;
      const N = s.outFeatures;
      const r = s.r;
      const w = weights.get(names[i])!;
      const merged = new Float32Array(w.length);
      // Hugging Face's [out, in]: W[o, k] +- s sum_j A[k, j] B[j, o], summed in float64 and rounded once.
      for (let o = 0; o < N; o++) {
        for (let k = 0; k < K; k++) {
          let d = 0;
          for (let j = 0; j < r; j++) d += A[k * r + j] * B[j * N + o];
          merged[o * K + k] = w[o * K + k] + sign * s.scaling * d;
        }
      }
      out.set(names[i], merged);
    });
    return out;
  }

  dispose(): void {
    if (this.disposedFlag) return;
    for (const t of [...this.A, ...this.B]) t.dispose();
    this.disposedFlag = true;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new LoraError('LoRA: the adapters were disposed');
  }

  toString(): string {
    const c = this.config;
    return `LoraAdapters(r ${c.r}, alpha ${c.alpha}, ${c.targets.join(' ')} of ${this.model.numLayers} layers: ${this.trainableParams()} params)`;
  }
}
