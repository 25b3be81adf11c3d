/**
 * Double quantization (Dettmers et al., "QLoRA", NeurIPS 2023, section 3): the fp32 absmax constants of a 4-bit
 * tensor are themselves quantized, minus their mean, to 8 bits in blocks of 256 with one fp32 scale per block, which
 * cuts the constants from 32/64 = 0.5 to 8/64 + 32/(64 * 256) = 0.127 bits per parameter.
 *
 * The paper says "8-bit Floats"; bitsandbytes, whose code QLoRA ran, quantizes with its dynamic 8-bit map
 * (create_dynamic_map, Dettmers 2016: a sign, a run of zeros marking a decimal exponent, then a linear fraction;
 * `quantize_4bit(..., compress_statistics=True)` calls `quantize_blockwise(absmax - mean, blocksize=256)`). That map
 * is implemented here, so the codes are the ones a bitsandbytes checkpoint's `nested_absmax` holds.
 */
import { QuantizationError } from './errors.ts';
import { checkBlockSize } from './codebook4.ts';

const f = Math.fround;

/** torch.linspace in float32: the first half counted from start, the second from end (so both ends are exact). */
function linspace32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const step = f((end - start) / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < half ? f(f(start) + f(step * i)) : f(f(end) - f(step * (steps - i - 1)));
  return out;
}

/**
 * bitsandbytes' signed dynamic map (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)), its steps
 * taken in float32 as torch takes them: for exponent i = 0..6, 2^i fraction midpoints of linspace(0.1, 1, 2^i + 1)
 * scaled by 10^(i - 6), both signs; then 0 and 1; sorted. 256 values in [-0.993, 1].
 */
function dynamicMap(): Float32Array {
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const b = linspace32(0.1, 1, 2 ** i + 1);
    const scale = f(10 ** (i - 6));
    for (let j = 0; j + 1 < b.length; j++) {
      const mean = f(f(b[j] + b[j + 1]) / 2);
      data.push(f(scale * mean), f(-scale * mean));
    }
  }
  data.push(0, 1);
  return Float32Array.from(data.sort((p, q) => p - q));
}

export const DYNAMIC_MAP: Float32Array = dynamicMap();
const ZERO_CODE = DYNAMIC_MAP.indexOf(0);

/**
 * bitsandbytes' nearest-code search over the sorted 256-entry map (dQuantize without rounding noise): a binary
 * search from index 127, then the nearer of the last two entries, the midpoint computed in float32. A value exactly
 * on a midpoint takes the entry the search ended on.
 */
export function encodeDynamic(x: number): number {
  const m = DYNAMIC_MAP;
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let lower = -1;
  let upper = 1;
  let val = m[pivot];
  for (let step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = m[pivot];
  }
  if (upperPivot === 255) upper = m[255];
  if (lowerPivot === 0) lower = m[0];
  if (x > val) return x > f(f(upper + val) * 0.5) ? upperPivot : pivot;
  return x < f(f(lower + val) * 0.5) ? lowerPivot : pivot;
}

export interface DoubleQuantized {
  /** uint8, one per absmax: an index into DYNAMIC_MAP. */
  readonly codes: Uint8Array;
  /** fp32, one per block of blockSize2 absmax: the block's max |absmax - mean|. */
  readonly scale: Float32Array;
  /** fp32 mean of the absmax values, subtracted first so the 8-bit codes are used on both sides of zero. */
  readonly mean: number;
  readonly blockSize2: number;
  readonly length: number;
}

