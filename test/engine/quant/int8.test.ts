/**
 * absmax and zero-point round trips against numpy (test/fixtures/quant/cases.json, generate_quant.py), per tensor,
 * row, column and block, on every backend.
 *
 * Tolerances: codes, scales and zero points exact (the same fp32 division and half-to-even rounding as numpy's
 * float32 replay); dequantized values within 1 fp32 ulp (a correct kernel is exact: (q - zp) * scale is one fp32
 * rounding of an exact product); error statistics to 1e-12 relative (float64 sums in another order).
 */
import { describe, expect, it } from 'vitest';
import {
  dequantize, disposeQuantized, dynamicQuantizeLinear, errorStats, MIN_SCALE, quantize, roundTrip, type Device,
} from '../../../engine/index.ts';
import { device, diff, FIXTURES, KINDS, load } from './fixtures.ts';

describe.each(KINDS)('int8 round trips on %s against numpy', (kind) => {
  for (const c of FIXTURES.roundtrip) {
    it(c.name, async () => {
      const dev: Device = await device(kind);
      const x = load(dev, c.x, { tag: 'weights', label: 'w' });
      const qt = await quantize(x, { scheme: c.scheme, granularity: c.granularity, dtype: c.dtype, ...(c.blockSize ? { blockSize: c.blockSize } : {}) });
      expect(diff(qt.q, c.q), 'codes').toEqual([]);
      expect(diff(qt.scale, c.scale), 'scales').toEqual([]);
      if (c.zeroPoint) expect(diff(qt.zeroPoint!, c.zeroPoint), 'zero points').toEqual([]);
      else expect(qt.zeroPoint).toBeUndefined();
      const y = await dequantize(qt, { dtype: 'fp32' });
      expect(diff(y, c.dequantized, 1), 'dequantized').toEqual([]);
      // Weights stay weights, each part under its own label, and the byte count is the tracker's.
      expect([qt.q.tag, qt.scale.tag, qt.q.label, qt.scale.label]).toEqual(['weights', 'weights', 'w.q', 'w.scale']);
      expect(qt.bytes.data).toBe(x.numel);
      expect(qt.bytes.scales).toBe(4 * qt.scale.numel);
      expect(qt.bytes.zeroPoints).toBe(qt.zeroPoint ? qt.scale.numel : 0);
      expect(qt.bytes.total).toBe(qt.q.bytes + qt.scale.bytes + (qt.zeroPoint?.bytes ?? 0));
      const stats = errorStats(x, y);
      for (const k of ['maxAbs', 'meanAbs', 'rms', 'absmax', 'relative'] as const) {
        expect(Math.abs(stats[k] - c.stats[k]), k).toBeLessThanOrEqual(1e-12 * c.stats[k]);
      }
      // roundTrip is quantize, dequantize (to the source dtype) and errorStats in one call.
      const rt = await roundTrip(x, { scheme: c.scheme, granularity: c.granularity, dtype: c.dtype, ...(c.blockSize ? { blockSize: c.blockSize } : {}) });
      expect(rt.quantized.q.toArray()).toEqual(qt.q.toArray());
      expect(rt.error).toEqual(errorStats(x, rt.dequantized));
      for (const t of [x, y, rt.dequantized]) t.dispose();
      disposeQuantized(qt);
      disposeQuantized(rt.quantized);
    });
  }
});

