/** dtype table: sizes, parsing, and float layouts against published IEEE 754 / bfloat16 numbers. */
import { describe, expect, it } from 'vitest';
import {
  DTYPES, bitsOf, byteSize, floatInfo, fp16ToFp32, isFloat, isPacked4, parseDType, type DType,
} from '../../../engine/dtype/index.ts';

describe('dtype table', () => {
  it('lists every dtype once', () => {
    expect([...DTYPES]).toEqual(['fp32', 'fp16', 'bf16', 'int8', 'uint8', 'int32', 'int4', 'nf4', 'bool']);
  });

  it.each([
    ['fp32', 32, 4, 12, true, false],
    ['fp16', 16, 2, 6, true, false],
    ['bf16', 16, 2, 6, true, false],
    ['int8', 8, 1, 3, false, false],
    ['uint8', 8, 1, 3, false, false],
    ['int32', 32, 4, 12, false, false],
    ['int4', 4, 1, 2, false, true],
    ['nf4', 4, 1, 2, false, true],
  ] as [DType, number, number, number, boolean, boolean][])(
    '%s: %i bits, byteSize(1) = %i, byteSize(3) = %i',
    (d, bits, one, three, float, packed) => {
      expect(bitsOf(d)).toBe(bits);
      expect(byteSize(d, 0)).toBe(0);
      expect(byteSize(d, 1)).toBe(one);
      expect(byteSize(d, 3)).toBe(three);
      expect(byteSize(d, 4096)).toBe((4096 * bits) / 8);
      expect(isFloat(d)).toBe(float);
      expect(isPacked4(d)).toBe(packed);
    },
  );

  it('rejects a bad numel', () => {
    expect(() => byteSize('fp32', -1)).toThrow(RangeError);
    expect(() => byteSize('int4', 2.5)).toThrow(RangeError);
    expect(() => byteSize('fp16', NaN)).toThrow(RangeError);
  });

  it('parses every dtype name and rejects others, naming the value and the valid ones', () => {
    for (const d of DTYPES) expect(parseDType(d)).toBe(d);
    expect(() => parseDType('float16')).toThrow(TypeError);
    expect(() => parseDType('FP16')).toThrow(/"FP16".*fp32, fp16, bf16, int8, uint8, int32, int4, nf4/);
  });
});

describe('floatInfo', () => {
  it('fp16 matches IEEE 754 binary16', () => {
    expect(floatInfo('fp16')).toEqual({
      exponentBits: 5, mantissaBits: 10, bias: 15,
      maxFinite: 65504, smallestNormal: 6.103515625e-5, smallestSubnormal: 5.960464477539063e-8,
      epsilon: 0.0009765625,
    });
  });

  it('bf16 shares fp32\'s exponent with 7 mantissa bits', () => {
    expect(floatInfo('bf16')).toEqual({
      exponentBits: 8, mantissaBits: 7, bias: 127,
      maxFinite: 3.3895313892515355e38, smallestNormal: 1.1754943508222875e-38,
      smallestSubnormal: 9.183549615799121e-41, epsilon: 2 ** -7,
    });
  });

  it('fp32 matches IEEE 754 binary32', () => {
    expect(floatInfo('fp32')).toEqual({
      exponentBits: 8, mantissaBits: 23, bias: 127,
      maxFinite: 3.4028234663852886e38, smallestNormal: 1.1754943508222875e-38,
      smallestSubnormal: 1.401298464324817e-45, epsilon: 2 ** -23,
    });
  });

  it('agrees with the formats\' own bit patterns', () => {
    const fp16 = floatInfo('fp16');
    expect(fp16ToFp32(0x7bff)).toBe(fp16.maxFinite);
    expect(fp16ToFp32(0x0400)).toBe(fp16.smallestNormal);
    expect(fp16ToFp32(0x0001)).toBe(fp16.smallestSubnormal);
    expect(fp16ToFp32(0x3c01) - 1).toBe(fp16.epsilon);
    expect(Math.fround(floatInfo('fp32').maxFinite)).toBe(floatInfo('fp32').maxFinite);
    expect(Math.fround(floatInfo('fp32').smallestSubnormal)).toBe(2 ** -149);
  });

  it('rejects a non-float dtype at run time', () => {
    expect(() => floatInfo('int8' as 'fp32')).toThrow(TypeError);
  });
});
