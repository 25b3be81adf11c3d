/**
 * The outlier experiment (Dettmers et al. 2022, "LLM.int8()", sections 3 and 4): the product X W of activations with
 * and without outlier features, in fp16, in naive vector-wise int8 and through LLM.int8 (both variants), against the
 * float64 product; a sweep of the threshold (error against the share of dimensions kept in fp16) and of the number
 * of outlier dimensions. It takes any activation matrix, so a real model's activations give a layer's profile too.
 * Every product runs on the device; the reference and the statistics are host float64.
 */
import type { Device } from '../device/device.ts';
import { getDevice } from '../device/select.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { BackendName } from '../backends/backend.ts';
import { ServelabError } from '../errors.ts';
import { matmul } from '../functional.ts';
import { uniform01 } from '../precision/random.ts';
import { checkAbort } from '../precision/util.ts';
import { quantizeWeightVectorwise, vectorwiseMatmul } from './vectorwise.ts';
import { disposeLlmInt8Weight, llmInt8Matmul, quantizeLlmInt8Weight } from './llm_int8.ts';
import { checkThreshold, DEFAULT_THRESHOLD } from './outlier_scan.ts';
import { columnStats, syntheticActivations, type ColumnStats, type SyntheticActivationOptions } from './outlier_data.ts';

/** Error of a product against the float64 reference. */
export interface ProductError {
  /** ||Y - R||_F / ||R||_F. */
  rel: number;
  maxAbs: number;
  meanAbs: number;
}

export interface ThresholdPoint {
  threshold: number;
  /** How many dimensions reached the threshold. */
  outlierDims: number;
  /** Their share of K: the share of X's values (and W's rows) kept in fp16. */
  fp16Share: number;
  paper: ProductError;
  bitsandbytes: ProductError;
}

export interface OutlierExperimentResult {
  device: string;
  kind: BackendName;
  /** X [tokens, hidden] (flattened to 2-D), W [hidden, outFeatures]. */
  tokens: number;
  hidden: number;
  outFeatures: number;
  threshold: number;
  columns: ColumnStats;
  /** At `threshold`. */
  errors: { fp16: ProductError; int8: ProductError; llmInt8: ProductError; llmInt8Bitsandbytes: ProductError };
  sweep: ThresholdPoint[];
}

export interface OutlierExperimentOptions {
  device?: Device;
  /** W [hidden, outFeatures]; default a seeded N(0, 1/hidden) weight. */
  weight?: Tensor;
  /** Columns of the default weight; default 256. */
  outFeatures?: number;
  threshold?: number;
  /** Thresholds of the sweep; default 0.5 to 40 and Infinity (plain int8). */
  thresholds?: readonly number[];
  seed?: number;
  signal?: AbortSignal;
}

export const DEFAULT_THRESHOLDS: readonly number[] = Object.freeze([0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 12, 20, 40, Infinity]);

function productError(y: Tensor, ref: Float64Array): ProductError {
  const v = y.toFloat32();
  let e2 = 0;
  let r2 = 0;
  let maxAbs = 0;
  let sum = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(v[i] - ref[i]);
    e2 += e * e;
    r2 += ref[i] * ref[i];
    sum += e;
    if (!(e <= maxAbs)) maxAbs = e; // NaN propagates, so a broken product cannot look exact
  }
  return { rel: r2 ? Math.sqrt(e2) / Math.sqrt(r2) : Math.sqrt(e2), maxAbs, meanAbs: sum / ref.length };
}

function gaussianWeight(K: number, N: number, seed: number): Float32Array {
  const u = uniform01(2 * K * N, seed);
  const out = new Float32Array(K * N);
  const std = 1 / Math.sqrt(K);
  for (let i = 0; i < out.length; i++) out[i] = std * Math.sqrt(-2 * Math.log(1 - u[2 * i])) * Math.cos(2 * Math.PI * u[2 * i + 1]);
  return out;
}

/**
 * Runs every format on x [..., K] (a Tensor, on any device, or host values with a shape) times W. The tensors it
 * makes are freed before it returns; x and a given weight are left as they were.
 */
