/** GEMM error of fp16 and bf16 against float64 as the inner dimension K grows, run on a device (Higham 2002, 3.1: error bounds grow with K). */
import type { Device } from '../device/device.ts';
import { getDevice } from '../device/select.ts';
import type { FloatDType } from '../dtype/dtype.ts';
import type { BackendName } from '../backends/backend.ts';
import { matmul } from '../functional.ts';
import { ServelabError } from '../errors.ts';
import { roundToDtype } from './bits.ts';
import { DEFAULT_SEED, sampleValues, type Distribution } from './random.ts';
import { checkAbort, positiveInt } from './util.ts';

export interface GemmErrorRow {
  dtype: FloatDType;
  /** 'device': the product the device computed; 'fp16-accumulate': every partial sum rounded to fp16, simulated bit-exactly here. */
  source: 'device' | 'fp16-accumulate';
  k: number;
  /**
   * Against the float64 product of the fp32 inputs: everything that storing and computing in this dtype costs,
   * input rounding included. Elementwise |C - R| / |R|, max and mean, and the normwise ||C - R||_F / ||R||_F.
   */
  maxRel: number;
  meanRel: number;
  normRel: number;
  /** Against the float64 product of the inputs already rounded to the dtype: what the arithmetic alone adds. */
  maxRelCompute: number;
  meanRelCompute: number;
}

export interface GemmErrorResult {
  device: string;
  kind: BackendName;
  /** How the device computes each dtype, in its own words (device.notes()). */
  notes: string[];
  m: number;
  n: number;
  ks: number[];
  distribution: Distribution;
  rows: GemmErrorRow[];
}

export interface GemmErrorOptions {
  /** Default: the active device (SERVELAB_DEVICE). */
  device?: Device;
  ks?: readonly number[];
  m?: number;
  n?: number;
  dtypes?: readonly FloatDType[];
  /** uniform [0, 1) keeps every product positive, so |R| grows like K/4 and no entry cancels to near zero. */
  distribution?: Distribution;
  /** Also report a sequential fp16-accumulating dot product (what an fp16 shader loop does), bit-exact. */
  simulateFp16Accumulation?: boolean;
  seed?: number;
  signal?: AbortSignal;
}

export const DEFAULT_GEMM_KS: readonly number[] = Object.freeze([64, 128, 256, 512, 1024, 2048, 4096, 8192]);

/** C = A B in float64 for A [m, k] and B [k, n], row-major, each input first mapped through `r`. */
function product(a: Float32Array, b: Float32Array, m: number, k: number, n: number, r: (x: number) => number): Float64Array {
  const ar = Float64Array.from(a, r);
  const br = Float64Array.from(b, r);
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = ar[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += x * br[p * n + j];
    }
  }
  return c;
}

/** Every product and every partial sum rounded to fp16, left to right: the worst case of an fp16 accumulator. */
function fp16AccumulateProduct(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float64Array {
  const h = (x: number) => roundToDtype('fp16', x);
  const ar = Float64Array.from(a, h);
  const br = Float64Array.from(b, h);
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc = h(acc + h(ar[i * k + p] * br[p * n + j]));
      c[i * n + j] = acc;
    }
  }
  return c;
}

function relErrors(c: ArrayLike<number>, ref: Float64Array): { max: number; mean: number; norm: number } {
  let max = 0;
  let sum = 0;
  let count = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = c[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
    if (ref[i] === 0) continue;
    const e = Math.abs(d / ref[i]);
    if (e > max || Number.isNaN(e)) max = e;
    sum += e;
    count++;
  }
  return { max, mean: count ? sum / count : NaN, norm: den ? Math.sqrt(num / den) : NaN };
}

/**
 * For each K: A [m, K] and B [K, n] of seeded fp32 values, multiplied on the device in each dtype (eager
 * `matmul`), compared with float64. On the CPU fp16 is computed in fp32 and rounded once, so its error stays
 * near the rounding of the result whatever K is; an fp16 accumulator's error grows with K.
 */
export async function gemmError(opts: GemmErrorOptions = {}): Promise<GemmErrorResult> {
  const {
    ks = DEFAULT_GEMM_KS, m = 8, n = 8, dtypes = ['fp32', 'fp16', 'bf16'], distribution = 'uniform',
    simulateFp16Accumulation = true, seed = DEFAULT_SEED, signal,
  } = opts;
  positiveInt('gemmError m', m);
  positiveInt('gemmError n', n);
  for (const k of ks) positiveInt('gemmError k', k);
  if (ks.length === 0) throw new ServelabError('gemmError: ks is empty');
  const dev = opts.device ?? (await getDevice());
  const rows: GemmErrorRow[] = [];
  for (const k of ks) {
    checkAbort(signal);
    const a = sampleValues(m * k, distribution, seed + 2 * k);
    const b = sampleValues(k * n, distribution, seed + 2 * k + 1);
    const exact = product(a, b, m, k, n, (x) => x);
    const row = (dtype: FloatDType, source: GemmErrorRow['source'], c: ArrayLike<number>): GemmErrorRow => {
      const total = relErrors(c, exact);
      const compute = relErrors(c, product(a, b, m, k, n, (x) => roundToDtype(dtype, x)));
      return { dtype, source, k, maxRel: total.max, meanRel: total.mean, normRel: total.norm, maxRelCompute: compute.max, meanRelCompute: compute.mean };
    };
    for (const dtype of dtypes) {
      checkAbort(signal);
      const ta = dev.tensor(a, [m, k], dtype);
      const tb = dev.tensor(b, [k, n], dtype);
      try {
        const tc = await matmul(ta, tb);
        const c = tc.toFloat32();
        tc.dispose();
        rows.push(row(dtype, 'device', c));
      } finally {
        ta.dispose();
        tb.dispose();
      }
    }
    if (simulateFp16Accumulation) rows.push(row('fp16', 'fp16-accumulate', fp16AccumulateProduct(a, b, m, k, n)));
  }
  return { device: dev.name, kind: dev.kind, notes: dev.notes(), m, n, ks: [...ks], distribution, rows };
}
