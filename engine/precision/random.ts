/** Seeded inputs that numpy reproduces bit for bit: mulberry32 (Tommy Ettinger, 2017) as a counter-based hash of the index. */
import { ServelabError } from '../errors.ts';

export const DEFAULT_SEED = 20240607;

/** The 32-bit mulberry32 output for element i: state = seed + (i + 1) * 0x6D2B79F5, then its output mix. */
export function mulberry32At(seed: number, i: number): number {
  let t = (seed + Math.imul(i + 1, 0x6d2b79f5)) | 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** n values k / 2^24 in [0, 1): the top 24 bits, so every value is exact in fp32 and float64 alike. */
export function uniform01(n: number, seed = DEFAULT_SEED): Float64Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new ServelabError(`uniform01: n must be a non-negative integer, got ${n}`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (mulberry32At(seed, i) >>> 8) / 16777216;
  return out;
}

/**
 * - `uniform`: [0, 1), all positive, so a running sum only grows (the case where low precision stalls).
 * - `signed`: [-1, 1), zero mean, as activations and weights mostly are.
 * - `mixed`: every 100th value in [0, 100), the rest in [0, 0.01): small addends meet a large running sum.
 */
export type Distribution = 'uniform' | 'signed' | 'mixed';
export const DISTRIBUTIONS: readonly Distribution[] = Object.freeze(['uniform', 'signed', 'mixed'] as const);

/** fp32 inputs (each a float64 computation rounded once with Math.fround, as numpy's astype(float32) does). */
export function sampleValues(n: number, distribution: Distribution = 'uniform', seed = DEFAULT_SEED): Float32Array {
  const u = uniform01(n, seed);
  const out = new Float32Array(n);
  switch (distribution) {
    case 'uniform':
      out.set(u);
      break;
    case 'signed':
      for (let i = 0; i < n; i++) out[i] = 2 * u[i] - 1;
      break;
    case 'mixed':
      for (let i = 0; i < n; i++) out[i] = i % 100 === 0 ? 100 * u[i] : 0.01 * u[i];
      break;
    default:
      throw new ServelabError(`unknown distribution ${JSON.stringify(distribution)}; expected one of ${DISTRIBUTIONS.join(', ')}`);
  }
  return out;
}

/** n fp32 values evenly (linear) or log-uniformly (log) spread over [lo, hi). */
export function sampleRange(n: number, lo: number, hi: number, spacing: 'linear' | 'log' = 'linear', seed = DEFAULT_SEED): Float32Array {
  if (!(hi > lo) || !Number.isFinite(lo) || !Number.isFinite(hi) || (spacing === 'log' && !(lo > 0))) {
    throw new ServelabError(`sampleRange: need finite lo < hi${spacing === 'log' ? ' and lo > 0 for log spacing' : ''}, got [${lo}, ${hi})`);
  }
  const u = uniform01(n, seed);
  const out = new Float32Array(n);
  if (spacing === 'linear') {
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * u[i];
  } else {
    const a = Math.log(lo);
    const b = Math.log(hi);
    for (let i = 0; i < n; i++) out[i] = Math.exp(a + (b - a) * u[i]);
  }
  return out;
}
