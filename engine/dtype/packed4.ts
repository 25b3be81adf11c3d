/**
 * 4-bit codes two per byte, and the NF4 code book (QLoRA).
 *
 * Nibble order: the engine stores element 2i in the LOW nibble of byte i and element 2i + 1 in the high nibble,
 * the layout ONNX Runtime's MatMulNBits reads (its blockwise quantizer packs `v0 | (v1 << 4)`; ONNX's INT4 type is
 * the same). bitsandbytes uses the opposite order: its 4-bit quantize kernel (kQuantizeBlockwise in
 * csrc/kernels.cu) writes the first element of a pair shifted left by 4, into the HIGH nibble, and its dequantize
 * kernels read `byte >> 4` first. So a bitsandbytes byte 0x12 holds the codes [1, 2]; here [1, 2] is 0x21. Bytes
 * taken from a bitsandbytes checkpoint must have their nibbles swapped before any function here reads them.
 * onnxruntime's MatMulBnb4 (contrib_ops/cpu/quantization/blockwise_quant_block_bnb4.h) keeps bitsandbytes' order:
 * it reads `byte >> 4` first. engine/quant/codebook4.ts packs either order and converts between them.
 */

/**
 * NormalFloat4 levels: quantiles of N(0, 1) rescaled to [-1, 1], with an exact zero
 * (Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023, Appendix E;
 * bitsandbytes `get_4bit_type('nf4')` in functional.py and `dDequantizeNF4` in csrc/kernels.cu).
 * Code i is the 4-bit index i; seven levels below zero, eight above, since zero must be exact.
 */
export const NF4_CODE: Float32Array = Float32Array.of(
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
);

/**
 * Index of the NF4 level nearest to x (x already divided by the block's absmax). A value exactly
 * halfway between two levels maps to the lower index; values outside [-1, 1] clamp to 0 or 15.
 * bitsandbytes compares a float32 against these midpoints rounded to float32 (NF4_PIVOTS in engine/quant/nf4.ts,
 * which nf4Quantize uses), so for a double x within half a float32 ulp of a midpoint the two can differ.
 */
export function nearestNf4(x: number): number {
  if (Number.isNaN(x)) throw new RangeError('nearestNf4: x is NaN');
  let i = 0;
  // Midpoints of two float32 levels are exact in a double, so ties are genuine ties.
  while (i < 15 && x > (NF4_CODE[i] + NF4_CODE[i + 1]) / 2) i++;
  return i;
}

/** For kernels that consume whole bytes (e.g. a matmul over K with K/2 bytes per row). */
export function assertEvenPack(numel: number, what: string): void {
  if (!Number.isSafeInteger(numel) || numel < 0 || numel % 2 !== 0) {
    throw new RangeError(`${what}: packed 4-bit data needs an even element count, got ${numel}`);
  }
}

function checkNumel(bytes: Uint8Array, numel: number, fn: string): void {
  if (!Number.isSafeInteger(numel) || numel < 0 || Math.ceil(numel / 2) > bytes.length) {
    throw new RangeError(`${fn}: numel ${numel} needs ${Math.ceil(numel / 2)} bytes, got ${bytes.length}`);
  }
}

/** Codes 0..15 -> ceil(n/2) bytes; element 2i in the low nibble of byte i (MatMulNBits' order), the odd tail's high nibble 0. */
export function pack4(values: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(values.length / 2));
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > 15) throw new RangeError(`pack4: values[${i}] = ${v} is not a 4-bit code (0..15)`);
    out[i >>> 1] |= (i & 1) === 0 ? v : v << 4;
  }
  return out;
}

export function unpack4(bytes: Uint8Array, numel: number): Uint8Array {
  checkNumel(bytes, numel, 'unpack4');
  const out = new Uint8Array(numel);
  for (let i = 0; i < numel; i++) {
    const b = bytes[i >>> 1];
    out[i] = (i & 1) === 0 ? b & 0x0f : b >>> 4;
  }
  return out;
}

/** Signed -8..7 stored as the two's complement nibble, as in ONNX's INT4 tensor type. */
export function packInt4(values: Int8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(values.length / 2));
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < -8 || v > 7) throw new RangeError(`packInt4: values[${i}] = ${v} is outside int4 (-8..7)`);
    const nibble = v & 0x0f;
    out[i >>> 1] |= (i & 1) === 0 ? nibble : nibble << 4;
  }
  return out;
}

export function unpackInt4(bytes: Uint8Array, numel: number): Int8Array {
  checkNumel(bytes, numel, 'unpackInt4');
  const out = new Int8Array(numel);
  for (let i = 0; i < numel; i++) {
    const b = bytes[i >>> 1];
    const nibble = (i & 1) === 0 ? b & 0x0f : b >>> 4;
    out[i] = (nibble << 28) >> 28; // bit 3 is the sign
  }
  return out;
}
