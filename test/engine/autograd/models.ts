/**
 * Small models for the whole-model gradient checks and the training tests, built from engine ops with every
 * parameter a graph input: a two-layer MLP, and one pre-norm Llama-style transformer block (RMSNorm, grouped-query
 * causal attention, SwiGLU MLP, residuals).
 */
import { Graph, type DType, type Shape, type Value } from '../../../engine/index.ts';
import { rng, uniform } from '../../../bench/random.ts';

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);

export interface ParamSpec {
  name: string;
  shape: number[];
  /** Initial values: uniform in [-scale, scale), or all `fill`. */
  scale?: number;
  fill?: number;
}

/** Seeded initial values for each param (uniform in +-scale, default 1/sqrt(fan-in) of a matrix). */
export function initParams(specs: readonly ParamSpec[], seed: number): number[][] {
  return specs.map((s, i) => {
    if (s.fill !== undefined) return new Array(numel(s.shape)).fill(s.fill);
    const scale = s.scale ?? 1 / Math.sqrt(s.shape[0]);
    return uniform(rng(seed * 101 + i), numel(s.shape), -scale, scale);
  });
}

const op = (g: Graph, name: Parameters<Graph['op']>[0], ins: (Value | null)[], attrs = {}) => g.op(name, ins, attrs)[0];

export const MLP_PARAMS = (inDim: number, hidden: number, out: number): ParamSpec[] => [
  { name: 'w1', shape: [inDim, hidden] },
  { name: 'b1', shape: [hidden], scale: 0.1 },
  { name: 'w2', shape: [hidden, out] },
  { name: 'b2', shape: [out], scale: 0.1 },
];

/** x [N, in] -> act(x w1 + b1) w2 + b2 [N, out]. */
export function mlp(g: Graph, x: Value, [w1, b1, w2, b2]: Value[], act: 'Gelu' | 'SiLU' = 'Gelu'): Value {
  const h = op(g, act, [op(g, 'Add', [op(g, 'MatMul', [x, w1]), b1])]);
  return op(g, 'Add', [op(g, 'MatMul', [h, w2]), b2]);
}

/** mean((y - target)^2) as a scalar. */
export function meanSquaredError(g: Graph, y: Value, target: Value): Value {
  const d = op(g, 'Sub', [y, target]);
  return op(g, 'ReduceMean', [op(g, 'Mul', [d, d])], { keepdims: false });
}

export interface BlockConfig {
  dModel: number;
  heads: number;
  kvHeads: number;
  ffn: number;
}

export const BLOCK_PARAMS = ({ dModel: d, heads, kvHeads, ffn }: BlockConfig): ParamSpec[] => {
  const hd = d / heads;
  return [
    { name: 'attnNorm', shape: [d], fill: 1 },
    { name: 'wq', shape: [d, heads * hd] },
    { name: 'wk', shape: [d, kvHeads * hd] },
    { name: 'wv', shape: [d, kvHeads * hd] },
    { name: 'wo', shape: [heads * hd, d] },
    { name: 'mlpNorm', shape: [d], fill: 1 },
    { name: 'wGate', shape: [d, ffn] },
    { name: 'wUp', shape: [d, ffn] },
    { name: 'wDown', shape: [ffn, d] },
  ];
};

/**
 * One pre-norm decoder block: h = x + Wo attn(RMSNorm(x)); y = h + Wdown (SiLU(n Wgate) * n Wup), n = RMSNorm(h).
 * x [B, S, d] (sizes or symbols) -> [B, S, d].
 */
export function transformerBlock(g: Graph, x: Value, p: Value[], cfg: BlockConfig): Value {
  const [attnNorm, wq, wk, wv, wo, mlpNorm, wGate, wUp, wDown] = p;
  const [B, S] = x.shape;
  const hd = cfg.dModel / cfg.heads;
  const mm = (a: Value, b: Value) => op(g, 'MatMul', [a, b]);
  // [B, S, H * hd] -> [B, H, S, hd]
  const heads = (v: Value, h: number) => op(g, 'Transpose', [op(g, 'Reshape', [v], { shape: [B, S, h, hd] })], { perm: [0, 2, 1, 3] });
  const n1 = op(g, 'RMSNorm', [x, attnNorm], { epsilon: 1e-5 });
  const att = op(g, 'Attention', [heads(mm(n1, wq), cfg.heads), heads(mm(n1, wk), cfg.kvHeads), heads(mm(n1, wv), cfg.kvHeads)], { causal: true });
  const merged = op(g, 'Reshape', [op(g, 'Transpose', [att], { perm: [0, 2, 1, 3] })], { shape: [B, S, cfg.dModel] });
  const h = op(g, 'Add', [x, mm(merged, wo)]);
  const n2 = op(g, 'RMSNorm', [h, mlpNorm], { epsilon: 1e-5 });
  const gated = op(g, 'Mul', [op(g, 'SiLU', [mm(n2, wGate)]), mm(n2, wUp)]);
  return op(g, 'Add', [h, mm(gated, wDown)]);
}

/** Graph inputs for data (in order) then params, all of `dtype`. */
export function inputs(g: Graph, data: { name: string; shape: Shape; dtype?: DType }[], params: readonly ParamSpec[], dtype: DType = 'fp32') {
  const d = data.map((x) => g.input(x.name, x.dtype ?? dtype, x.shape));
  const p = params.map((s) => g.input(s.name, dtype, s.shape));
  return { data: d, params: p };
}
