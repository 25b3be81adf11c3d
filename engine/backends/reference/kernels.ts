/** Reference kernels in plain TypeScript loops, computed in float64: the oracle the fast backends are tested against. */
import { ShapeError } from '../../errors.ts';
import { normAxis } from '../../graph/ops.ts';

export type F = Float64Array;

export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

const numel = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

/** numpy broadcasting of two concrete shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new ShapeError(op, [a, b], `cannot broadcast dimension ${x} against ${y}`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Index into a broadcast operand for each flat output index. */
export function broadcastIndex(from: readonly number[], to: readonly number[]): Int32Array {
  const n = numel(to);
  const idx = new Int32Array(n);
  const st = strides(from);
  const off = to.length - from.length;
  const ts = strides(to);
  for (let i = 0; i < n; i++) {
    let j = 0;
    for (let d = 0; d < from.length; d++) {
      const c = Math.floor(i / ts[d + off]) % to[d + off];
      if (from[d] !== 1) j += c * st[d];
    }
    idx[i] = j;
  }
  return idx;
}

export function binary(op: (x: number, y: number) => number, a: F, as: readonly number[], b: F, bs: readonly number[]): [F, number[]] {
  const shape = broadcastShapes('binary', as, bs);
  const ia = broadcastIndex(as, shape);
  const ib = broadcastIndex(bs, shape);
  const out = new Float64Array(ia.length);
  for (let i = 0; i < out.length; i++) out[i] = op(a[ia[i]], b[ib[i]]);
  return [out, shape];
}

/** Batched [..., M, K] x [..., K, N] with numpy batch broadcasting; zero points subtracted first (integer matmul). */
export function matmul(a: ArrayLike<number>, as: readonly number[], b: ArrayLike<number>, bs: readonly number[], az = 0, bz = 0): [F, number[]] {
  const [M, K] = as.slice(-2);
  const N = bs[bs.length - 1];
  const batch = broadcastShapes('MatMul', as.slice(0, -2), bs.slice(0, -2));
  const nb = numel(batch);
  const ia = broadcastIndex(as.slice(0, -2), batch);
  const ib = broadcastIndex(bs.slice(0, -2), batch);
  const out = new Float64Array(nb * M * N);
  for (let t = 0; t < nb; t++) {
    const ao = ia[t] * M * K;
    const bo = ib[t] * K * N;
    const oo = t * M * N;
    for (let i = 0; i < M; i++) {
      for (let k = 0; k < K; k++) {
        const x = a[ao + i * K + k] - az;
        if (x === 0) continue;
        const row = bo + k * N;
        for (let j = 0; j < N; j++) out[oo + i * N + j] += x * (b[row + j] - bz);
      }
    }
  }
  return [out, [...batch, M, N]];
}

/** Applies fn to each 1-D slice along axis (in place on a copy). */
export function alongAxis(x: F, shape: readonly number[], axis: number, fn: (v: F) => void): F {
  const out = Float64Array.from(x);
  const st = strides(shape);
  const len = shape[axis];
  const step = st[axis];
  const outer = numel(shape.slice(0, axis));
  const inner = step;
  const v = new Float64Array(len);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * len * inner + i;
      for (let j = 0; j < len; j++) v[j] = out[base + j * step];
      fn(v);
      for (let j = 0; j < len; j++) out[base + j * step] = v[j];
    }
  }
  return out;
}

export function softmax(x: F, shape: readonly number[], axis: number): F {
  return alongAxis(x, shape, normAxis('Softmax', axis, shape.length, shape), (v) => {
    let m = -Infinity;
    for (const y of v) m = Math.max(m, y);
    let s = 0;
    for (let j = 0; j < v.length; j++) s += v[j] = Math.exp(v[j] - m);
    for (let j = 0; j < v.length; j++) v[j] /= s;
  });
}

export function layerNorm(x: F, shape: readonly number[], scale: F, bias: F | null, eps: number, rms: boolean): F {
  const d = shape[shape.length - 1];
  return alongAxis(x, shape, shape.length - 1, (v) => {
    let mean = 0;
    if (!rms) {
      for (const y of v) mean += y;
      mean /= d;
    }
    let sq = 0;
    for (const y of v) sq += (y - mean) ** 2;
    const inv = 1 / Math.sqrt(sq / d + eps);
    for (let j = 0; j < d; j++) v[j] = (v[j] - mean) * inv * scale[j] + (bias ? bias[j] : 0);
  });
}

const SQRT_PI = Math.sqrt(Math.PI);

/** erf(z), z >= 0, by A&S 7.1.6: every term is positive, so no cancellation (for z < 3: under 30 terms). */
function erfSeries(z: number): number {
  let term = z;
  let sum = z;
  for (let n = 1; term > 1e-17 * sum; n++) {
    term *= (2 * z * z) / (2 * n + 1);
    sum += term;
  }
  return (2 / SQRT_PI) * Math.exp(-z * z) * sum;
}

/** erfc(z), z >= 3, by the continued fraction A&S 7.1.14, evaluated from depth 60 (converged well before). */
function erfcFraction(z: number): number {
  let f = z;
  for (let k = 60; k >= 1; k--) f = z + k / 2 / f;
  return Math.exp(-z * z) / (SQRT_PI * f);
}

