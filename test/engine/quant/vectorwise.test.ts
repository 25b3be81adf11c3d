/**
 * The vector-wise int8 matmul (LLM.int8 section 3.1) against numpy (test/fixtures/quant/cases.json).
 *
 * - X's and W's codes and scales: exact (X's int8 codes are carried as uint8 + 128, see engine/quant/vectorwise.ts).
 * - The int32 accumulator: exactly numpy's int64 product of the same int8 operands (no tolerance: integer math).
 * - y: bit-exact against numpy's fp32 replay of the engine's three roundings (Cast(acc), the outer product of the
 *   scales, their product); against acc * xScale * wScale in float64 within 2^-22 relative (three fp32 roundings
 *   of at most 2^-24 each; 2^-10 when y is fp16).
 * - vectorwiseMatmul (y only, fused by onnxruntime into MatMulIntegerToFloat): the same 2^-22 against float64.
 * - Against the unquantized x @ w in float64: within the quantization bound, per element
 *   sum_k (|x_ik| sw_j + |w_kj| sx_i) / 2 + 3/4 sx_i sw_j (each code is off by at most half a step).
 */
import { describe, expect, it } from 'vitest';
import { settle } from '../../helpers/settle.ts';
import {
  quantizeWeightVectorwise, vectorwiseMatmul, vectorwiseMatmulParts, X_ZERO_POINT, type Device,
} from '../../../engine/index.ts';
import { device, diff, FIXTURES, KINDS, load } from './fixtures.ts';

describe.each(KINDS)('vector-wise int8 matmul on %s against numpy', (kind) => {
  for (const c of FIXTURES.vectorwise) {
    it(c.name, async () => {
      const dev: Device = await device(kind);
      const w = load(dev, c.w, { tag: 'weights', label: 'w' });
      const x = load(dev, c.x);
      const wq = await quantizeWeightVectorwise(w);
      expect(diff(wq.q, c.wq), 'weight codes').toEqual([]);
      expect(diff(wq.scale, c.wScale), 'weight scales').toEqual([]);
      const p = await vectorwiseMatmulParts(x, wq);
      expect(p.xq.dtype).toBe('uint8');
      expect(p.xq.toArray().map((v) => v - X_ZERO_POINT), 'x codes (uint8, shifted by 128)').toEqual(c.xq.data);
      expect(diff(p.xScale, c.xScale), 'x scales').toEqual([]);
      expect(p.acc.dtype).toBe('int32');
      expect(diff(p.acc, c.acc), 'int32 accumulator').toEqual([]);
      expect(diff(p.y, c.y32), 'y against the fp32 replay').toEqual([]);

      const y = p.y.toFloat32();
      const rtol = x.dtype === 'fp16' ? 2 ** -10 : 2 ** -22;
      const far = c.y64.data.findIndex((v, i) => !(Math.abs(y[i] - v) <= rtol * Math.abs(v)));
      expect(far, `y[${far}] = ${y[far]} against float64 ${c.y64.data[far]}`).toBe(-1);

      const [K, N] = c.w.shape;
      const xs = c.x.data;
      const sx = c.xScale.data;
      const sw = c.wScale.data;
      for (let i = 0; i < sx.length; i++) {
        for (let j = 0; j < N; j++) {
          let bound = 0;
          for (let k = 0; k < K; k++) bound += (Math.abs(xs[i * K + k]) * sw[j] + Math.abs(c.w.data[k * N + j]) * sx[i]) / 2 + 0.75 * sx[i] * sw[j];
          const err = Math.abs(y[i * N + j] - c.exact.data[i * N + j]);
          expect(err, `element [${i}, ${j}]`).toBeLessThanOrEqual(bound * 1.001 + rtol * Math.abs(c.exact.data[i * N + j]));
        }
      }

      // Without the accumulator as an output, onnxruntime fuses MatMulInteger, Cast and Mul into one
      // MatMulIntegerToFloat kernel that rounds in another order: same float64 tolerance, not bit-exact.
      const only = (await vectorwiseMatmul(x, wq)).toFloat32();
      const off = c.y64.data.findIndex((v, i) => !(Math.abs(only[i] - v) <= rtol * Math.abs(v)));
      expect(off, `fused y[${off}] = ${only[off]} against float64 ${c.y64.data[off]}`).toBe(-1);
      for (const t of [x, w, p.y, p.acc, p.xq, p.xScale]) t.dispose();
    });
  }
});

describe('vector-wise weights', () => {
  it('keep the weights tag, name their parts, and count codes and scales apart', async () => {
    const dev = await device('cpu');
    await settle();
    const before = dev.memory.liveByTag().weights;
    const w = dev.tensor(Array.from({ length: 64 * 16 }, (_, i) => Math.sin(i)), [64, 16], 'fp32', { tag: 'weights', label: 'layer0.wq' });
    const wq = await quantizeWeightVectorwise(w);
    expect([wq.q.label, wq.scale.label, wq.q.tag, wq.scale.tag]).toEqual(['layer0.wq.q', 'layer0.wq.scale', 'weights', 'weights']);
    expect(wq.scale.shape).toEqual([1, 16]);
    expect(wq.bytes).toEqual({ data: 64 * 16, scales: 4 * 16, zeroPoints: 0, total: 64 * 16 + 64, bitsPerValue: 8.5 });
    expect(dev.memory.liveByTag().weights - before).toBe(4 * 64 * 16 + 64 * 16 + 64);
    w.dispose();
    // The fp32 original can go: the int8 weight is all a product needs.
    expect(dev.memory.liveByTag().weights - before).toBe(64 * 16 + 64);
  });

  it('bind as graph constants: one compiled session per weight, reused by later calls at every batch size', async () => {
    const dev = await device('cpu');
    const backend = { get sessionCount() { return dev.stats().sessions; } };
    const wq = await quantizeWeightVectorwise(dev.tensor(Array.from({ length: 32 * 8 }, (_, i) => Math.cos(i)), [32, 8], 'fp32', { tag: 'weights' }));
    const x = (m: number) => dev.tensor(Array.from({ length: m * 32 }, (_, i) => Math.sin(i * 0.1)), [m, 32]);
    await vectorwiseMatmul(x(1), wq);
    const n = backend.sessionCount;
    await vectorwiseMatmul(x(1), wq);
    expect(backend.sessionCount).toBe(n);
    // The rows are a symbolic dim: another batch size runs the same session; another rank is another graph.
    await vectorwiseMatmul(x(3), wq);
    expect(backend.sessionCount).toBe(n);
    await vectorwiseMatmul(dev.tensor(Array.from({ length: 2 * 3 * 32 }, (_, i) => Math.sin(i)), [2, 3, 32]), wq);
    expect(backend.sessionCount).toBe(n + 1);
  });

  it('on webgpu the int8 GEMM and QuantizeLinear run on the CPU provider, and placement says so', async () => {
    if (!KINDS.includes('webgpu' as never)) return;
    const dev = await device('webgpu');
    const wq = await quantizeWeightVectorwise(dev.tensor(Array.from({ length: 16 * 4 }, (_, i) => i % 7 - 3), [16, 4], 'fp32', { tag: 'weights' }));
    await vectorwiseMatmul(dev.tensor(Array.from({ length: 32 }, (_, i) => i - 16), [2, 16]), wq);
    const p = dev.placement();
    expect([p.MatMulInteger, p.QuantizeLinear]).toEqual(['cpu', 'cpu']);
    expect([p.Abs, p.ReduceMax, p.Clip]).toEqual(['webgpu', 'webgpu', 'webgpu']);
  });
});
