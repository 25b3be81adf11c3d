/**
 * The Llama training model cut into segments that run one at a time: 'embed' (tokens -> h), 'layer i' (h, positions
 * -> h) and 'head' (h, labels, scale -> loss). Each has a forward graph and a vector-Jacobian-product graph: the VJP of
 * a segment with output y takes dy and differentiates ReduceSum(y * dy), whose gradient w.r.t. the segment's input
 * and params is exactly dy's pull-back (reverse mode through a chain of functions, Griewank & Walther 2008). The VJP
 * recomputes its segment's forward, so only the boundary activations (each segment's input) live between the forward
 * and the backward pass: activation checkpointing at segment boundaries (Chen et al. 2016, "Training Deep Nets with
 * Sublinear Memory Cost"). Parallel schemes are built on segments: ZeRO-3 gathers a segment's params just before it
 * runs (Rajbhandari et al. 2020), a pipeline gives each stage consecutive segments (GPipe, Huang et al. 2019), CPU
 * offloading streams them in (ZeRO-Offload, Ren et al. 2021).
 * The head's loss is scale * (sum of token cross entropies), scale an input (1 / tokens of the whole global batch),
 * so the gradients of micro-batches and workers simply add up to the whole batch's mean gradient.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { DTypeError, ServelabError, ShapeError } from '../errors.ts';
import { backward } from '../autograd/backward.ts';
import { rotaryTables } from '../graph/ops_model.ts';
import type { LlamaConfig } from '../model/config.ts';
import { causalAttention, decoderBlock, decoderHead, embedTokens, type BlockWeights } from '../model/decoder.ts';
import { castParam, fp32Param, paramSpecs, type ParamSpec } from './lm_params.ts';

/** The dtype params are fed in: fp32, or 16-bit cast to fp32 inside the graph (their gradients come back 16-bit). */
export type ParamPrecision = 'fp32' | 'bf16' | 'fp16';
export type SegmentKind = 'embed' | 'layer' | 'head';
export type SegmentPhase = 'forward' | 'backward';

export interface SegmentSpec {
  /** 'embed', 'layer 0', 'layer 1', ..., 'head'. */
  name: string;
  kind: SegmentKind;
  /** The decoder layer of a 'layer' segment; -1 for the others. */
  layer: number;
  /** The segment's params as indices into paramSpecs(cfg), in the order its graphs take them. */
  params: number[];
}

/** The segments in order. With tied embeddings param 0 (the embedding) is in both 'embed' and 'head'. */
export function segmentSpecs(cfg: LlamaConfig): SegmentSpec[] {
  const perLayer = 9; // attnNorm, q, k, v, o, mlpNorm, gate, up, down (paramSpecs order)
  const finalNorm = 1 + perLayer * cfg.numLayers;
  const range = (from: number, n: number) => Array.from({ length: n }, (_, k) => from + k);
  return [
    { name: 'embed', kind: 'embed', layer: -1, params: [0] },
    ...range(0, cfg.numLayers).map((i): SegmentSpec => ({ name: `layer ${i}`, kind: 'layer', layer: i, params: range(1 + perLayer * i, perLayer) })),
    { name: 'head', kind: 'head', layer: -1, params: [finalNorm, cfg.tieWordEmbeddings ? 0 : finalNorm + 1] },
  ];
}

/**
 * The graph of one segment, at any batch and length ('batch', 'seq'). Inputs: the segment's input (tokens int32
 * [B, S], or h fp32 [B, S, H]), then positions int32 [B, S] (a layer) or labels int32 [B, S] and scale fp32 [] (the
 * head), then its params, then (a VJP of embed or a layer) dOut, the output's shape. Forward output: h, or the head's
 * loss. VJP outputs: the loss (ReduceSum(y * dOut) before the head), d input (not for embed: tokens are integers), then
 * d param for each param. `rotary`: the [maxPositions, headDim / 2] cos and sin tables a layer binds as constants.
 */
