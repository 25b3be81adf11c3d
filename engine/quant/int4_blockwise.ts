/**
 * 4-bit blockwise absmax weights in onnxruntime's MatMulNBits layout (weight-only int4 as in GPTQ/AWQ kernels; Frantar
 * et al. 2023, Lin et al. 2024): each block of blockSize weights along K in one output column shares an fp32 scale
 * absmax / 7, codes round(w / scale) in -7..7 are stored plus 8 (MatMulNBits' default zero point) two per byte.
 * Quantized on the host once, when a layer is loaded; the product runs on the device.
 */
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ShapeError } from '../errors.ts';
import { pack4 } from '../dtype/packed4.ts';
import { assertFinite, assertFloat, QuantizationError } from './errors.ts';
import { MIN_SCALE } from './nodes.ts';
import { bytesOf, type QuantBytes } from './int8.ts';

export interface Int4Weight {
  /** uint8 [N, K / blockSize, blockSize / 2]: column n's codes, block by block, low nibble first. */
  readonly codes: Tensor;
  /** fp32 [N * K / blockSize]: scale of column n, block b at n * (K / blockSize) + b. */
  readonly scales: Tensor;
  readonly K: number;
  readonly N: number;
  readonly blockSize: number;
  readonly label: string;
  readonly bytes: QuantBytes;
}

/** Round half to even, as the int8 path's QuantizeLinear does. */
function rint(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** W [K, N] (y = x @ W) -> 4-bit codes and scales on `device` (tag 'weights'); blockSize a power of two >= 16 dividing K. */
export function quantizeWeightInt4(device: Device, w: Tensor, opts: { blockSize?: number; label?: string } = {}): Int4Weight {
  const op = 'quantizeWeightInt4';
  const bs = opts.blockSize ?? 32;
  assertFloat(op, w, 'w');
  if (w.shape.length !== 2) throw new ShapeError(op, [w.shape], 'the weight must be 2-D [K, N], used as x @ w');
  if (!Number.isInteger(bs) || bs < 16 || (bs & (bs - 1)) !== 0) throw new QuantizationError(`${op}: blockSize must be a power of two >= 16 (MatMulNBits), got ${bs}`);
  const [K, N] = w.shape;
  if (K % bs !== 0) throw new ShapeError(op, [w.shape], `K=${K} must be a multiple of blockSize=${bs}`);
  assertFinite(op, w);
  const v = w.toFloat32();
  const nb = K / bs;
  const codes = new Uint8Array(N * K);
  const scales = new Float32Array(N * nb);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < nb; b++) {
      let amax = 0;
      for (let j = 0; j < bs; j++) amax = Math.max(amax, Math.abs(v[(b * bs + j) * N + n]));
      const s = Math.max(Math.fround(amax / 7), MIN_SCALE);
      scales[n * nb + b] = s;
      for (let j = 0; j < bs; j++) codes[n * K + b * bs + j] = rint(Math.fround(v[(b * bs + j) * N + n] / s)) + 8;
    }
  }
  const label = opts.label ?? (w.label || 'w');
  const c = device.tensor(pack4(codes), [N, nb, bs / 2], 'uint8', { tag: 'weights', label: `${label}.q4` });
  const s = device.tensor(scales, [N * nb], 'fp32', { tag: 'weights', label: `${label}.scales` });
  return { codes: c, scales: s, K, N, blockSize: bs, label, bytes: { ...bytesOf(c, s), bitsPerValue: ((c.bytes + s.bytes) * 8) / (K * N) } };
}

/** The weights the codes stand for, [K, N] in float64: (code - 8) * scale. */
export function dequantizeInt4(w: Int4Weight): Float64Array {
  const { K, N, blockSize: bs } = w;
  const packed = w.codes.data as Uint8Array;
  const scales = w.scales.data as Float32Array;
  const out = new Float64Array(K * N);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const i = n * K + k;
      const code = (packed[i >> 1] >> ((i & 1) * 4)) & 15;
      out[k * N + n] = (code - 8) * scales[n * (K / bs) + Math.floor(k / bs)];
    }
  }
  return out;
}