/** absmax (fp32, positive) -> 8-bit codes of absmax - mean in blocks of blockSize2 (default 256). */
export function doubleQuantize(absmax: Float32Array, opts: { blockSize2?: number } = {}): DoubleQuantized {
  const op = 'doubleQuantize';
  const bs = checkBlockSize(op, opts.blockSize2 ?? 256);
  const n = absmax.length;
  if (n === 0) throw new QuantizationError(`${op}: there are no absmax values`);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = absmax[i];
    if (!(v >= 0 && v < Infinity)) throw new QuantizationError(`${op}: absmax[${i}] = ${v}; absmax values are finite and >= 0`);
    sum += v;
  }
  const mean = f(sum / n);
  const nb = Math.ceil(n / bs);
  const scale = new Float32Array(nb);
  const codes = new Uint8Array(n);
  const centred = absmax.map((v) => v - mean);
  for (let b = 0; b < nb; b++) {
    const end = Math.min(n, (b + 1) * bs);
    let m = 0;
    for (let i = b * bs; i < end; i++) m = Math.max(m, Math.abs(centred[i]));
    scale[b] = m;
    const inv = m === 0 ? 0 : f(1 / m);
    for (let i = b * bs; i < end; i++) codes[i] = m === 0 ? ZERO_CODE : encodeDynamic(f(centred[i] * inv));
  }
  return { codes, scale, mean, blockSize2: bs, length: n };
}

/** DYNAMIC_MAP[code] * scale + mean, each step in float32 (as bitsandbytes' dequantize_blockwise, then += offset). */
export function doubleDequantize(d: DoubleQuantized): Float32Array {
  const op = 'doubleDequantize';
  const bs = checkBlockSize(op, d.blockSize2);
  if (d.codes.length !== d.length || d.scale.length !== Math.ceil(d.length / bs)) {
    throw new QuantizationError(`${op}: ${d.length} codes in blocks of ${bs} need ${d.length} codes and ${Math.ceil(d.length / bs)} scales, got ${d.codes.length} and ${d.scale.length}`);
  }
  const out = new Float32Array(d.length);
  for (let i = 0; i < d.length; i++) out[i] = f(DYNAMIC_MAP[d.codes[i]] * d.scale[Math.floor(i / bs)]) + d.mean;
  return out;
}

export interface BitsOptions {
  /** Values per absmax; default 64. */
  blockSize?: number;
  doubleQuant?: boolean;
  /** absmax values per second-level scale; default 256. */
  blockSize2?: number;
  /**
   * The tensor's element count: the per-tensor parts are then counted too (whole blocks rounded up, the 4-byte mean,
   * and the 256-entry fp32 map a double-quantized tensor carries, as bitsandbytes' `nested_quant_map` does).
   * Absent: the asymptotic bits per parameter of the paper.
   */
  numel?: number;
}

export interface BitsPerParameter {
  /** 4 bits of code per value (an odd count pays half a byte more, with numel). */
  codes: number;
  /** absmax constants: 32 / blockSize, or 8 / blockSize + 32 / (blockSize * blockSize2) with double quantization. */
  constants: number;
  /** With numel: the mean and the dynamic map, spread over the tensor. */
  perTensor: number;
  total: number;
}

/**
 * Storage of a 4-bit blockwise tensor in bits per parameter (QLoRA, section 3: 4 + 0.5 = 4.5 with blockSize 64;
 * 4 + 0.127 with double quantization). With numel, the exact bytes of nf4Quantize (+ doubleQuantize) times 8 / numel.
 */
export function bitsPerParameter(opts: BitsOptions = {}): BitsPerParameter {
  const op = 'bitsPerParameter';
  const bs = checkBlockSize(op, opts.blockSize ?? 64);
  const bs2 = checkBlockSize(op, opts.blockSize2 ?? 256);
  const n = opts.numel;
  if (n === undefined) {
    const constants = opts.doubleQuant ? 8 / bs + 32 / (bs * bs2) : 32 / bs;
    return { codes: 4, constants, perTensor: 0, total: 4 + constants };
  }
  if (!Number.isSafeInteger(n) || n < 1) throw new QuantizationError(`${op}: numel must be a positive integer, got ${n}`);
  const nb = Math.ceil(n / bs);
  // Whole bits first, one division each, so total * numel / 8 is the byte count exactly.
  const codes = 8 * Math.ceil(n / 2);
  const constants = opts.doubleQuant ? 8 * nb + 32 * Math.ceil(nb / bs2) : 32 * nb;
  const perTensor = opts.doubleQuant ? 32 + 32 * DYNAMIC_MAP.length : 0;
  return { codes: codes / n, constants: constants / n, perTensor: perTensor / n, total: (codes + constants + perTensor) / n };
}