export function segmentGraph(cfg: LlamaConfig, seg: SegmentSpec, vjp: boolean, precision: ParamPrecision, rotary: readonly Tensor[]): Graph {
  const g = new Graph(`Llama ${seg.name} ${vjp ? 'VJP' : 'forward'} (${precision} params)`);
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const specs = paramSpecs(cfg);
  const x = seg.kind === 'embed' ? g.input('tokens', 'int32', ['batch', 'seq']) : g.input('h', 'fp32', ['batch', 'seq', cfg.hiddenSize]);
  const positions = seg.kind === 'layer' ? g.input('positions', 'int32', ['batch', 'seq']) : null;
  const labels = seg.kind === 'head' ? g.input('labels', 'int32', ['batch', 'seq']) : null;
  const scale = seg.kind === 'head' ? g.input('scale', 'fp32', []) : null;
  const supply = precision === 'fp32' ? fp32Param : castParam(precision);
  const leaves: Value[] = [];
  const p = seg.params.map((i) => {
    const v = supply(g, specs[i]);
    leaves.push(g.inputs[g.inputs.length - 1]);
    return v;
  });
  const linear = (w: Value) => (v: Value) => op('MatMul', [v, w]);
  let y: Value;
  if (seg.kind === 'embed') y = embedTokens(g, p[0], x);
  else if (seg.kind === 'layer') {
    const [attnNorm, q, k, v, o, mlpNorm, gate, up, down] = p;
    const w: BlockWeights = { attnNorm, mlpNorm, q: linear(q), k: linear(k), v: linear(v), o: linear(o), gate: linear(gate), up: linear(up), down: linear(down) };
    const tables = { cos: g.constant('rope.cos', rotary[0]), sin: g.constant('rope.sin', rotary[1]) };
    y = decoderBlock(g, cfg, w, seg.layer, x, positions!, tables, causalAttention(g, cfg));
  } else {
    const head = cfg.tieWordEmbeddings ? (v: Value) => op('MatMul', [v, op('Transpose', [p[1]], { perm: [1, 0] })]) : linear(p[1]);
    const [sum] = g.op('SoftmaxCrossEntropyLoss', [decoderHead(g, cfg, p[0], head, x), labels!], { reduction: 'sum' });
    y = op('Mul', [sum, scale!]);
  }
  if (!vjp) return g.output(y);
  const loss = seg.kind === 'head' ? y : op('ReduceSum', [op('Mul', [y, g.input('dOut', 'fp32', y.shape)])], { keepdims: false });
  return backward(g, loss, seg.kind === 'embed' ? leaves : [x, ...leaves], { name: g.name }).graph;
}

/** What a segment takes besides its input and params: positions (a layer), labels and scale (the head). */
export interface SegmentExtras {
  positions?: Tensor;
  labels?: Tensor;
  /** Multiplies the head's summed cross entropy: 1 / (tokens of the whole global batch) for the mean. */
  scale?: number;
}

export interface SegmentGrads {
  /** d loss / d the segment's input (fp32 [B, S, H]); null for embed. */
  dInput: Tensor | null;
  /** d loss / d each of the segment's params, in its order, in the params' dtype, tagged 'grads'. */
  grads: Tensor[];
  /** The head's loss (scaled sum); absent for the other segments. */
  loss?: number;
}

/** Where step() gets params and leaves gradients. */
export interface SegmentHooks {
  /** The segment's params, in its order (e.g. ZeRO-3 gathers them here). */
  acquire(seg: SegmentSpec, phase: SegmentPhase): Tensor[] | Promise<Tensor[]>;
  /** Called after the segment's run with what acquire gave (e.g. ZeRO-3 frees the gathered params). */
  release?(seg: SegmentSpec, params: Tensor[], phase: SegmentPhase): void | Promise<void>;
  /** The segment's gradients, in backward order; the consumer owns (and disposes) the tensors. */
  onGrads(seg: SegmentSpec, grads: Tensor[]): void | Promise<void>;
}

/** Hooks for params that stay resident: `params` in paramSpecs order, nothing to release. */
export function residentParams(params: readonly Tensor[], onGrads: SegmentHooks['onGrads']): SegmentHooks {
  return { acquire: (seg) => seg.params.map((i) => params[i]), onGrads };
}

/** A batch of next-token examples: tokens and labels (-100 ignored) int32, row-major [batch, seq]. */
export interface SegmentBatch {
  tokens: Int32Array;
  labels: Int32Array;
  batch: number;
  seq: number;
}

