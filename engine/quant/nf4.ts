/**
 * NormalFloat4 (NF4; Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023, section 3 and
 * Appendix E): 16 levels at quantiles of N(0, 1) scaled to [-1, 1], with an exact zero, quantized in absmax blocks.
 * The levels are bitsandbytes' (`get_4bit_type('nf4')` in bitsandbytes/functional.py, the `nf4_dequantization_lut`
 * of csrc/kernels.cu); they live in engine/dtype/packed4.ts as NF4_CODE, the engine's one copy.
 */
import { NF4_CODE } from '../dtype/packed4.ts';
import { codebookDequantize, codebookQuantize, countAbove, type Codebook4, type Quantize4Options, type Quantized4 } from './codebook4.ts';

export { NF4_CODE };

/**
 * bitsandbytes' decision thresholds (dQuantizeNF4 in csrc/kernels.cu, copied by onnxruntime's QuantizeOneNF4): the
 * float64 midpoints of neighbouring levels, rounded to float32 because the kernel compares a float against float
 * literals. A value above a threshold takes the upper level, so a value exactly on one takes the LOWER level.
 */
export const NF4_PIVOTS: Float32Array = Float32Array.from({ length: 15 }, (_, i) => (NF4_CODE[i] + NF4_CODE[i + 1]) / 2);

/** Levels are sorted by code, so the code is the number of thresholds below v. */
export const NF4: Codebook4 = { name: 'nf4', values: NF4_CODE, encode: (v) => countAbove(v, NF4_PIVOTS) };

/** x (any length) -> NF4 codes two per byte and an fp32 absmax per block of blockSize (default 64). */
export function nf4Quantize(x: Float32Array, opts: Quantize4Options = {}): Quantized4 {
  return codebookQuantize(x, NF4, opts, 'nf4Quantize');
}

/** NF4_CODE[code] * absmax of the block, as float32. */
export function nf4Dequantize(q: Quantized4): Float32Array {
  return codebookDequantize(q, NF4, 'nf4Dequantize');
}