export async function outlierExperiment(x: Tensor | { values: ArrayLike<number>; shape: readonly number[] }, opts: OutlierExperimentOptions = {}): Promise<OutlierExperimentResult> {
  const dev = opts.device ?? (x instanceof Tensor ? (x.device as Device) : await getDevice());
  const threshold = checkThreshold(opts.threshold ?? DEFAULT_THRESHOLD);
  const thresholds = (opts.thresholds ?? DEFAULT_THRESHOLDS).map(checkThreshold);
  const shape = x.shape;
  const values = x instanceof Tensor ? x.toFloat32() : Float32Array.from(x.values);
  const K = shape[shape.length - 1];
  if (shape.length < 1 || !(K > 0) || values.length === 0 || values.length % K !== 0) throw new ServelabError(`outlierExperiment needs a non-empty [..., K] matrix, got [${shape.join(', ')}]`);
  const M = values.length / K;
  const columns = columnStats({ values, shape: [M, K] }, threshold);
  if (opts.weight && (opts.weight.shape.length !== 2 || opts.weight.shape[0] !== K)) throw new ServelabError(`the weight must be [${K}, N], got [${opts.weight.shape.join(', ')}]`);
  const N = opts.weight ? opts.weight.shape[1] : (opts.outFeatures ?? 256);
  const wv = opts.weight ? opts.weight.toFloat32() : gaussianWeight(K, N, opts.seed ?? 7);

  const ref = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const a = values[i * K + k];
      if (a === 0) continue;
      for (let j = 0; j < N; j++) ref[i * N + j] += a * wv[k * N + j];
    }
  }

  const made: Tensor[] = [];
  const keep = <T extends Tensor>(t: T) => (made.push(t), t);
  const w = keep(dev.tensor(wv, [K, N], 'fp32', { tag: 'weights', label: 'outliers.w' }));
  const x32 = keep(dev.tensor(values, [M, K], 'fp32', { label: 'outliers.x' }));
  try {
    checkAbort(opts.signal);
    const x16 = keep(dev.tensor(values, [M, K], 'fp16'));
    const w16 = keep(dev.tensor(wv, [K, N], 'fp16', { tag: 'weights' }));
    const fp16 = productError(keep(await matmul(x16, w16)), ref);
    const wq = await quantizeWeightVectorwise(w);
    made.push(wq.q, wq.scale);
    const int8 = productError(keep(await vectorwiseMatmul(x32, wq)), ref);
    const paper = await quantizeLlmInt8Weight(w, { variant: 'paper', label: 'outliers.paper' });
    const bnb = await quantizeLlmInt8Weight(w, { variant: 'bitsandbytes', label: 'outliers.bnb' });
    try {
      const run = async (lw: typeof paper, t: number) => {
        checkAbort(opts.signal);
        const r = await llmInt8Matmul(x32, lw, { threshold: t });
        const e = productError(r.y, ref);
        r.y.dispose();
        return { e, dims: r.outlierDims.length };
      };
      const errors = { fp16, int8, llmInt8: (await run(paper, threshold)).e, llmInt8Bitsandbytes: (await run(bnb, threshold)).e };
      const sweep: ThresholdPoint[] = [];
      for (const t of thresholds) {
        const p = await run(paper, t);
        const b = await run(bnb, t);
        sweep.push({ threshold: t, outlierDims: p.dims, fp16Share: p.dims / K, paper: p.e, bitsandbytes: b.e });
      }
      return { device: dev.name, kind: dev.kind, tokens: M, hidden: K, outFeatures: N, threshold, columns, errors, sweep };
    } finally {
      disposeLlmInt8Weight(paper);
      disposeLlmInt8Weight(bnb);
    }
  } finally {
    for (const t of made) t.dispose();
  }
}

export interface OutlierCountPoint {
  /** Planted outlier dimensions. */
  outlierDims: number;
  /** Dimensions LLM.int8 kept in fp16 at the threshold, and their share of K. */
  detected: number;
  fp16Share: number;
  fp16: ProductError;
  int8: ProductError;
  llmInt8: ProductError;
  llmInt8Bitsandbytes: ProductError;
}

/**
 * The experiment on synthetic activations with 0, 1, 2, ... planted outlier dimensions (same seed, same weight):
 * naive int8's error grows with the outliers, LLM.int8's does not.
 */
export async function outlierCountSweep(opts: SyntheticActivationOptions & OutlierExperimentOptions & { counts?: readonly number[] } = {}): Promise<OutlierCountPoint[]> {
  const counts = opts.counts ?? [0, 1, 2, 4, 8, 16, 32];
  const rows: OutlierCountPoint[] = [];
  for (const c of counts) {
    const act = syntheticActivations({ ...opts, outlierDims: c });
    const r = await outlierExperiment(act, { ...opts, thresholds: [] });
    const detected = r.columns.outliers.length;
    rows.push({ outlierDims: c, detected, fp16Share: detected / r.hidden, ...r.errors });
  }
  return rows;
}
