/**
 * A Llama-style decoder served on the engine: every projection is a `Linear` in one weight format, and a step is one
 * session call. Prefill runs a batch of (right-padded) prompts through the model and fills the KV cache; a decode step
 * runs one token per sequence against the cache (GroupQueryAttention reads and extends it).
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import { Tensor } from '../tensor/tensor.ts';
import { ServelabError, ShapeError } from '../errors.ts';
import { rotaryTables } from '../graph/ops_model.ts';
import { Linear, type LinearFormat, type LinearOptions } from '../nn/linear.ts';
import { HF_NAMES, hfShapes, PROJECTIONS, type LlamaConfig, type ProjectionName } from './config.ts';
import { checkAdapters, type ProjectionAdapter } from './adapters.ts';

export type { ProjectionAdapter };
import { decoder, type Attend, type DecoderWeights } from './decoder.ts';
import type { KvCache, KvPlan, StepSeq } from '../kv/kv_cache.ts';
import { StaticKvCache } from '../kv/static_cache.ts';
import { PoolKvCache, type PoolKvCacheOptions } from '../kv/pool_cache.ts';
import type { Tokenizer } from '../io/tokenizer.ts';

/** Logits at every position ('all'), at each sequence's last new token ('last'); 'decode' is 'last' with one token each. */
type Kind = 'all' | 'last' | 'decode' | 'probe';

interface Layer {
  attnNorm: Tensor;
  mlpNorm: Tensor;
  proj: Record<ProjectionName, Linear>;
  /** Unmerged low-rank adapters by projection (LoRA): the projection is Linear(x) + scaling (x A) B. */
  adapters: Partial<Record<ProjectionName, { A: Tensor; B: Tensor; scaling: number }>>;
}

/** A weight by Hugging Face name, as fp32 values in Hugging Face's layout (linears [out, in]). */
export type WeightSource = (name: string, shape: readonly number[]) => Float32Array | Promise<Float32Array>;

export interface ModelOptions {
  /** The format of every Linear (the output head included); embedding and norms stay fp32. Default 'fp32'. */
  format?: LinearFormat;
  /** Passed to every Linear (threshold, variant, blockSize, accuracyLevel). */
  linear?: Omit<LinearOptions, 'format' | 'label' | 'bias'>;
  /**
   * Low-rank adapters kept apart from their projections, by Linear label (`layers.0.q`): the projection computes
   * Linear(x) + scaling (x A) B, A and B fp32 graph constants. Merged into the weights instead (LoraAdapters.merge in
   * engine/train/lora.ts) they give the same logits at the base model's cost.
   */
  adapters?: ReadonlyMap<string, ProjectionAdapter>;
}

/** Logits of a step, fp32 [batch, rows, vocab] on the host. */
export interface StepResult {
  logits: Tensor;
}

export interface ForwardResult extends StepResult {
  /** Prompt tokens each sequence found in the prefix cache (not computed again). */
  cached: number[];
  /** Tokens computed for each sequence; the batch is padded to their maximum. */
  counts: number[];
}

