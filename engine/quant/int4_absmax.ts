/**
 * Uniform symmetric int4 with absmax blocks, as a code book (the round-to-nearest baseline QLoRA compares NF4 with;
 * Dettmers & Zettlemoyer, "The case for 4-bit precision", 2023): code c stands for (c - 8) / 7, so a block's values
 * map to round(7 x / absmax) in -7..7; code 0 (-8/7) is never produced, which keeps the grid symmetric about 0.
 */
import { codebookDequantize, codebookQuantize, type Codebook4, type Quantize4Options, type Quantized4 } from './codebook4.ts';

export const INT4_CODE: Float32Array = Float32Array.from({ length: 16 }, (_, c) => (c - 8) / 7);

/** Round half to even, as ONNX Round and numpy's rint. */
function rint(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export const INT4_ABSMAX: Codebook4 = {
  name: 'int4',
  values: INT4_CODE,
  encode: (v) => Math.min(7, Math.max(-7, rint(Math.fround(v * 7)))) + 8,
};

export function int4AbsmaxQuantize(x: Float32Array, opts: Quantize4Options = {}): Quantized4 {
  return codebookQuantize(x, INT4_ABSMAX, opts, 'int4AbsmaxQuantize');
}

export function int4AbsmaxDequantize(q: Quantized4): Float32Array {
  return codebookDequantize(q, INT4_ABSMAX, 'int4AbsmaxDequantize');
}
