/**
 * NF4, FP4 and int4 absmax code books against numpy (test/fixtures/nf4/cases.json, generate_nf4.py) bit for bit:
 * codes, both nibble orders, absmax and the dequantized float32 values; the tables against bitsandbytes' published
 * ones; ties, partial blocks, bad input; and the error of each on N(0, 1) data, where NF4 must win.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  FP4, FP4_CODE, FP4_PIVOTS, INT4_ABSMAX, NF4, NF4_CODE, NF4_PIVOTS, NonFiniteBlockError, QuantizationError,
  codebookDequantize, codebookQuantize, compare4bit, fp4Dequantize, fp4Quantize, int4AbsmaxDequantize, int4AbsmaxQuantize,
  nf4Dequantize, nf4Quantize, packNibbles, repack, unpackNibbles, type Codebook4,
} from '../../../engine/quant/index.ts';
import { bf16ToFp32, openCheckpoint } from '../../../engine/index.ts';
import { gaussian } from '../../helpers/gaussian.ts';

interface Coded { codes: number[]; bitsandbytes: number[]; onnxruntime: number[]; absmax: number[]; dequantized: number[] }
interface Case { name: string; blockSize: number; x: number[]; nf4: Coded; fp4: Coded; int4: Coded }
const FIX = JSON.parse(readFileSync(new URL('../../fixtures/nf4/cases.json', import.meta.url), 'utf8')) as {
  tables: { nf4: number[]; nf4Pivots: number[]; fp4: number[]; fp4Pivots: number[] };
  cases: Case[];
};
const BOOKS: Record<'nf4' | 'fp4' | 'int4', Codebook4> = { nf4: NF4, fp4: FP4, int4: INT4_ABSMAX };


describe('code tables', () => {
  it('NF4 levels and thresholds are bitsandbytes\' (kernels.cu, QLoRA Appendix E), as float32', () => {
    expect(Array.from(NF4_CODE)).toEqual(FIX.tables.nf4.map(Math.fround));
    expect(Array.from(NF4_PIVOTS)).toEqual(FIX.tables.nf4Pivots.map(Math.fround));
    // Exact zero and the ends: the properties the paper builds NF4 to have.
    expect([NF4_CODE[0], NF4_CODE[7], NF4_CODE[15]]).toEqual([-1, 0, 1]);
  });

  it('FP4 levels and thresholds are bitsandbytes\', E2M1 magnitudes {0, 0.0625, 2, 3, 4, 6, 8, 12} / 12', () => {
    expect(Array.from(FP4_CODE)).toEqual(FIX.tables.fp4.map(Math.fround));
    expect(Array.from(FP4_PIVOTS)).toEqual(FIX.tables.fp4Pivots.map(Math.fround));
    const mags = [...new Set(Array.from(FP4_CODE, Math.abs))].sort((p, q) => p - q);
    expect(mags.map((m) => Math.round(m * 12 * 1e4) / 1e4)).toEqual([0, 0.0625, 2, 3, 4, 6, 8, 12]);
    expect(Object.is(FP4_CODE[8], -0)).toBe(true);
  });

  it('ties go to the lower level, as bitsandbytes\' `x > pivot` does; values beyond +-1 clamp', () => {
    for (let i = 0; i < 15; i++) {
      expect(NF4.encode(NF4_PIVOTS[i])).toBe(i);
      expect(NF4.encode(Math.fround(NF4_PIVOTS[i] + 2 ** -24 * Math.max(1, Math.abs(NF4_PIVOTS[i]) * 2)))).toBe(i + 1);
      expect(NF4.encode(NF4_CODE[i])).toBe(i);
    }
    expect(NF4.encode(NF4_CODE[15])).toBe(15);
    expect([NF4.encode(-2), NF4.encode(2)]).toEqual([0, 15]);
    expect([FP4.encode(-1e-9), FP4.encode(0), FP4.encode(FP4_PIVOTS[0]), FP4.encode(1)]).toEqual([0b1000, 0, 0, 0b0011]);
    expect([INT4_ABSMAX.encode(0.5 / 7), INT4_ABSMAX.encode(1.5 / 7), INT4_ABSMAX.encode(-1)]).toEqual([8, 10, 1]);
  });
});

describe.each(FIX.cases)('$name against numpy', (c) => {
  const x = Float32Array.from(c.x);
  for (const name of ['nf4', 'fp4', 'int4'] as const) {
    it(`${name}: codes, both packings, absmax and dequantized values bit for bit`, () => {
      const want = c[name];
      const q = codebookQuantize(x, BOOKS[name], { blockSize: c.blockSize });
      expect(q.packing).toBe('bitsandbytes');
      expect([q.length, q.blockSize, q.format]).toEqual([x.length, c.blockSize, name]);
      expect(Array.from(q.codes)).toEqual(want.bitsandbytes);
      expect(Array.from(unpackNibbles(q.codes, q.length, 'bitsandbytes'))).toEqual(want.codes);
      expect(Array.from(q.absmax)).toEqual(want.absmax.map(Math.fround));
      const ort = codebookQuantize(x, BOOKS[name], { blockSize: c.blockSize, packing: 'onnxruntime' });
      expect(Array.from(ort.codes)).toEqual(want.onnxruntime);
      expect(Array.from(repack(q, 'onnxruntime').codes)).toEqual(want.onnxruntime);
      expect(Array.from(repack(ort, 'bitsandbytes').codes)).toEqual(want.bitsandbytes);
      const deq = codebookDequantize(q, BOOKS[name]);
      expect(Array.from(deq)).toEqual(want.dequantized.map(Math.fround));
      expect(Array.from(codebookDequantize(ort, BOOKS[name]))).toEqual(Array.from(deq));
    });
  }

  it('the named entry points agree with the code books', () => {
    expect(Array.from(nf4Quantize(x, { blockSize: c.blockSize }).codes)).toEqual(c.nf4.bitsandbytes);
    expect(Array.from(nf4Dequantize(nf4Quantize(x, { blockSize: c.blockSize, packing: 'onnxruntime' })))).toEqual(c.nf4.dequantized.map(Math.fround));
    expect(Array.from(fp4Dequantize(fp4Quantize(x, { blockSize: c.blockSize })))).toEqual(c.fp4.dequantized.map(Math.fround));
    expect(Array.from(int4AbsmaxDequantize(int4AbsmaxQuantize(x, { blockSize: c.blockSize })))).toEqual(c.int4.dequantized.map(Math.fround));
  });
});

describe('layout', () => {
  it('bitsandbytes puts the first element in the high nibble, onnxruntime in the low one', () => {
    const codes = Uint8Array.of(1, 2, 3);
    expect(Array.from(packNibbles(codes, 'bitsandbytes', 7))).toEqual([0x12, 0x37]);
    expect(Array.from(packNibbles(codes, 'onnxruntime', 7))).toEqual([0x21, 0x73]);
    expect(Array.from(unpackNibbles(Uint8Array.of(0x12, 0x37), 3, 'bitsandbytes'))).toEqual([1, 2, 3]);
    expect(Array.from(unpackNibbles(Uint8Array.of(0x21, 0x73), 3, 'onnxruntime'))).toEqual([1, 2, 3]);
  });

  it('default block size is 64; a partial last block gets its own absmax; an odd count pads with the code of 0', () => {
    const x = Float32Array.from({ length: 65 }, (_, i) => (i === 64 ? -3 : i / 64));
    const q = nf4Quantize(x);
    expect([q.blockSize, q.absmax.length, q.codes.length]).toEqual([64, 2, 33]);
    expect(Array.from(q.absmax)).toEqual([Math.fround(63 / 64), 3]);
    expect(q.codes[32]).toBe(0x07); // -3 / 3 = -1 is code 0 (high nibble); the pad is code 7, NF4's zero
    expect(nf4Dequantize(q)[64]).toBe(-3);
  });

  it('an all-zero block keeps absmax 0 and decodes to zeros', () => {
    const q = nf4Quantize(new Float32Array(128).fill(0, 0, 64).fill(1, 64), { blockSize: 64 });
    expect(q.absmax[0]).toBe(0);
    expect(Array.from(nf4Dequantize(q).slice(0, 64)).every((v) => v === 0)).toBe(true);
  });
});

describe('bad input', () => {
  it('a NaN or infinity names its block and element, and nothing is returned', () => {
    const x = new Float32Array(200);
    x[150] = NaN;
    expect(() => nf4Quantize(x)).toThrow(NonFiniteBlockError);
    expect(() => nf4Quantize(x)).toThrow(/block 2 holds NaN at element 150/);
    x[150] = 0;
    x[3] = -Infinity;
    const err = (() => {
      try {
        fp4Quantize(x, { blockSize: 32 });
      } catch (e) {
        return e as NonFiniteBlockError;
      }
    })();
    expect(err).toBeInstanceOf(QuantizationError);
    expect([err!.blockIndex, err!.index, err!.value]).toEqual([0, 3, -Infinity]);
  });

  it('block sizes, packings, empty input and malformed codes are refused with QuantizationError', () => {
    const x = new Float32Array(64);
    for (const blockSize of [0, 3, -64, 1.5, NaN]) expect(() => nf4Quantize(x, { blockSize }), String(blockSize)).toThrow(/blockSize must be an even positive integer/);
    expect(() => nf4Quantize(x, { packing: 'gguf' as never })).toThrow(/unknown packing "gguf"/);
    expect(() => nf4Quantize(new Float32Array(0))).toThrow(QuantizationError);
    expect(() => nf4Quantize([1, 2] as never)).toThrow(/Float32Array/);
    const q = nf4Quantize(x);
    expect(() => nf4Dequantize({ ...q, absmax: new Float32Array(2) })).toThrow(/need 1 absmax, got 2/);
    expect(() => nf4Dequantize({ ...q, codes: new Uint8Array(31) })).toThrow(/need 32 code bytes/);
    expect(() => fp4Dequantize(q)).toThrow(/these codes are nf4, not fp4/);
  });
});

describe('error on N(0, 1) weights (QLoRA section 3: NF4 is the better 4-bit type for normal data)', () => {
  it('NF4 has the lowest RMSE and relative Frobenius error; all three are 4-bit-sized errors', () => {
    const x = gaussian(64 * 1024, 7);
    const e = compare4bit(x, { blockSize: 64 });
    console.log('4-bit error on N(0,1), 65536 values, blocks of 64:', JSON.stringify(e));
    expect(e.nf4.rmse).toBeLessThan(e.int4.rmse);
    expect(e.nf4.rmse).toBeLessThan(e.fp4.rmse);
    expect(e.nf4.relFrobenius).toBeLessThan(e.int4.relFrobenius);
    for (const k of ['nf4', 'fp4', 'int4'] as const) {
      expect(e[k].relFrobenius).toBeGreaterThan(0.05);
      expect(e[k].relFrobenius).toBeLessThan(0.2);
      expect(e[k].maxAbs).toBeLessThan(1);
    }
  });
});

describe('error on the built-in model\'s trained weights (models/builtin, bf16)', () => {
  it('NF4 has the lowest relative Frobenius error on every matrix, in blocks of 64', () => {
    const ck = openCheckpoint(new URL('../../../models/builtin/', import.meta.url).pathname);
    const sums = { nf4: 0, fp4: 0, int4: 0 };
    let count = 0;
    try {
      for (const t of ck.tensors.filter((i) => i.shape.length === 2)) {
        const d = ck.read(t.name);
        expect(d.dtype).toBe('bf16');
        const x = Float32Array.from(d.data as Uint16Array, bf16ToFp32);
        const e = compare4bit(x, { blockSize: 64 });
        expect(e.nf4.relFrobenius, t.name).toBeLessThan(Math.min(e.fp4.relFrobenius, e.int4.relFrobenius));
        for (const k of ['nf4', 'fp4', 'int4'] as const) sums[k] += e[k].rmse ** 2 * x.length;
        count += x.length;
      }
    } finally {
      ck.close();
    }
    const rmse = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, Math.sqrt(v / count)]));
    console.log(`4-bit RMSE over the built-in model's ${count} matrix weights, blocks of 64:`, JSON.stringify(rmse));
    expect(count).toBeGreaterThan(1e6);
  });
});