/** [rows, cols] row-major -> [cols, rows]. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

export class LlamaModel {
  private disposedFlag = false;
  /** Text <-> ids; set by loadModel when the folder has a tokenizer.json. */
  tokenizer: Tokenizer | null = null;

  private constructor(
    readonly device: Device,
    readonly cfg: LlamaConfig,
    readonly format: LinearFormat,
    private readonly embedding: Tensor,
    private readonly layers: Layer[],
    private readonly finalNorm: Tensor,
    private readonly head: Linear,
    private readonly cos: Tensor,
    private readonly sin: Tensor,
  ) {}

  /**
   * Builds the model on `dev` from weights by Hugging Face name. Each linear is read, transposed to [in, out],
   * converted to the format and its source freed before the next is read, so no fp32 copy of the checkpoint stays.
   * On any failure everything made so far is freed.
   */
  static async fromWeights(dev: Device, cfg: LlamaConfig, source: WeightSource, opts: ModelOptions = {}): Promise<LlamaModel> {
    const format = opts.format ?? 'fp32';
    checkAdapters(cfg, opts.adapters);
    const made: { dispose(): void }[] = [];
    // An error while one weight is read or converted names that weight (the same error object, its type kept).
    const naming = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (e) {
        if (e instanceof Error && !e.message.includes(name)) e.message = `weight ${name}: ${e.message}`;
        throw e;
      }
    };
    const keep = <T extends { dispose(): void }>(x: T): T => (made.push(x), x);
    const H = cfg.hiddenSize;
    const vector = (name: string, label: string) => naming(name, async () => keep(dev.tensor(await source(name, [H]), [H], 'fp32', { tag: 'weights', label })));
    const linear = (name: string, out: number, inF: number, label: string) =>
      naming(name, async () => {
        const w = dev.tensor(transpose2d(await source(name, [out, inF]), out, inF), [inF, out], 'fp32', { tag: 'weights', label: `${label}.source` });
        try {
          return keep(await Linear.fromWeights(dev, w, { ...opts.linear, format, label }));
        } finally {
          w.dispose();
        }
      });
    try {
      const V = cfg.vocabSize;
      const emb = await naming(HF_NAMES.embedding, async () => source(HF_NAMES.embedding, [V, H]));
      const embedding = keep(dev.tensor(emb, [V, H], 'fp32', { tag: 'weights', label: 'embedding' }));
      const shapes = hfShapes(cfg);
      const layers: Layer[] = [];
      for (let i = 0; i < cfg.numLayers; i++) {
        const n = HF_NAMES.layer(i);
        const l = `layers.${i}`;
        const dims = Object.fromEntries(PROJECTIONS.map((p) => [p, shapes.get(n[p])!])) as Record<ProjectionName, number[]>; // [out, in]
        const proj = {} as Record<ProjectionName, Linear>;
        for (const p of PROJECTIONS) proj[p] = await linear(n[p], dims[p][0], dims[p][1], `${l}.${p}`);
        const adapters: Layer['adapters'] = {};
        for (const p of PROJECTIONS) {
          const a = opts.adapters?.get(`${l}.${p}`);
          if (!a) continue;
          const t = (v: Float32Array, shape: number[], which: string) => keep(dev.tensor(v, shape, 'fp32', { tag: 'weights', label: `lora.${l}.${p}.${which}` }));
          adapters[p] = { A: t(a.A, [dims[p][1], a.r], 'A'), B: t(a.B, [a.r, dims[p][0]], 'B'), scaling: a.scaling };
        }
        layers.push({ attnNorm: await vector(n.attnNorm, `${l}.attnNorm`), mlpNorm: await vector(n.mlpNorm, `${l}.mlpNorm`), proj, adapters });
      }
      const finalNorm = await vector(HF_NAMES.finalNorm, 'finalNorm');
      const head = cfg.tieWordEmbeddings
        ? keep(await LlamaModel.tiedHead(dev, emb, cfg, format, opts))
        : await linear(HF_NAMES.lmHead, V, H, 'head');
      const { cos, sin } = rotaryTables(cfg.maxPositions, cfg.headDim, cfg.ropeTheta);
      const half = [cfg.maxPositions, cfg.headDim / 2];
      const cosT = keep(dev.tensor(cos, half, 'fp32', { tag: 'weights', label: 'rope.cos' }));
      const sinT = keep(dev.tensor(sin, half, 'fp32', { tag: 'weights', label: 'rope.sin' }));
      return new LlamaModel(dev, cfg, format, embedding, layers, finalNorm, head, cosT, sinT);
    } catch (e) {
      for (const x of made) x.dispose();
      throw e;
    }
  }

  /** A tied head multiplies by the embedding's transpose: a Linear of its own, so it can take the model's format. */
  private static async tiedHead(dev: Device, emb: Float32Array, cfg: LlamaConfig, format: LinearFormat, opts: ModelOptions): Promise<Linear> {
    const w = dev.tensor(transpose2d(emb, cfg.vocabSize, cfg.hiddenSize), [cfg.hiddenSize, cfg.vocabSize], 'fp32', { tag: 'weights', label: 'head.source' });
    try {
      return await Linear.fromWeights(dev, w, { ...opts.linear, format, label: 'head' });
    } finally {
      w.dispose();
    }
  }

  /**
   * Reserves a KV cache. `createCache(batch, maxSeq)`: a static cache of `batch` rows of up to `maxSeq` tokens (default
   * the model's context), stepped all together (prefill / decode). `createCache({ layout, numSlots | budgetBytes, ... })`:
   * a pooled cache (contiguous regions, paged blocks or token slots) that any set of sequences steps through `forward`.
   */
  createCache(batch: number, maxSeq?: number): Promise<StaticKvCache>;
  createCache(opts: PoolKvCacheOptions): Promise<PoolKvCache>;
  createCache(a: number | PoolKvCacheOptions, maxSeq = this.cfg.maxPositions): Promise<StaticKvCache | PoolKvCache> {
    this.assertLive();
    if (typeof a === 'object') return PoolKvCache.create(this.device, this.cfg, a);
    if (maxSeq > this.cfg.maxPositions) throw new ServelabError(`createCache: maxSeq ${maxSeq} is past the model's context of ${this.cfg.maxPositions} positions`);
    return StaticKvCache.create(this.device, this.cfg, a, maxSeq);
  }

  /**
   * Runs prompts (token ids; any lengths, right-padded into one batch) through the model from an empty cache: sequence
   * b of the cache is prompt b. Returns logits [B, S, vocab] at every position (`all`), or [B, 1, vocab] at each
   * prompt's last token (default).
   */
  async prefill(prompts: readonly (readonly number[])[], cache: KvCache, opts: { all?: boolean } = {}): Promise<StepResult> {
    this.assertLive();
    if (cache instanceof StaticKvCache && prompts.length !== cache.batch) {
      throw new ShapeError('prefill', [[prompts.length], [cache.batch]], `${prompts.length} prompts for a cache of ${cache.batch} sequences`);
    }
    if (prompts.some((p) => p.length < 1)) throw new ServelabError('prefill: every prompt needs at least one token');
    const S = Math.max(...prompts.map((p) => p.length));
    if (cache instanceof StaticKvCache && S > cache.maxSeq) {
      throw new ServelabError(`prefill: a prompt of ${S} tokens is longer than the cache (${cache.maxSeq}) or the model's context (${this.cfg.maxPositions})`);
    }
    cache.reset();
    const { logits } = await this.forward(cache, prompts.map((tokens, seq) => ({ seq, tokens })), { logits: opts.all ? 'all' : 'last' });
    return { logits };
  }

  /** One token per sequence (sequence b of the cache takes tokens[b]), appended to the cache: logits [B, 1, vocab]. */
  async decode(tokens: readonly number[], cache: KvCache): Promise<StepResult> {
    this.assertLive();
    if (cache instanceof StaticKvCache) {
      if (tokens.length !== cache.batch) throw new ShapeError('decode', [[tokens.length], [cache.batch]], `${tokens.length} tokens for a cache of ${cache.batch} sequences`);
      if (!cache.canAppend(1)) throw new ServelabError(`decode: a sequence has filled its cache of ${cache.maxSeq} tokens`);
    }
    const { logits } = await this.forward(cache, tokens.map((t, seq) => ({ seq, tokens: [t] })));
    return { logits };
  }

  /**
   * One step of any set of sequences through the cache: each sequence's tokens are computed and cached (a new
   * sequence's are its prompt, less what the prefix cache holds; a known one's are appended; `parents` makes them a
   * token tree). Logits [B, 1, vocab] at each sequence's last new token (`last`, default) or [B, S, vocab] at every new
   * token, padded to the longest (`all`). A step that cannot get memory throws KvCacheError('exhausted') and one that
   * fails for any reason leaves the cache as it was.
   */
  async forward(cache: KvCache, batch: readonly StepSeq[], opts: { logits?: 'last' | 'all' } = {}): Promise<ForwardResult> {
    this.assertLive();
    for (const s of batch) for (const t of s.tokens) this.checkToken(t);
    const trees = batch.some((s) => s.parents);
    const plan = await cache.plan(batch);
    try {
      const B = batch.length;
      const S = Math.max(...plan.counts);
      const all = opts.logits === 'all' || trees;
      const kind: Kind = all ? 'all' : S === 1 ? 'decode' : 'last';
      const tokens = new Int32Array(B * S);
      batch.forEach((s, b) => s.tokens.slice(plan.cached[b]).forEach((t, i) => (tokens[b * S + i] = t)));
      const last = kind === 'last' ? Int32Array.from(plan.counts, (n, b) => b * S + n - 1) : null;
      const outs = await this.runStep(kind, tokens, plan.positions, [B, S], cache, plan, last, trees);
      return { logits: outs[0], cached: plan.cached, counts: plan.counts };
    } catch (e) {
      plan.abort();
      throw e;
    }
  }

  private checkToken(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.cfg.vocabSize) throw new ServelabError(`token ${t} is not in the vocabulary [0, ${this.cfg.vocabSize})`);
    return t;
  }

  /**
   * What enters each projection when `prompts` (all of one length) are prefilled: one entry per distinct input (q, k and v share one),
   * with the labels of the Linears it feeds and its values [B, S, in]. The activations that LLM.int8's outlier
   * threshold is about, from a real forward pass.
   */
  async linearInputs(prompts: readonly (readonly number[])[]): Promise<{ linears: string[]; x: Tensor }[]> {
    this.assertLive();
    const lens = new Set(prompts.map((p) => p.length));
    if (lens.size !== 1 || prompts[0].length < 1) throw new ServelabError(`linearInputs: the prompts must have one length, at least 1 (got ${[...lens].join(', ')})`);
    const cache = await this.createCache(prompts.length, prompts[0].length);
    try {
      const B = prompts.length;
      const S = cache.maxSeq;
      const tokens = new Int32Array(B * S);
      prompts.forEach((p, b) => p.forEach((t, i) => (tokens[b * S + i] = this.checkToken(t))));
      const plan = await cache.plan(prompts.map((p, seq) => ({ seq, tokens: p })));
      const probes = this.device.graph(this, this.graphKey('probe', cache, false), () => this.graph('probe', cache, false)).outputs.length;
      let outs: Tensor[];
      try {
        outs = await this.runStep('probe', tokens, plan.positions, [B, S], cache, plan, null, false);
      } catch (e) {
        plan.abort();
        throw e;
      }
      outs[0].dispose();
      const sites = this.probeSites;
      if (sites.length !== probes - 1 - 2 * this.cfg.numLayers) throw new ServelabError('linearInputs: probe outputs do not match the sites');
      return sites.map((linears, i) => ({ linears, x: outs[1 + i] }));
    } finally {
      cache.dispose();
    }
  }

  /** Labels of the Linears each probe output feeds, in output order (filled when the probe graph is built). */
  private probeSites: string[][] = [];

  private graphKey(kind: Kind, cache: KvCache, tree: boolean): string {
    return `${kind}|${cache.graphKey}${tree ? '|tree' : ''}`;
  }

  /** One session call: [logits, ...probes]; the cache takes its outputs back (plan.commit). */
  private async runStep(kind: Kind, tokens: Int32Array, positions: Int32Array, [B, S]: number[], cache: KvCache, plan: KvPlan, last: Int32Array | null, tree: boolean): Promise<Tensor[]> {
    const dev = this.device;
    const g = dev.graph(this, this.graphKey(kind, cache, tree), () => this.graph(kind, cache, tree));
    const feeds = [dev.tensor(tokens, [B, S], 'int32', { label: 'tokens' }), dev.tensor(positions, [B, S], 'int32', { label: 'positions' })];
    if (last) feeds.push(dev.tensor(last, [B], 'int32', { label: 'last' }));
    try {
      const numProbes = g.outputs.length - 1 - 2 * this.cfg.numLayers;
      const keep = g.outputs.map((_, i): 'host' | 'device' => (i <= numProbes ? 'host' : 'device'));
      const donate = plan.donate.map((i) => feeds.length + i);
      const outs = await dev.run(g, [...feeds, ...plan.feeds], { keep, label: 'logits', donate });
      try {
        await plan.commit(outs.slice(1 + numProbes));
      } catch (e) {
        for (const t of outs.slice(0, 1 + numProbes)) t.dispose();
        throw e;
      }
      return outs.slice(0, 1 + numProbes);
    } finally {
      for (const t of feeds) t.dispose();
    }
  }

  /** The step graph: tokens, positions[, last], then the cache's inputs -> logits[, probes], then the cache's outputs. */
  private graph(kind: Kind, cache: KvCache, tree: boolean): Graph {
    const cfg = this.cfg;
    const g = new Graph(`${cfg.numLayers}-layer Llama ${kind === 'decode' ? 'decode step' : 'prefill'} (${this.format}, ${cache.layout === 'static' ? 'static' : 'pooled'} cache)`);
    const seq = kind === 'decode' ? 1 : 'seq';
    const tokens = g.input('tokens', 'int32', ['batch', seq]);
    const positions = g.input('positions', 'int32', ['batch', seq]);
    const last = kind === 'last' ? g.input('last', 'int32', ['batch']) : null;
    const kv = cache.declare(g, seq, tree);
    const probed = new Map<Value, string[]>();
    const probe = (x: Value, label: string) => probed.set(x, [...(probed.get(x) ?? []), label]);
    const attend: Attend = (i, q, k, v) => kv.attend(i, q, k, v);
    const w: DecoderWeights = {
      embedding: g.constant('embedding', this.embedding),
      layers: this.layers.map((l, i) => {
        const p = (name: ProjectionName) => (x: Value) => {
          if (kind === 'probe') probe(x, l.proj[name].label);
          const y = l.proj[name].addTo(g, x);
          const a = l.adapters[name];
          if (!a) return y;
          const [A, B] = [g.constant(`lora.${i}.${name}.A`, a.A), g.constant(`lora.${i}.${name}.B`, a.B)];
          const low = g.op('MatMul', [g.op('MatMul', [x, A])[0], B])[0];
          return g.op('Add', [y, g.op('Mul', [low, g.op('Constant', [], { value: a.scaling, dtype: 'fp32' })[0]])[0]])[0];
        };
        return { attnNorm: g.constant(`layers.${i}.attnNorm`, l.attnNorm), mlpNorm: g.constant(`layers.${i}.mlpNorm`, l.mlpNorm), q: p('q'), k: p('k'), v: p('v'), o: p('o'), gate: p('gate'), up: p('up'), down: p('down') };
      }),
      finalNorm: g.constant('finalNorm', this.finalNorm),
      // Prefill for generation needs each prompt's last row only: pick it before the head, the model's widest product.
      head: (x) => {
        if (kind === 'probe') probe(x, 'head');
        if (!last) return this.head.addTo(g, x);
        const rows = g.op('Reshape', [x], { shape: [-1, cfg.hiddenSize] })[0];
        const picked = g.op('Gather', [rows, last])[0]; //                                     [B, H]
        return g.op('Reshape', [this.head.addTo(g, picked)], { shape: ['batch', 1, cfg.vocabSize] })[0];
      },
      cos: g.constant('rope.cos', this.cos),
      sin: g.constant('rope.sin', this.sin),
    };
    g.output(decoder(g, cfg, w, tokens, positions, attend));
    if (kind === 'probe') this.probeSites = [...probed.values()];
    for (const v of probed.keys()) g.output(v);
    for (const v of kv.outputs) g.output(v);
    return g;
  }

  /** Weight bytes held on the device, by part. */
  bytes(): { linears: number; embedding: number; norms: number; adapters: number; total: number } {
    const linears = [...this.layers.flatMap((l) => Object.values(l.proj)), this.head].reduce((s, l) => s + l.bytes().total, 0);
    const norms = this.layers.reduce((s, l) => s + l.attnNorm.bytes + l.mlpNorm.bytes, this.finalNorm.bytes);
    const adapters = this.layers.reduce((s, l) => Object.values(l.adapters).reduce((n, a) => n + a.A.bytes + a.B.bytes, s), 0);
    const embedding = this.embedding.bytes;
    return { linears, embedding, norms, adapters, total: linears + embedding + norms + adapters + this.cos.bytes + this.sin.bytes };
  }

  /** Every Linear, by label (layers.0.q, ..., head). */
  linears(): Map<string, Linear> {
    const m = new Map<string, Linear>();
    for (const l of this.layers) for (const p of PROJECTIONS) m.set(l.proj[p].label, l.proj[p]);
    return m.set('head', this.head);
  }

  dispose(): void {
    if (this.disposedFlag) return;
    for (const l of this.layers) {
      l.attnNorm.dispose();
      l.mlpNorm.dispose();
      for (const p of PROJECTIONS) l.proj[p].dispose();
      for (const a of Object.values(l.adapters)) for (const t of [a.A, a.B]) t.dispose();
    }
    for (const t of [this.embedding, this.finalNorm, this.cos, this.sin]) t.dispose();
    this.head.dispose();
    this.disposedFlag = true;
  }

  get disposed(): boolean {
    return this.disposedFlag;
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new ServelabError('LlamaModel: the model was disposed');
  }

  toString(): string {
    const c = this.cfg;
    return `LlamaModel(${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads / ${c.numKvHeads} kv, vocab ${c.vocabSize}, ${this.format})`;
  }
}
