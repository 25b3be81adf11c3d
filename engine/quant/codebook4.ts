/**
 * Blockwise 4-bit codebook quantization (Dettmers et al., "QLoRA", NeurIPS 2023, section 3; bitsandbytes'
 * quantize_4bit): the flat tensor is cut into blocks of blockSize values, each block is divided by its absmax, and
 * every normalized value becomes the 4-bit index of a level in a 16-entry code book (NF4, FP4, uniform int4), two
 * indices per byte. The last block may be partial; an odd element count leaves the final nibble holding the code of 0.
 */
import { QuantizationError } from './errors.ts';

/** Which nibble of a byte holds the first element of a pair. */
export const PACKINGS = ['bitsandbytes', 'onnxruntime'] as const;
/**
 * 'bitsandbytes': the first element in the HIGH nibble (kQuantizeBlockwise writes `q0 << 4 | q1`; MatMulBnb4 reads
 * `byte >> 4` first). 'onnxruntime': the first element in the LOW nibble (MatMulNBits, ONNX INT4, engine/dtype/packed4).
 */
export type Packing = (typeof PACKINGS)[number];

export interface Codebook4 {
  readonly name: string;
  /** The level each 4-bit code stands for, in [-1, 1], indexed by code. */
  readonly values: Float32Array;
  /** The code of a normalized value v = x / absmax (a float32, in [-1, 1] up to rounding). */
  encode(v: number): number;
}

export interface Quantized4 {
  /** ceil(length / 2) bytes, two codes each, in `packing`'s nibble order. */
  readonly codes: Uint8Array;
  /** fp32, one per block: ceil(length / blockSize). */
  readonly absmax: Float32Array;
  readonly blockSize: number;
  readonly length: number;
  readonly packing: Packing;
  /** The code book's name ('nf4', 'fp4', 'int4'). */
  readonly format: string;
}

export interface Quantize4Options {
  /** Values per absmax; an even positive integer. Default 64 (bitsandbytes' default for 4-bit). */
  blockSize?: number;
  /** Default 'bitsandbytes'. */
  packing?: Packing;
}

/** A NaN or infinity in a block: its absmax would be inf or NaN and every value of the block garbage. */
export class NonFiniteBlockError extends QuantizationError {
  override name = 'NonFiniteBlockError';
  constructor(
    readonly op: string,
    readonly blockIndex: number,
    /** Flat index of the first non-finite element. */
    readonly index: number,
    readonly value: number,
  ) {
    super(`${op}: block ${blockIndex} holds ${value} at element ${index}; 4-bit quantization needs finite values`);
  }
}

export function checkBlockSize(op: string, bs: unknown): number {
  if (typeof bs !== 'number' || !Number.isSafeInteger(bs) || bs < 2 || bs % 2 !== 0) {
    throw new QuantizationError(`${op}: blockSize must be an even positive integer (a block starts on a byte), got ${String(bs)}`);
  }
  return bs;
}

export function checkPacking(op: string, p: unknown): Packing {
  if (!(PACKINGS as readonly unknown[]).includes(p)) throw new QuantizationError(`${op}: unknown packing ${JSON.stringify(p)}; expected one of ${PACKINGS.join(', ')}`);
  return p as Packing;
}

/** Codes 0..15 -> ceil(n / 2) bytes in `packing`'s nibble order; `pad` fills the last nibble of an odd count. */
export function packNibbles(codes: Uint8Array, packing: Packing, pad = 0): Uint8Array {
  const out = new Uint8Array(Math.ceil(codes.length / 2));
  const hiFirst = packing === 'bitsandbytes';
  for (let i = 0; i < out.length; i++) {
    const a = codes[2 * i];
    const b = 2 * i + 1 < codes.length ? codes[2 * i + 1] : pad;
    out[i] = hiFirst ? (a << 4) | b : a | (b << 4);
  }
  return out;
}

