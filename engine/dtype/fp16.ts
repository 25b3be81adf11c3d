/** IEEE 754 binary16 (half precision): bit-exact conversion with round-to-nearest-even. */

// One shared scratch word: reading a number's float32 bits without allocating per call.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * fp32 bit pattern -> fp16 bit pattern. Works on bits rather than the number so NaN sign and
 * payload survive (a JS number may canonicalize NaN).
 */
export function fp32BitsToFp16(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;

  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    // Set the quiet bit: truncating the payload could otherwise leave zero mantissa, i.e. inf.
    return sign | 0x7e00 | (mant >>> 13);
  }
  // |x| >= 2^16 lies beyond 65520, the midpoint between 65504 and 2^16, so it always overflows.
  if (exp >= 0x8f) return sign | 0x7c00;

  if (exp >= 0x71) {
    // Normal fp16 (|x| >= 2^-14). A rounding carry out of the mantissa bumps the exponent,
    // which is exactly right, including 65504 + half ulp -> 0x7c00 (inf).
    let h = ((exp - 0x70) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
    return sign | h;
  }

  // Subnormal fp16: the value in units of 2^-24 is full * 2^(exp - 126).
  const shift = 0x7e - exp;
  // full < 2^24, so shifting by 25 or more leaves less than half a unit: rounds to signed zero.
  if (shift > 24) return sign;
  const full = exp === 0 ? mant : mant | 0x800000;
  let h = full >>> shift;
  const rest = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  // A carry from 0x3ff to 0x400 lands on the smallest normal, as it should.
  if (rest > half || (rest === half && (h & 1) !== 0)) h++;
  return sign | h;
}

/** fp16 bit pattern -> fp32 bit pattern; every fp16 value is exactly representable in fp32. */
export function fp16ToFp32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;

  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 0x70) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;

  // fp16 subnormals are normal in fp32: shift until the implicit bit appears.
  let e = 0x71;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

/** x is first rounded to float32 (Math.fround), then to fp16; returns the 16-bit pattern. */
export function fp32ToFp16(x: number): number {
  scratchF32[0] = x;
  return fp32BitsToFp16(scratchU32[0]);
}

export function fp16ToFp32(h: number): number {
  scratchU32[0] = fp16ToFp32Bits(h & 0xffff);
  return scratchF32[0];
}

export function fp32ArrayToFp16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const out = dst ?? new Uint16Array(src.length);
  if (out.length < src.length) {
    throw new RangeError(`fp32ArrayToFp16: dst holds ${out.length} elements, need ${src.length}`);
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = fp32BitsToFp16(bits[i]);
  return out;
}

// 65,536 entries (256 KiB), built on first use: a lookup beats re-deriving subnormals per element.
let decodeTable: Uint32Array | undefined;

function fp16DecodeTable(): Uint32Array {
  if (decodeTable === undefined) {
    decodeTable = new Uint32Array(0x10000);
    for (let h = 0; h < 0x10000; h++) decodeTable[h] = fp16ToFp32Bits(h);
  }
  return decodeTable;
}

export function fp16ArrayToFp32(src: Uint16Array, dst?: Float32Array): Float32Array {
  const out = dst ?? new Float32Array(src.length);
  if (out.length < src.length) {
    throw new RangeError(`fp16ArrayToFp32: dst holds ${out.length} elements, need ${src.length}`);
  }
  const table = fp16DecodeTable();
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = table[src[i]];
  return out;
}
