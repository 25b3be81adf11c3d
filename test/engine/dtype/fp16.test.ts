/** fp16 conversion checked bit for bit against numpy's float16 casts (test/fixtures/generate.py). */
import { describe, expect, it } from 'vitest';
import {
  fp16ArrayToFp32, fp16ToFp32, fp16ToFp32Bits, fp32ArrayToFp16, fp32BitsToFp16, fp32ToFp16,
} from '../../../engine/dtype/index.ts';
import { hex, isNaN32, readLE } from './fixtures.ts';

const isNaN16 = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

const decoded = readLE('fp16_all_to_fp32.bin', 4);
const inputs = readLE('fp32_inputs.bin', 4);
const expected16 = readLE('fp32_to_fp16.bin', 2);

describe('fp16 -> fp32', () => {
  it('decodes all 65,536 patterns exactly as numpy', () => {
    const bad: string[] = [];
    const viaArray = fp16ArrayToFp32(Uint16Array.from({ length: 0x10000 }, (_, h) => h));
    const arrayBits = new Uint32Array(viaArray.buffer);
    for (let h = 0; h < 0x10000; h++) {
      const want = decoded[h];
      const got = fp16ToFp32Bits(h);
      if (isNaN32(want)) {
        if (!isNaN32(got) || !isNaN32(arrayBits[h]) || !Number.isNaN(fp16ToFp32(h))) bad.push(hex(h));
      } else if (got !== want || arrayBits[h] !== want || !Object.is(fp16ToFp32(h), viaArray[h])) {
        bad.push(`${hex(h)}: ${hex(got)} != ${hex(want)}`);
      }
    }
    expect(bad.slice(0, 10)).toEqual([]);
  });

  it('fp16 -> fp32 -> fp16 is the identity on every non-NaN pattern', () => {
    const bad: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if (!isNaN16(h) && fp32ToFp16(fp16ToFp32(h)) !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
  });
});

describe('fp32 -> fp16', () => {
  it(`encodes all ${inputs.length} fixture inputs exactly as numpy astype(float16)`, () => {
    const src = new Float32Array(inputs.buffer);
    const viaArray = fp32ArrayToFp16(src);
    const bad: string[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const b = inputs[i];
      const got = fp32BitsToFp16(b);
      if (isNaN32(b)) {
        // Sign kept, quiet bit set; payload is not compared.
        const ok = isNaN16(got) && isNaN16(expected16[i]) && got >>> 15 === b >>> 31 && (got & 0x200) !== 0;
        if (!ok || viaArray[i] !== got) bad.push(`NaN ${hex(b)} -> ${hex(got)}`);
      } else if (got !== expected16[i] || viaArray[i] !== got || fp32ToFp16(src[i]) !== got) {
        bad.push(`${hex(b)}: ${hex(got)} != ${hex(expected16[i])}`);
      }
    }
    expect(bad.slice(0, 10)).toEqual([]);
  });

  it.each([
    ['max finite 65504', 65504, 0x7bff],
    ['65519.99 rounds down to 65504', 65519.99, 0x7bff],
    ['65520 is the tie above max: rounds to even, i.e. inf', 65520, 0x7c00],
    ['1e6 overflows', 1e6, 0x7c00],
    ['-1e6 overflows to -inf', -1e6, 0xfc00],
    ['+0', 0, 0x0000],
    ['-0 keeps its sign', -0, 0x8000],
    ['inf', Infinity, 0x7c00],
    ['-inf', -Infinity, 0xfc00],
    ['1', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['smallest normal 2^-14', 2 ** -14, 0x0400],
    ['smallest subnormal 2^-24', 2 ** -24, 0x0001],
    ['2^-25 is a tie: rounds to even 0', 2 ** -25, 0x0000],
    ['-2^-25 rounds to -0', -(2 ** -25), 0x8000],
    ['1.5 * 2^-25 rounds up to 2^-24', 1.5 * 2 ** -25, 0x0001],
    ['3 * 2^-25 is a tie: rounds to even 2 * 2^-24', 3 * 2 ** -25, 0x0002],
    ['largest subnormal + half ulp carries into the smallest normal', 2 ** -14 - 2 ** -25, 0x0400],
    ['1 + 2^-11 is a tie: rounds to even 1', 1 + 2 ** -11, 0x3c00],
    ['1 + 3 * 2^-11 is a tie: rounds to even 1 + 2^-9', 1 + 3 * 2 ** -11, 0x3c02],
    ['0.1', 0.1, 0x2e66],
  ])('%s', (_name, x, bits) => {
    expect(fp32ToFp16(x)).toBe(bits);
  });

  it('NaN stays a quiet NaN with its sign', () => {
    expect(isNaN16(fp32ToFp16(NaN))).toBe(true);
    // Payload only in bits that fp16 drops: plain truncation would yield inf.
    expect(fp32BitsToFp16(0x7f800001)).toBe(0x7e00);
    expect(fp32BitsToFp16(0xff800001)).toBe(0xfe00);
    expect(fp32BitsToFp16(0xffc00000)).toBe(0xfe00);
  });

  it('decodes the named values back exactly', () => {
    expect(fp16ToFp32(0x7bff)).toBe(65504);
    expect(fp16ToFp32(0x0001)).toBe(2 ** -24);
    expect(fp16ToFp32(0x03ff)).toBe(2 ** -14 - 2 ** -24);
    expect(Object.is(fp16ToFp32(0x8000), -0)).toBe(true);
    expect(fp16ToFp32(0xfc00)).toBe(-Infinity);
    expect(fp16ToFp32(0x3555)).toBe(Math.fround(0.333251953125));
  });
});

describe('array forms', () => {
  it('write into dst and respect subarray offsets', () => {
    const backing = Float32Array.of(7, 1, -2, 65520);
    const dst = new Uint16Array(5).fill(0xffff);
    expect(fp32ArrayToFp16(backing.subarray(1), dst)).toBe(dst);
    expect(Array.from(dst)).toEqual([0x3c00, 0xc000, 0x7c00, 0xffff, 0xffff]);

    const back = new Float32Array(6);
    fp16ArrayToFp32(Uint16Array.of(0x3c00, 0x8000), back.subarray(2));
    expect(Array.from(back)).toEqual([0, 0, 1, -0, 0, 0]);
    expect(Object.is(back[3], -0)).toBe(true);
  });

  it('reject a dst that is too short', () => {
    expect(() => fp32ArrayToFp16(new Float32Array(3), new Uint16Array(2))).toThrow(RangeError);
    expect(() => fp16ArrayToFp32(new Uint16Array(3), new Float32Array(2))).toThrow(RangeError);
  });
});
