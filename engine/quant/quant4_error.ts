/**
 * Quantization error of the 4-bit code books on given data (QLoRA, Dettmers et al. 2023, section 3 and Table 2: NF4
 * is information-theoretically optimal for normally distributed weights, so it should beat FP4 and uniform int4 at the
 * same blocks and bits). Statistics are host reports in float64.
 */
import { QuantizationError } from './errors.ts';
import { codebookDequantize, codebookQuantize, type Codebook4, type Quantize4Options } from './codebook4.ts';
import { NF4 } from './nf4.ts';
import { FP4 } from './fp4.ts';
import { INT4_ABSMAX } from './int4_absmax.ts';

export interface Quant4Error {
  /** sqrt(mean (x - x̂)^2). */
  rmse: number;
  /** max |x - x̂|. */
  maxAbs: number;
  /** ||x - x̂||_F / ||x||_F (0 for an all-zero x, which every code book reproduces exactly). */
  relFrobenius: number;
}

export const CODEBOOKS_4BIT: Record<'nf4' | 'fp4' | 'int4', Codebook4> = { nf4: NF4, fp4: FP4, int4: INT4_ABSMAX };

/** The error of x̂ against x. */
export function quant4Error(x: ArrayLike<number>, xhat: ArrayLike<number>): Quant4Error {
  if (x.length !== xhat.length) throw new QuantizationError(`quant4Error: x has ${x.length} values, its reconstruction ${xhat.length}`);
  let sq = 0;
  let norm = 0;
  let maxAbs = 0;
  for (let i = 0; i < x.length; i++) {
    const e = x[i] - xhat[i];
    sq += e * e;
    norm += x[i] * x[i];
    maxAbs = Math.max(maxAbs, Math.abs(e));
  }
  return { rmse: x.length ? Math.sqrt(sq / x.length) : 0, maxAbs, relFrobenius: norm ? Math.sqrt(sq / norm) : 0 };
}

/** Quantizes x with each code book (same blocks, same packing) and measures the round trip's error. */
export function compare4bit(x: Float32Array, opts: Quantize4Options = {}): Record<'nf4' | 'fp4' | 'int4', Quant4Error> {
  const out = {} as Record<'nf4' | 'fp4' | 'int4', Quant4Error>;
  for (const [name, book] of Object.entries(CODEBOOKS_4BIT) as ['nf4' | 'fp4' | 'int4', Codebook4][]) {
    out[name] = quant4Error(x, codebookDequantize(codebookQuantize(x, book, opts), book));
  }
  return out;
}
