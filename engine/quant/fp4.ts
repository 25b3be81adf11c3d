/**
 * FP4 as bitsandbytes defines it (Dettmers et al., "QLoRA", 2023, the fp4 baseline of Table 2; bitsandbytes'
 * dQuantizeFP4 / fp4_dequantization_lut in csrc/kernels.cu): 1 sign bit, 2 exponent bits, 1 mantissa bit (E2M1) with
 * its own bias, the magnitudes {0, 0.0625, 2, 3, 4, 6, 8, 12} divided by 12 so the largest is 1. Its codes are not
 * sorted by value: bit 3 is the sign, and 0b1000 is -0.
 */
import { codebookDequantize, codebookQuantize, countAbove, type Codebook4, type Quantize4Options, type Quantized4 } from './codebook4.ts';

/** Level of each code, as bitsandbytes' fp4 table lists it (its `0.66666667f` etc. as float32). */
export const FP4_CODE: Float32Array = Float32Array.of(
  0, 0.005208333333, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25,
  -0, -0.005208333333, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25,
);

/**
 * bitsandbytes' thresholds on |v|, by rising magnitude. Not the float32 midpoints of the levels: the kernel's
 * literals (`0.583333f`, `0.00260417f`, ...) are rounded decimals, and codes must match its output, so they are kept.
 */
export const FP4_PIVOTS: Float32Array = Float32Array.of(0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333);

/** The unsigned code of each magnitude rank 0..7: 0, 0.0052, 0.167, 0.25, 0.333, 0.5, 0.667, 1. */
const MAGNITUDE_CODE = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

export const FP4: Codebook4 = {
  name: 'fp4',
  values: FP4_CODE,
  // A negative value takes the sign bit even when it rounds to zero (-0), as bitsandbytes does.
  encode: (v) => (v < 0 ? 0b1000 : 0) + MAGNITUDE_CODE[countAbove(Math.abs(v), FP4_PIVOTS)],
};

/** x -> FP4 codes two per byte and an fp32 absmax per block of blockSize (default 64). */
export function fp4Quantize(x: Float32Array, opts: Quantize4Options = {}): Quantized4 {
  return codebookQuantize(x, FP4, opts, 'fp4Quantize');
}

export function fp4Dequantize(q: Quantized4): Float32Array {
  return codebookDequantize(q, FP4, 'fp4Dequantize');
}
