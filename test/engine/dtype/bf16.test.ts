/** bf16 conversion checked bit for bit against an arithmetic numpy reference (test/fixtures/generate.py). */
import { describe, expect, it } from 'vitest';
import {
  bf16ArrayToFp32, bf16ToFp32, bf16ToFp32Bits, floatInfo, fp32ArrayToBf16, fp32BitsToBf16, fp32ToBf16,
} from '../../../engine/dtype/index.ts';
import { hex, isNaN32, readLE } from './fixtures.ts';

const isNaNBf16 = (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
const fromBits = (b: number) => new Float32Array(Uint32Array.of(b).buffer)[0];

const inputs = readLE('fp32_inputs.bin', 4);
const expected = readLE('fp32_to_bf16.bin', 2);
const BF16_MAX = floatInfo('bf16').maxFinite;

describe('fp32 -> bf16', () => {
  it(`encodes all ${inputs.length} fixture inputs exactly as the reference`, () => {
    const src = new Float32Array(inputs.buffer);
    const viaArray = fp32ArrayToBf16(src);
    const bad: string[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const b = inputs[i];
      const got = fp32BitsToBf16(b);
      if (isNaN32(b)) {
        const ok = isNaNBf16(got) && isNaNBf16(expected[i]) && got >>> 15 === b >>> 31 && (got & 0x40) !== 0;
        if (!ok || viaArray[i] !== got) bad.push(`NaN ${hex(b)} -> ${hex(got)}`);
      } else if (got !== expected[i] || viaArray[i] !== got || fp32ToBf16(src[i]) !== got) {
        bad.push(`${hex(b)}: ${hex(got)} != ${hex(expected[i])}`);
      }
    }
    expect(bad.slice(0, 10)).toEqual([]);
  });

  it.each([
    ['1', 1, 0x3f80],
    ['-0 keeps its sign', -0, 0x8000],
    ['inf', Infinity, 0x7f80],
    ['-inf', -Infinity, 0xff80],
    ['1e6 stays finite (999424)', 1e6, 0x4974],
    ['fp16 max 65504 needs 11 significant bits: rounds to 65536', 65504, 0x4780],
    ['1 + 2^-8 is a tie: rounds to even 1', 1 + 2 ** -8, 0x3f80],
    ['1 + 3 * 2^-8 is a tie: rounds to even 1 + 2^-6', 1 + 3 * 2 ** -8, 0x3f82],
    ['bf16 max', BF16_MAX, 0x7f7f],
    ['fp32 max rounds past bf16 max to inf', 3.4028234663852886e38, 0x7f80],
    ['-fp32 max rounds to -inf', -3.4028234663852886e38, 0xff80],
    ['smallest bf16 subnormal 2^-133', 2 ** -133, 0x0001],
    ['2^-134 is a tie: rounds to even 0', 2 ** -134, 0x0000],
  ])('%s', (_name, x, bits) => {
    expect(fp32ToBf16(x)).toBe(bits);
  });

  it('rounds at the top of the range by the bits', () => {
    expect(fp32BitsToBf16(0x7f7f7fff)).toBe(0x7f7f); // just under max + half ulp
    expect(fp32BitsToBf16(0x7f7f8000)).toBe(0x7f80); // the tie: 0x7f7f is odd, so up to inf
    expect(fp32BitsToBf16(0xff7f8000)).toBe(0xff80);
    expect(fp32BitsToBf16(0x7f7e8000)).toBe(0x7f7e); // tie below, 0x7f7e is even
  });

  it('NaN stays a quiet NaN with its sign', () => {
    expect(isNaNBf16(fp32ToBf16(NaN))).toBe(true);
    // Payload only in the low half: plain truncation would give inf.
    expect(fp32BitsToBf16(0x7f800001)).toBe(0x7fc0);
    expect(fp32BitsToBf16(0xff80ffff)).toBe(0xffc0);
  });
});

describe('bf16 -> fp32', () => {
  it('is the upper half of the fp32 word for all 65,536 patterns', () => {
    const all = Uint16Array.from({ length: 0x10000 }, (_, h) => h);
    const viaArray = new Uint32Array(bf16ArrayToFp32(all).buffer);
    const bad: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      const want = (h * 0x10000) >>> 0;
      if (bf16ToFp32Bits(h) !== want || viaArray[h] !== want) bad.push(h);
      else if (!isNaN32(want) && !Object.is(bf16ToFp32(h), fromBits(want))) bad.push(h);
    }
    expect(bad).toEqual([]);
  });

  it('bf16 -> fp32 -> bf16 is the identity on every non-NaN pattern', () => {
    const bad: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if (!isNaNBf16(h) && fp32ToBf16(bf16ToFp32(h)) !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
  });

  it('decodes the named values', () => {
    expect(bf16ToFp32(0x7f7f)).toBe(3.3895313892515355e38);
    expect(bf16ToFp32(0x4974)).toBe(999424);
    expect(bf16ToFp32(0x0001)).toBe(2 ** -133);
    expect(Object.is(bf16ToFp32(0x8000), -0)).toBe(true);
    expect(bf16ToFp32(0xff80)).toBe(-Infinity);
  });

  it('array forms write into dst and reject a short one', () => {
    const dst = new Uint16Array(3);
    fp32ArrayToBf16(Float32Array.of(1, -2), dst.subarray(1));
    expect(Array.from(dst)).toEqual([0, 0x3f80, 0xc000]);
    expect(() => fp32ArrayToBf16(new Float32Array(3), new Uint16Array(2))).toThrow(RangeError);
    expect(() => bf16ArrayToFp32(new Uint16Array(3), new Float32Array(2))).toThrow(RangeError);
  });
});