export function unpackNibbles(bytes: Uint8Array, length: number, packing: Packing): Uint8Array {
  if (!Number.isSafeInteger(length) || length < 0 || Math.ceil(length / 2) !== bytes.length) {
    throw new QuantizationError(`unpackNibbles: ${length} codes need ${Math.ceil(length / 2)} bytes, got ${bytes.length}`);
  }
  const out = new Uint8Array(length);
  const hiFirst = packing === 'bitsandbytes';
  for (let i = 0; i < length; i++) {
    const b = bytes[i >> 1];
    const first = (i & 1) === 0;
    out[i] = first === hiFirst ? b >> 4 : b & 15;
  }
  return out;
}

/** The same codes in the other nibble order: each byte's nibbles swapped (a new Quantized4; q is untouched). */
export function repack(q: Quantized4, packing: Packing): Quantized4 {
  checkPacking('repack', packing);
  if (packing === q.packing) return q;
  const codes = q.codes.map((b) => ((b & 15) << 4) | (b >> 4));
  return { ...q, codes, packing };
}

/**
 * x -> codes and one fp32 absmax per block. As bitsandbytes' kernel does, a value is normalized by multiplying with
 * the float32 reciprocal of its block's absmax (not by dividing), so the codes agree with its output bit for bit.
 * A block of zeros keeps absmax 0 and the code of 0 (onnxruntime's choice; bitsandbytes' 0 * inf gives NaN there).
 */
export function codebookQuantize(x: Float32Array, book: Codebook4, opts: Quantize4Options = {}, op = `${book.name}Quantize`): Quantized4 {
  if (!(x instanceof Float32Array)) throw new QuantizationError(`${op}: x must be a Float32Array`);
  const bs = checkBlockSize(op, opts.blockSize ?? 64);
  const packing = checkPacking(op, opts.packing ?? 'bitsandbytes');
  const n = x.length;
  if (n === 0) throw new QuantizationError(`${op}: x is empty: there is no absmax to take`);
  const nb = Math.ceil(n / bs);
  const absmax = new Float32Array(nb);
  const codes = new Uint8Array(n);
  const zero = book.encode(0);
  for (let b = 0; b < nb; b++) {
    const end = Math.min(n, (b + 1) * bs);
    let m = 0;
    for (let i = b * bs; i < end; i++) {
      const v = x[i];
      if (v - v !== 0) throw new NonFiniteBlockError(op, b, i, v);
      m = Math.max(m, Math.abs(v));
    }
    absmax[b] = m;
    const inv = m === 0 ? 0 : Math.fround(1 / m);
    for (let i = b * bs; i < end; i++) codes[i] = m === 0 ? zero : book.encode(Math.fround(x[i] * inv));
  }
  return { codes: packNibbles(codes, packing, zero), absmax, blockSize: bs, length: n, packing, format: book.name };
}

/** Checks that q is a well-formed Quantized4 of `book` (sizes agree, packing known). */
export function checkQuantized4(op: string, q: Quantized4, book: Codebook4): void {
  if (q.format !== book.name) throw new QuantizationError(`${op}: these codes are ${q.format}, not ${book.name}`);
  const bs = checkBlockSize(op, q.blockSize);
  checkPacking(op, q.packing);
  if (!Number.isSafeInteger(q.length) || q.length < 1) throw new QuantizationError(`${op}: length must be a positive integer, got ${q.length}`);
  if (q.codes.length !== Math.ceil(q.length / 2)) throw new QuantizationError(`${op}: ${q.length} values need ${Math.ceil(q.length / 2)} code bytes, got ${q.codes.length}`);
  if (q.absmax.length !== Math.ceil(q.length / bs)) throw new QuantizationError(`${op}: ${q.length} values in blocks of ${bs} need ${Math.ceil(q.length / bs)} absmax, got ${q.absmax.length}`);
}

/** codes -> level * absmax, in float32 (each product rounded once, as the kernels compute it). */
export function codebookDequantize(q: Quantized4, book: Codebook4, op = `${book.name}Dequantize`): Float32Array {
  checkQuantized4(op, q, book);
  const codes = unpackNibbles(q.codes, q.length, q.packing);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = book.values[codes[i]] * q.absmax[Math.floor(i / q.blockSize)];
  return out;
}

/** The index whose threshold x first fails to exceed: `x > pivots[i]` moves up one level (ties stay below). */
export function countAbove(x: number, pivots: Float32Array): number {
  let i = 0;
  while (i < pivots.length && x > pivots[i]) i++;
  return i;
}
