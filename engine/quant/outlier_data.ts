/**
 * Activations with systematic outlier features, and per-feature magnitude statistics of any activation matrix
 * (Dettmers et al. 2022, "LLM.int8()", section 4: from 6.7B parameters on, a handful of hidden dimensions hold values
 * of 20 to 60 in most tokens of every layer; the paper calls a dimension an outlier feature when its magnitude
 * reaches 6.0 in at least 25% of layers and 6% of tokens).
 */
import { ServelabError } from '../errors.ts';
import { Tensor } from '../tensor/tensor.ts';
import { uniform01 } from '../precision/random.ts';
import { DEFAULT_THRESHOLD } from './outlier_scan.ts';

export interface SyntheticActivationOptions {
  /** Rows (tokens, the paper's sequence dimension); default 256. */
  tokens?: number;
  /** Columns (hidden size, the feature dimension); default 1024. */
  hidden?: number;
  /** How many outlier dimensions (picked by the seed), or which ones; default 6. 0 gives none. */
  outlierDims?: number | readonly number[];
  /** |x| of an outlier, uniform in [lo, hi); default [20, 60]. */
  magnitude?: readonly [number, number];
  /** Share of tokens in which an outlier dimension is large; default 0.75 (elsewhere it is a regular value). */
  tokenShare?: number;
  /** Regular values are N(0, std^2); default 1, so they stay well below the threshold 6. */
  std?: number;
  seed?: number;
}

export interface SyntheticActivations {
  values: Float32Array;
  shape: [number, number];
  /** The planted outlier dimensions, ascending. */
  outlierDims: number[];
}

const int = (name: string, v: number, min: number) => {
  if (!Number.isSafeInteger(v) || v < min) throw new ServelabError(`${name} must be an integer >= ${min}, got ${v}`);
  return v;
};

/**
 * Gaussian activations with planted outlier features, reproducible from the seed. Each outlier dimension keeps one
 * sign (the paper finds them asymmetric and systematic: the same dimensions, across tokens and layers).
 */
export function syntheticActivations(opts: SyntheticActivationOptions = {}): SyntheticActivations {
  const M = int('tokens', opts.tokens ?? 256, 1);
  const K = int('hidden', opts.hidden ?? 1024, 1);
  const [lo, hi] = opts.magnitude ?? [20, 60];
  const share = opts.tokenShare ?? 0.75;
  const std = opts.std ?? 1;
  const seed = opts.seed ?? 20220815;
  if (!(lo >= 0 && hi >= lo && Number.isFinite(hi))) throw new ServelabError(`magnitude must be [lo, hi] with 0 <= lo <= hi, got [${lo}, ${hi}]`);
  if (!(share >= 0 && share <= 1)) throw new ServelabError(`tokenShare must be in [0, 1], got ${share}`);
  if (!(std >= 0 && Number.isFinite(std))) throw new ServelabError(`std must be a finite number >= 0, got ${std}`);

  let dims: number[];
  const od = opts.outlierDims ?? 6;
  if (typeof od === 'number') {
    int('outlierDims', od, 0);
    if (od > K) throw new ServelabError(`outlierDims (${od}) cannot exceed hidden (${K})`);
    // A seeded shuffle of 0..K-1; its first `od` entries are the outlier dimensions.
    const order = [...Array(K).keys()];
    const u = uniform01(K, seed + 1);
    for (let i = K - 1; i > 0; i--) {
      const j = Math.floor(u[i] * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    dims = order.slice(0, od);
  } else {
    dims = [...od];
    for (const d of dims) if (!Number.isSafeInteger(d) || d < 0 || d >= K) throw new ServelabError(`outlier dimension ${d} is outside 0..${K - 1}`);
  }
  dims = [...new Set(dims)].sort((a, b) => a - b);

  const n = M * K;
  const u = uniform01(2 * n, seed);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = std * Math.sqrt(-2 * Math.log(1 - u[2 * i])) * Math.cos(2 * Math.PI * u[2 * i + 1]);
  const pick = uniform01(2 * M * dims.length + dims.length, seed + 2);
  dims.forEach((d, j) => {
    const sign = pick[2 * M * dims.length + j] < 0.5 ? -1 : 1;
    for (let i = 0; i < M; i++) {
      if (pick[(j * M + i) * 2] < share) values[i * K + d] = sign * (lo + (hi - lo) * pick[(j * M + i) * 2 + 1]);
    }
  });
  return { values, shape: [M, K], outlierDims: dims };
}

/** Per-feature (column) magnitude statistics of activations [..., K]: a layer's outlier profile. */
export interface ColumnStats {
  tokens: number;
  hidden: number;
  threshold: number;
  /** max |x| over tokens, per dimension. */
  absmax: number[];
  /** mean |x| over tokens, per dimension. */
  meanAbs: number[];
  /** Share of tokens with |x| >= threshold, per dimension. */
  shareAbove: number[];
  /** Dimensions whose absmax reaches the threshold (what LLM.int8 sends to fp16), largest first. */
  outliers: { dim: number; absmax: number; shareAbove: number }[];
  /** Share of all values with |x| >= threshold (the paper: about 0.1% in large models). */
  shareOfValuesAbove: number;
}

/** Host float64 statistics: reports, not kernels. */
export function columnStats(x: Tensor | { values: ArrayLike<number>; shape: readonly number[] }, threshold = DEFAULT_THRESHOLD): ColumnStats {
  const shape = x instanceof Tensor ? x.shape : x.shape;
  const v = x instanceof Tensor ? x.toFloat32() : x.values;
  const K = shape[shape.length - 1];
  if (shape.length < 1 || !(K > 0) || v.length === 0 || v.length % K !== 0) throw new ServelabError(`columnStats needs a non-empty [..., K] matrix, got shape [${shape.join(', ')}]`);
  if (!(threshold >= 0)) throw new ServelabError(`threshold must be >= 0, got ${threshold}`);
  const M = v.length / K;
  const absmax = new Array<number>(K).fill(0);
  const sum = new Array<number>(K).fill(0);
  const above = new Array<number>(K).fill(0);
  let total = 0;
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const a = Math.abs(v[i * K + k]);
      if (!Number.isFinite(a)) throw new ServelabError(`columnStats: element [${i}, ${k}] is ${v[i * K + k]}`);
      if (a > absmax[k]) absmax[k] = a;
      sum[k] += a;
      if (a >= threshold) (above[k]++, total++);
    }
  }
  const shareAbove = above.map((c) => c / M);
  const outliers = absmax.flatMap((a, dim) => (a >= threshold ? [{ dim, absmax: a, shareAbove: shareAbove[dim] }] : [])).sort((p, q) => q.absmax - p.absmax);
  return { tokens: M, hidden: K, threshold, absmax, meanAbs: sum.map((s) => s / M), shareAbove, outliers, shareOfValuesAbove: total / v.length };
}
