/** bfloat16 (Google Brain): the upper half of an fp32 word, rounded to nearest even. */

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** fp32 bit pattern -> bf16 bit pattern; works on bits so NaN sign and payload survive. */
export function fp32BitsToBf16(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) {
    // Quiet bit set: plain truncation of a NaN whose payload sits in the low half would give inf.
    return (b >>> 16) | 0x0040;
  }
  // Adding 0x7fff (+1 when the kept lsb is odd) carries into the upper half exactly when RNE
  // rounds up. bf16 shares fp32's exponent range, so subnormals need nothing special, and a carry
  // out of the largest finite value lands on the inf pattern. The sum stays below 2^32 for every
  // non-NaN input, so >>> cannot wrap.
  return ((b >>> 0) + 0x7fff + ((b >>> 16) & 1)) >>> 16;
}

export function bf16ToFp32Bits(h: number): number {
  return ((h & 0xffff) << 16) >>> 0;
}

/** x is first rounded to float32 (Math.fround), then to bf16; returns the 16-bit pattern. */
export function fp32ToBf16(x: number): number {
  scratchF32[0] = x;
  return fp32BitsToBf16(scratchU32[0]);
}

export function bf16ToFp32(h: number): number {
  scratchU32[0] = bf16ToFp32Bits(h);
  return scratchF32[0];
}

export function fp32ArrayToBf16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const out = dst ?? new Uint16Array(src.length);
  if (out.length < src.length) {
    throw new RangeError(`fp32ArrayToBf16: dst holds ${out.length} elements, need ${src.length}`);
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = fp32BitsToBf16(bits[i]);
  return out;
}

export function bf16ArrayToFp32(src: Uint16Array, dst?: Float32Array): Float32Array {
  const out = dst ?? new Float32Array(src.length);
  if (out.length < src.length) {
    throw new RangeError(`bf16ArrayToFp32: dst holds ${out.length} elements, need ${src.length}`);
  }
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}