describe('int8 quantization semantics', () => {
  it('a zero row gets the floor scale 2^-126 and codes equal to its zero point, and dequantizes to exact zeros', async () => {
    const dev = await device('cpu');
    const x = dev.tensor([0, 0, 0, 0, 1, -2, 3, -4], [2, 4]);
    const sym = await quantize(x, { granularity: 'row' });
    expect(sym.scale.toArray()).toEqual([MIN_SCALE, Math.fround(4 / 127)]);
    expect(sym.q.toArray().slice(0, 4)).toEqual([0, 0, 0, 0]);
    for (const dtype of ['uint8', 'int8'] as const) {
      const asym = await quantize(x, { scheme: 'zeropoint', granularity: 'row', dtype });
      const zp = dtype === 'uint8' ? 0 : -128;
      expect(asym.zeroPoint!.toArray()[0]).toBe(zp);
      expect(asym.q.toArray().slice(0, 4)).toEqual([zp, zp, zp, zp]);
      const y = (await dequantize(asym)).toArray();
      expect(y.slice(0, 4)).toEqual([0, 0, 0, 0]);
      expect(y.every(Number.isFinite)).toBe(true);
    }
  });

  it('zero-point int8 codes are the uint8 codes minus 128, with the same scales', async () => {
    const dev = await device('cpu');
    const x = dev.tensor(Array.from({ length: 48 }, (_, i) => Math.sin(i * 1.3) * (i % 5) - 0.7), [4, 12]);
    const u = await quantize(x, { scheme: 'zeropoint', granularity: 'block', blockSize: 4 });
    const s = await quantize(x, { scheme: 'zeropoint', granularity: 'block', blockSize: 4, dtype: 'int8' });
    expect(s.q.toArray()).toEqual(u.q.toArray().map((v) => v - 128));
    expect(s.zeroPoint!.toArray()).toEqual(u.zeroPoint!.toArray().map((v) => v - 128));
    expect(s.scale.toArray()).toEqual(u.scale.toArray());
  });

  it('zero-point per tensor in uint8 is onnxruntime\'s DynamicQuantizeLinear, an independent implementation', async () => {
    const dev = await device('cpu');
    const x = dev.tensor(Array.from({ length: 60 }, (_, i) => 3 * Math.cos(i * 0.77) + 0.9), [6, 10]);
    const ours = await quantize(x, { scheme: 'zeropoint' });
    const ort = await dynamicQuantizeLinear(x);
    expect(ours.q.toArray()).toEqual(ort.y.toArray());
    expect(ours.scale.toArray()).toEqual(ort.scale.toArray());
    expect(ours.zeroPoint!.toArray()).toEqual(ort.zeroPoint.toArray());
  });

  it('absmax error stays within half a scale step; per row keeps a small row that per tensor rounds to zero', async () => {
    const dev = await device('cpu');
    const values = Array.from({ length: 256 }, (_, i) => Math.sin(i * 0.37) * (i < 128 ? 0.01 : 10));
    const x = dev.tensor(values, [2, 128]);
    const perTensor = await roundTrip(x, { granularity: 'tensor' });
    const perRow = await roundTrip(x, { granularity: 'row' });
    expect(perTensor.error.maxAbs).toBeLessThanOrEqual((perTensor.quantized.scale.toArray()[0] / 2) * (1 + 1e-6));
    // Sharing a scale of 10/127, the small row (|x| <= 0.01) is rounded to 0 entirely; its own scale is 1000x finer.
    const small = (r: typeof perRow) => errorStats(x.toArray().slice(0, 128), r.dequantized.toArray().slice(0, 128));
    expect(perTensor.quantized.q.toArray().slice(0, 128).every((q) => q === 0)).toBe(true);
    expect(small(perRow).maxAbs).toBeLessThan(small(perTensor).maxAbs / 100);
    expect(perRow.quantized.bytes.bitsPerValue).toBeCloseTo(8 + (2 * 32) / 256, 12);
  });

  it('quantizes fp16 and bf16 inputs (widened exactly) and dequantizes to the source dtype by default', async () => {
    const dev = await device('cpu');
    for (const dtype of ['fp16', 'bf16'] as const) {
      const x = dev.tensor([0.5, -1.25, 3, 0.1], [2, 2], dtype);
      const qt = await quantize(x, { granularity: 'row' });
      expect(qt.sourceDtype).toBe(dtype);
      const y = await dequantize(qt);
      expect(y.dtype).toBe(dtype);
      const f32 = await quantize(dev.tensor(x.toArray(), [2, 2]), { granularity: 'row' });
      expect(qt.q.toArray()).toEqual(f32.q.toArray());
    }
  });

  it('the graph is built once per shape: a second call reuses the compiled session', async () => {
    const dev = await device('cpu');
    const x = dev.tensor(Array.from({ length: 30 }, (_, i) => i - 11.5), [5, 6]);
    await quantize(x, { granularity: 'column' });
    const n = dev.stats().sessionsCreated;
    expect(n).toBeGreaterThan(0);
    await quantize(dev.tensor(Array.from({ length: 30 }, (_, i) => 2 * i), [5, 6]), { granularity: 'column' });
    expect(dev.stats().sessionsCreated).toBe(n);
  });
});