/** Runs segments' forward and VJP graphs (built once, at any batch size) on one device. */
export class SegmentedModel {
  readonly segments: readonly SegmentSpec[];
  readonly precision: ParamPrecision;
  private readonly specs: ParamSpec[];
  private readonly rotary: Tensor[];
  private readonly graphs = new Map<string, Graph>();

  constructor(
    readonly dev: Device,
    readonly cfg: LlamaConfig,
    opts: { precision?: ParamPrecision } = {},
  ) {
    this.precision = opts.precision ?? 'fp32';
    this.segments = segmentSpecs(cfg);
    this.specs = paramSpecs(cfg);
    const { cos, sin } = rotaryTables(cfg.maxPositions, cfg.headDim, cfg.ropeTheta);
    const half = [cfg.maxPositions, cfg.headDim / 2];
    this.rotary = [dev.tensor(cos, half, 'fp32', { tag: 'weights', label: 'rope.cos' }), dev.tensor(sin, half, 'fp32', { tag: 'weights', label: 'rope.sin' })];
  }

  /** Segment i's forward or VJP graph, built on first use. */
  graph(i: number, kind: 'forward' | 'vjp'): Graph {
    const key = `${i} ${kind}`;
    let g = this.graphs.get(key);
    if (!g) this.graphs.set(key, (g = segmentGraph(this.cfg, this.segment(i), kind === 'vjp', this.precision, this.rotary)));
    return g;
  }

  /** Segment i's output: h [B, S, H], or the head's loss (fp32 []). */
  async forward(i: number, input: Tensor, params: readonly Tensor[], extras: SegmentExtras = {}): Promise<Tensor> {
    const { feeds, own } = this.feeds(i, input, params, extras, false, null);
    try {
      return (await this.dev.run(this.graph(i, 'forward'), feeds))[0];
    } finally {
      for (const t of own) t.dispose();
    }
  }

  /** Segment i's VJP at dOut (d loss / d its output; null for the head, whose output is the loss). */
  async backward(i: number, input: Tensor, params: readonly Tensor[], dOut: Tensor | null, extras: SegmentExtras = {}): Promise<SegmentGrads> {
    const seg = this.segment(i);
    const { feeds, own } = this.feeds(i, input, params, extras, true, dOut);
    let out: Tensor[];
    try {
      out = await this.dev.run(this.graph(i, 'vjp'), feeds);
    } finally {
      for (const t of own) t.dispose();
    }
    const [lossT, ...rest] = out;
    const loss = lossT.toFloat32()[0];
    lossT.dispose();
    const dInput = seg.kind === 'embed' ? null : rest.shift()!;
    return { dInput, grads: rest.map((t) => t.retag('grads')), ...(seg.kind === 'head' ? { loss } : {}) };
  }

  /**
   * One forward and backward pass over every segment, params from `hooks`; returns the loss (scale * summed cross
   * entropy). Each segment's input is kept (tagged 'activations') until its VJP has run. The head runs once, in the
   * backward phase: its VJP gives the loss too. Gradients go to hooks.onGrads segment by segment, head first.
   */
  async step(batch: SegmentBatch, scale: number, hooks: SegmentHooks): Promise<number> {
    const { batch: B, seq: S } = batch;
    if (batch.tokens.length !== B * S || batch.labels.length !== B * S) {
      throw new ShapeError('SegmentedModel.step', [[B, S], [batch.tokens.length], [batch.labels.length]], `tokens and labels must hold batch x seq = ${B * S} values`);
    }
    const n = this.segments.length;
    const acts: (Tensor | null)[] = new Array(n).fill(null);
    acts[0] = this.dev.tensor(batch.tokens, [B, S], 'int32', { label: 'tokens' });
    const positions = this.dev.tensor(Int32Array.from({ length: B * S }, (_, k) => k % S), [B, S], 'int32', { label: 'positions' });
    const labels = this.dev.tensor(batch.labels, [B, S], 'int32', { label: 'labels' });
    const extras: SegmentExtras = { positions, labels, scale };
    let dOut: Tensor | null = null;
    let loss = NaN;
    const run = async <T>(seg: SegmentSpec, phase: SegmentPhase, f: (params: Tensor[]) => Promise<T>): Promise<T> => {
      const params = await hooks.acquire(seg, phase);
      try {
        return await f(params);
      } finally {
        await hooks.release?.(seg, params, phase);
      }
    };
    try {
      for (let i = 0; i < n - 1; i++) acts[i + 1] = await run(this.segments[i], 'forward', (ps) => this.forward(i, acts[i]!, ps, extras));
      for (let i = n - 1; i >= 0; i--) {
        const r = await run(this.segments[i], 'backward', (ps) => this.backward(i, acts[i]!, ps, dOut, extras));
        dOut?.dispose();
        dOut = r.dInput;
        acts[i]!.dispose();
        acts[i] = null;
        if (r.loss !== undefined) loss = r.loss;
        await hooks.onGrads(this.segments[i], r.grads);
      }
      return loss;
    } finally {
      for (const t of [...acts, dOut, positions, labels]) if (t && !t.disposed) t.dispose();
    }
  }