/**
 * erfc with float64 relative accuracy (1e-10 or better) in both tails: Gelu's negative tail is 0.5 x erfc(|x|/sqrt 2),
 * where an erf with a fixed absolute error (A&S 7.1.26's 1.5e-7) is 5e-5 off relative at x = -3 and 25% at x = -5.
 */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const c = z < 3 ? 1 - erfSeries(z) : erfcFraction(z);
  return x < 0 ? 2 - c : c;
}

export function erf(x: number): number {
  const z = Math.abs(x);
  const e = z < 3 ? erfSeries(z) : 1 - erfcFraction(z);
  return x < 0 ? -e : e;
}

export const gelu = (x: number) => 0.5 * x * erfc(-x / Math.SQRT2);
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

export function transpose(x: ArrayLike<number>, shape: readonly number[], perm: readonly number[]): [F, number[]] {
  const outShape = perm.map((p) => shape[p]);
  const st = strides(shape);
  const os = strides(outShape);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) {
    let j = 0;
    for (let d = 0; d < perm.length; d++) j += (Math.floor(i / os[d]) % outShape[d]) * st[perm[d]];
    out[i] = x[j];
  }
  return [out, outShape];
}

export function gather(x: ArrayLike<number>, shape: readonly number[], idx: Int32Array, idxShape: readonly number[], axis: number): [F, number[]] {
  const outer = numel(shape.slice(0, axis));
  const len = shape[axis];
  const inner = numel(shape.slice(axis + 1));
  const out = new Float64Array(outer * idx.length * inner);
  for (let o = 0; o < outer; o++) {
    for (let t = 0; t < idx.length; t++) {
      let r = idx[t];
      if (r < -len || r >= len) throw new RangeError(`Gather: index ${r} out of range for axis of size ${len}`);
      if (r < 0) r += len;
      for (let i = 0; i < inner; i++) out[(o * idx.length + t) * inner + i] = x[(o * len + r) * inner + i];
    }
  }
  return [out, [...shape.slice(0, axis), ...idxShape, ...shape.slice(axis + 1)]];
}

/** Round half to even, as ONNX QuantizeLinear specifies. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * ONNX DynamicQuantizeLinear: the range always includes 0, so 0 is exactly representable. An all-zero input
 * has range 0 and the spec's scale would divide by zero; onnxruntime defines scale = 1 there (y = 0, zero point 0),
 * and so does this oracle.
 */
export function dynamicQuantize(x: Float32Array): { y: Uint8Array; scale: number; zeroPoint: number } {
  let lo = 0;
  let hi = 0;
  for (const v of x) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  // float32 arithmetic step by step, as the ONNX spec and onnxruntime compute it
  const range = Math.fround(hi - lo);
  const scale = range === 0 ? 1 : Math.fround(range / 255);
  const sat = (v: number) => Math.min(255, Math.max(0, v));
  const zeroPoint = sat(roundHalfEven(Math.fround(-lo / scale)));
  const y = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = sat(roundHalfEven(Math.fround(x[i] / scale)) + zeroPoint);
  return { y, scale, zeroPoint };
}

/** MatMulNBits: W[n, k] = (code - zeroPoint) * scale of its block; A [.., K] x W^T. */
export function matmulNBits(a: Float32Array, aShape: readonly number[], b: Uint8Array, scales: Float32Array, zp: Uint8Array | null, K: number, N: number, bs: number): [F, number[]] {
  const nb = K / bs;
  const w = new Float64Array(K * N); // [K, N]
  for (let n = 0; n < N; n++) {
    for (let blk = 0; blk < nb; blk++) {
      const z = zp ? (zp[n * Math.ceil(nb / 2) + (blk >> 1)] >> ((blk & 1) * 4)) & 15 : 8;
      const s = scales[n * nb + blk];
      for (let j = 0; j < bs; j++) {
        const byte = b[(n * nb + blk) * (bs / 2) + (j >> 1)];
        const code = (byte >> ((j & 1) * 4)) & 15;
        w[(blk * bs + j) * N + n] = (code - z) * s;
      }
    }
  }
  const M = numel(aShape.slice(0, -1));
  const [out] = matmul(a, [M, K], w, [K, N]);
  return [out, [...aShape.slice(0, -1), N]];
}

/** Scaled dot-product attention with grouped-query heads and bottom-right-aligned causal masking. */
export function attention(q: F, qs: readonly number[], k: F, ks: readonly number[], v: F, vs: readonly number[], causal: boolean, scale?: number): [F, number[]] {
  const [B, Hq, S, D] = qs;
  const [, Hkv, T] = ks;
  const Dv = vs[3];
  const G = Hq / Hkv;
  const sc = scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * Hq * S * Dv);
  const p = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / G);
      for (let i = 0; i < S; i++) {
        let m = -Infinity;
        for (let j = 0; j < T; j++) {
          if (causal && j > i + (T - S)) {
            p[j] = -Infinity;
            continue;
          }
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[((b * Hq + h) * S + i) * D + d] * k[((b * Hkv + kh) * T + j) * D + d];
          p[j] = dot * sc;
          m = Math.max(m, p[j]);
        }
        let s = 0;
        for (let j = 0; j < T; j++) s += p[j] = Math.exp(p[j] - m);
        for (let d = 0; d < Dv; d++) {
          let acc = 0;
          for (let j = 0; j < T; j++) acc += p[j] * v[((b * Hkv + kh) * T + j) * Dv + d];
          out[((b * Hq + h) * S + i) * Dv + d] = acc / s;
        }
      }
    }
  }
  return [out, [B, Hq, S, Dv]];
}
