/** Element types of the engine: storage size per dtype and the IEEE 754 layout of the float ones. */

/** bool: one byte per element, 0 or 1 (the results of comparisons, a mask). */
export type DType = 'fp32' | 'fp16' | 'bf16' | 'int8' | 'uint8' | 'int32' | 'int4' | 'nf4' | 'bool';

export const DTYPES: readonly DType[] = Object.freeze([
  'fp32', 'fp16', 'bf16', 'int8', 'uint8', 'int32', 'int4', 'nf4', 'bool',
] as const);

const BITS: Readonly<Record<DType, number>> = {
  fp32: 32, fp16: 16, bf16: 16, int8: 8, uint8: 8, int32: 32, int4: 4, nf4: 4, bool: 8,
};

export function bitsOf(d: DType): number {
  return BITS[d];
}

/** int4 and nf4 store two codes per byte (see packed4.ts). */
export function isPacked4(d: DType): boolean {
  return d === 'int4' || d === 'nf4';
}

/** nf4 is false: its codes are indices into a float table, not floats one can do arithmetic on. */
export function isFloat(d: DType): d is FloatDType {
  return d === 'fp32' || d === 'fp16' || d === 'bf16';
}

/** Exact bytes for numel elements; a packed 4-bit tensor with odd numel still needs the last byte. */
export function byteSize(d: DType, numel: number): number {
  if (!Number.isSafeInteger(numel) || numel < 0) {
    throw new RangeError(`byteSize: numel must be a non-negative integer, got ${numel}`);
  }
  return isPacked4(d) ? Math.ceil(numel / 2) : numel * (BITS[d] / 8);
}

export function parseDType(s: string): DType {
  if ((DTYPES as readonly string[]).includes(s)) return s as DType;
  throw new TypeError(`unknown dtype ${JSON.stringify(s)}; valid dtypes: ${DTYPES.join(', ')}`);
}

export type FloatDType = 'fp32' | 'fp16' | 'bf16';

export interface FloatFormat {
  readonly exponentBits: number;
  /** Stored fraction bits, excluding the implicit leading 1. */
  readonly mantissaBits: number;
  readonly bias: number;
  readonly maxFinite: number;
  readonly smallestNormal: number;
  readonly smallestSubnormal: number;
  /** Gap between 1 and the next representable value. */
  readonly epsilon: number;
}

// Derived from the bit layout so a wrong constant cannot hide here; every result is a power of two
// (or 2 - 2^-m times one), hence exact in a double.
function layout(exponentBits: number, mantissaBits: number): FloatFormat {
  const bias = 2 ** (exponentBits - 1) - 1;
  return Object.freeze({
    exponentBits,
    mantissaBits,
    bias,
    // All-ones exponent is reserved for inf/NaN, so the largest usable exponent equals the bias.
    maxFinite: (2 - 2 ** -mantissaBits) * 2 ** bias,
    smallestNormal: 2 ** (1 - bias),
    smallestSubnormal: 2 ** (1 - bias - mantissaBits),
    epsilon: 2 ** -mantissaBits,
  });
}

export const FLOAT_FORMATS: Readonly<Record<FloatDType, FloatFormat>> = Object.freeze({
  fp32: layout(8, 23),
  fp16: layout(5, 10),
  bf16: layout(8, 7),
});

export function floatInfo(d: FloatDType): FloatFormat {
  if (!isFloat(d)) {
    throw new TypeError(`floatInfo: ${JSON.stringify(d)} is not a float dtype; valid: fp32, fp16, bf16`);
  }
  return FLOAT_FORMATS[d];
}
