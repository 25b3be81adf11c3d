/**
 * Double quantization against numpy (test/fixtures/nf4/cases.json): bitsandbytes' dynamic 8-bit map, the codes,
 * second-level scales and mean of a double-quantized absmax, its float32 round trip; and the bits per parameter of
 * QLoRA section 3 (0.5 -> 0.127 bits of constants) against the bytes a quantized tensor actually holds.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  DYNAMIC_MAP, QuantizationError, bitsPerParameter, doubleDequantize, doubleQuantize, encodeDynamic, nf4Quantize,
} from '../../../engine/quant/index.ts';

interface DoubleCase { absmax: number[]; blockSize2: number; codes: number[]; scale: number[]; mean: number; dequantized: number[] }
const FIX = JSON.parse(readFileSync(new URL('../../fixtures/nf4/cases.json', import.meta.url), 'utf8')) as { tables: { dynamicMap: number[] }; double: DoubleCase[] };

describe('the dynamic 8-bit map (bitsandbytes create_dynamic_map, signed)', () => {
  it('equals numpy\'s float32 construction entry for entry', () => {
    expect(Array.from(DYNAMIC_MAP)).toEqual(FIX.tables.dynamicMap);
  });

  it('is sorted, holds 0 once and 1, and its decades hold 2^i values per sign', () => {
    expect(DYNAMIC_MAP.length).toBe(256);
    for (let i = 1; i < 256; i++) expect(DYNAMIC_MAP[i]).toBeGreaterThan(DYNAMIC_MAP[i - 1]);
    expect(DYNAMIC_MAP[255]).toBe(1);
    expect(DYNAMIC_MAP.filter((v) => v === 0).length).toBe(1);
    for (let i = 0; i < 7; i++) {
      const lo = 0.1 * 10 ** (i - 6);
      const count = DYNAMIC_MAP.filter((v) => v > lo && v < 10 * lo && v !== 1).length;
      expect(count, `decade 10^${i - 6}`).toBe(2 ** i);
    }
  });

  it('encodeDynamic picks the nearest entry, and every entry encodes to itself', () => {
    for (let c = 0; c < 256; c++) expect(encodeDynamic(DYNAMIC_MAP[c])).toBe(c);
    for (const v of [-1, -0.5, -1e-7, 0, 3e-5, 0.2, 0.77, 0.999, 1]) {
      let best = 0;
      for (let c = 1; c < 256; c++) if (Math.abs(DYNAMIC_MAP[c] - v) < Math.abs(DYNAMIC_MAP[best] - v)) best = c;
      expect(encodeDynamic(Math.fround(v)), String(v)).toBe(best);
    }
  });
});

describe.each(FIX.double)('double quantization of $absmax.length absmax in blocks of $blockSize2, against numpy', (c) => {
  it('codes, scales, mean and the dequantized absmax bit for bit', () => {
    const d = doubleQuantize(Float32Array.from(c.absmax), { blockSize2: c.blockSize2 });
    expect(d.mean).toBe(Math.fround(c.mean));
    expect(Array.from(d.scale)).toEqual(c.scale.map(Math.fround));
    expect(Array.from(d.codes)).toEqual(c.codes);
    const back = doubleDequantize(d);
    expect(Array.from(back)).toEqual(c.dequantized.map(Math.fround));
    // The 8-bit error is small against the absmax itself: the map's step near 1 is 1/64 of the block's range.
    let worst = 0;
    for (let i = 0; i < back.length; i++) worst = Math.max(worst, Math.abs(back[i] - c.absmax[i]) / c.absmax[i]);
    expect(worst).toBeLessThan(0.02);
  });
});

describe('bits per parameter (QLoRA section 3)', () => {
  it('4.5 bits with fp32 absmax in blocks of 64; 4 + 8/64 + 32/(64*256) = 4.127 with double quantization', () => {
    expect(bitsPerParameter({ blockSize: 64 })).toEqual({ codes: 4, constants: 0.5, perTensor: 0, total: 4.5 });
    const dq = bitsPerParameter({ blockSize: 64, doubleQuant: true, blockSize2: 256 });
    expect(dq.constants).toBe(8 / 64 + 32 / (64 * 256));
    expect(dq.constants.toFixed(3)).toBe('0.127');
    expect(dq.total.toFixed(3)).toBe('4.127');
    expect(bitsPerParameter({ doubleQuant: true }).total).toBe(dq.total); // the defaults are the paper's
  });

  it('agrees with the bytes nf4Quantize and doubleQuantize produce, for whole and partial blocks', () => {
    for (const numel of [64 * 256 * 4, 4096 * 3 + 33]) {
      const q = nf4Quantize(Float32Array.from({ length: numel }, (_, i) => Math.sin(i)));
      expect(bitsPerParameter({ numel }).total).toBe(((q.codes.length + 4 * q.absmax.length) * 8) / numel);
      const d = doubleQuantize(q.absmax);
      // Stored: codes, 8-bit absmax codes, fp32 scales, the fp32 mean and the 256-entry fp32 map.
      const bytes = q.codes.length + d.codes.length + 4 * d.scale.length + 4 + 4 * DYNAMIC_MAP.length;
      expect(bitsPerParameter({ numel, doubleQuant: true }).total).toBe((bytes * 8) / numel);
    }
    // For a 4096 x 4096 matrix the per-tensor parts vanish: 4.127 to three places.
    expect(bitsPerParameter({ numel: 4096 * 4096, doubleQuant: true }).total.toFixed(3)).toBe('4.127');
  });

  it('bad options and bad absmax are refused', () => {
    expect(() => bitsPerParameter({ blockSize: 63 })).toThrow(QuantizationError);
    expect(() => bitsPerParameter({ numel: 0 })).toThrow(/numel must be a positive integer/);
    expect(() => doubleQuantize(Float32Array.of(1, NaN))).toThrow(/absmax\[1\] = NaN/);
    expect(() => doubleQuantize(Float32Array.of(1, -2))).toThrow(/absmax\[1\] = -2/);
    expect(() => doubleQuantize(new Float32Array(0))).toThrow(QuantizationError);
    const d = doubleQuantize(Float32Array.of(1, 2, 3));
    expect(() => doubleDequantize({ ...d, scale: new Float32Array(2) })).toThrow(QuantizationError);
  });
});