  /** Frees the rotary tables; the model is unusable after. */
  dispose(): void {
    for (const t of this.rotary) if (!t.disposed) t.dispose();
    this.graphs.clear();
  }

  private segment(i: number): SegmentSpec {
    const seg = this.segments[i];
    if (!seg) throw new ServelabError(`SegmentedModel: no segment ${i}; there are ${this.segments.length} (0 to ${this.segments.length - 1})`);
    return seg;
  }

  /** The graph's feeds in input order, checked; `own`: the tensors made here, to free after the run. */
  private feeds(i: number, input: Tensor, params: readonly Tensor[], extras: SegmentExtras, vjp: boolean, dOut: Tensor | null): { feeds: Tensor[]; own: Tensor[] } {
    const seg = this.segment(i);
    const where = `segment '${seg.name}'`;
    const names = seg.params.map((k) => this.specs[k].name);
    if (params.length !== seg.params.length) {
      throw new ShapeError(where, params.map((t) => t.shape), `takes ${seg.params.length} params (${names.join(', ')}), got ${params.length}`);
    }
    const dtype = this.precision;
    params.forEach((t, k) => {
      const want = this.specs[seg.params[k]].shape;
      if (t.shape.join() !== want.join()) throw new ShapeError(where, [want, t.shape], `param ${k} (${names[k]}) must be [${want.join(', ')}], got [${t.shape.join(', ')}]`);
      if (t.dtype !== dtype) throw new DTypeError(where, [t.dtype, dtype], `param ${k} (${names[k]}) is ${t.dtype}; this model takes ${dtype} params`);
    });
    const rank = seg.kind === 'embed' ? 2 : 3;
    if (input.shape.length !== rank || (rank === 3 && input.shape[2] !== this.cfg.hiddenSize)) {
      const want = seg.kind === 'embed' ? 'tokens int32 [batch, seq]' : `h fp32 [batch, seq, ${this.cfg.hiddenSize}]`;
      throw new ShapeError(where, [input.shape], `the input must be ${want}`);
    }
    const need = (v: Tensor | number | undefined, what: string) => {
      if (v === undefined) throw new ServelabError(`${where} needs extras.${what}`);
    };
    const feeds = [input];
    const own: Tensor[] = [];
    if (seg.kind === 'layer') {
      need(extras.positions, 'positions');
      feeds.push(extras.positions!);
    } else if (seg.kind === 'head') {
      need(extras.labels, 'labels');
      need(extras.scale, 'scale');
      if (!Number.isFinite(extras.scale)) throw new ServelabError(`${where}: scale must be a finite number, got ${extras.scale}`);
      own.push(this.dev.tensor([extras.scale!], [], 'fp32', { label: 'scale' }));
      feeds.push(extras.labels!, own[0]);
    }
    feeds.push(...params);
    if (vjp && seg.kind !== 'head') {
      if (!dOut) throw new ServelabError(`${where}: backward needs dOut, d loss / d the segment's output`);
      feeds.push(dOut);
    } else if (dOut) throw new ServelabError(`${where}: the head's output is the loss; its backward takes no dOut (pass null)`);
    return { feeds, own };
  }
}
