/**
 * Linear in every format against x @ W + b in float64, on the cpu and reference backends.
 *
 * Normwise relative error ||y - ref|| / ||ref|| per format, for Gaussian x and W (K = 64), with its expected size:
 *   fp32 1e-6 (fp32 rounding), fp16 1.5e-3 (inputs and output rounded at 2^-11), bf16 1e-2 (2^-8),
 *   int8 and llm.int8 3e-2 (one step of absmax / 127 per value), per-tensor int8 5e-2 (the same, with the largest value
 *   of all x and all W setting the steps), int4 0.15 (one step of absmax / 7 per weight).
 * int4 with accuracy level 0 is also checked against x times its own dequantized weight (fp32 rounding only), and
 * bytes against the tracker exactly: codes, scales and copies counted by label.
 */
import { describe, expect, it } from 'vitest';
import {
  createDevice, DeviceError, dequantizeInt4, Graph, Linear, LINEAR_FORMATS, QuantizationError, ShapeError, webgpuUnavailable,
  type Device, type Int4Weight, type LinearFormat, type Tensor,
} from '../../../engine/index.ts';
import { gaussian } from '../../helpers/gaussian.ts';

const K = 64;
const N = 48;
const M = 15;


const xv = gaussian(M * K, 1);
const wv = gaussian(K * N, 2).map((v) => v / 8);
const bv = gaussian(N, 3);

function reference(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = b ? b[j] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[k * N + j];
      out[i * N + j] = s;
    }
  }
  return out;
}

function relError(y: Tensor, ref: Float64Array): number {
  const v = y.toFloat32();
  let e = 0;
  let r = 0;
  ref.forEach((want, i) => ((e += (v[i] - want) ** 2), (r += want * want)));
  return Math.sqrt(e / r);
}

const TOLERANCE: Record<LinearFormat, number> = { fp32: 1e-6, fp16: 1.5e-3, bf16: 1e-2, 'int8-tensor': 5e-2, int8: 3e-2, 'llm.int8': 3e-2, int4: 0.15, nf4: 0.12, fp4: 0.16 };

/** Bytes of each format for W [K, N] and a bias [N], by hand. */
const BYTES: Record<LinearFormat, { weights: number; bias: number }> = {
  fp32: { weights: 4 * K * N, bias: 4 * N },
  fp16: { weights: 2 * K * N, bias: 2 * N },
  bf16: { weights: 2 * K * N, bias: 2 * N },
  'int8-tensor': { weights: K * N + 4, bias: 4 * N },
  int8: { weights: K * N + 4 * N, bias: 4 * N },
  'llm.int8': { weights: K * N + 4 * N + 2 * K * N, bias: 4 * N },
  int4: { weights: (K * N) / 2 + 4 * N * (K / 32), bias: 4 * N },
  // Codes, an fp32 absmax per 64 weights, and the 16 fp32 levels.
  nf4: { weights: (K * N) / 2 + 4 * ((K * N) / 64) + 64, bias: 4 * N },
  fp4: { weights: (K * N) / 2 + 4 * ((K * N) / 64) + 64, bias: 4 * N },
};

const devices = new Map<string, Promise<Device>>();
const device = (kind: string) => (devices.has(kind) ? devices.get(kind)! : (devices.set(kind, createDevice(kind)), devices.get(kind)!));

/** cpu and the reference always, webgpu where an adapter works (its fp16 sums may be rounded to fp16: 4x fp16's tolerance). */
const KINDS = ['cpu', 'reference', ...((await webgpuUnavailable()) === null ? ['webgpu'] : [])];
const tolerance = (kind: string, f: LinearFormat) => TOLERANCE[f] * (kind === 'webgpu' && f === 'fp16' ? 4 : 1);

describe.each(KINDS)('Linear on %s', (kind) => {
  for (const format of LINEAR_FORMATS) {
    it(`${format}: close to x @ W + b, exact bytes, freed on dispose`, async () => {
      const dev = await device(kind);
      const w = dev.tensor(wv, [K, N], 'fp32', { tag: 'weights', label: 'source' });
      const before = dev.memory.liveByTag().weights;
      const lin = await Linear.fromWeights(dev, w, { format, bias: bv, label: 'mlp.up' });
      const bytes = lin.bytes();
      expect({ weights: bytes.weights, bias: bytes.bias }).toEqual(BYTES[format]);
      expect(dev.memory.liveByTag().weights - before).toBe(bytes.total);
      expect(bytes.bitsPerWeight).toBe((BYTES[format].weights * 8) / (K * N));
      expect(Object.keys(bytes.parts).every((l) => l.startsWith('mlp.up.'))).toBe(true);

      const x = dev.tensor(xv, [3, 5, K]);
      const y = await lin.forward(x);
      expect([y.dtype, y.shape]).toEqual(['fp32', [3, 5, N]]);
      const err = relError(y, reference(xv, wv, bv));
      expect(err).toBeLessThan(tolerance(kind, format));
      if (format !== 'fp32') expect(err, 'a quantized format is not secretly exact').toBeGreaterThan(1e-6);

      const info = lin.describe();
      expect(info).toMatchObject({ format, inFeatures: K, outFeatures: N, label: 'mlp.up', device: dev.name });
      expect(JSON.parse(JSON.stringify(info))).toEqual(info);

      lin.dispose();
      expect(dev.memory.liveByTag().weights).toBe(before);
      await expect(lin.forward(x)).rejects.toThrow(DeviceError);
      for (const t of [w, x, y]) t.dispose();
    });
  }

  it('int4 with accuracy level 0 is x times its own dequantized weight, to fp32 rounding', async () => {
    const dev = await device(kind);
    const w = dev.tensor(wv, [K, N], 'fp32', { tag: 'weights' });
    const lin = await Linear.fromWeights(dev, w, { format: 'int4' });
    const held = lin.weight as Int4Weight;
    expect([held.K, held.N, held.blockSize, held.codes.dtype, held.codes.shape]).toEqual([K, N, 32, 'uint8', [N, K / 32, 16]]);
    const y = await lin.forward(dev.tensor(xv, [M, K]));
    expect(relError(y, reference(xv, dequantizeInt4(held), null))).toBeLessThan(1e-6);
  });

  it('follows x dtype: fp16 and bf16 activations give fp16 and bf16 outputs', async () => {
    const dev = await device(kind);
    const w = dev.tensor(wv, [K, N], 'fp32', { tag: 'weights' });
    for (const format of ['fp32', 'int8', 'llm.int8'] as const) {
      const lin = await Linear.fromWeights(dev, w, { format });
      for (const dt of ['fp16', 'bf16'] as const) {
        const y = await lin.forward(dev.tensor(xv, [M, K], dt));
        expect(y.dtype).toBe(dt);
        expect(relError(y, reference(xv, wv, null))).toBeLessThan(tolerance(kind, format) + (dt === 'bf16' ? 1e-2 : 2e-3));
      }
    }
  });
});

describe('Linear composition and bad input', () => {
  it('addTo puts two layers in one graph, equal to two forward calls', async () => {
    const dev = await device('cpu');
    const a = await Linear.fromWeights(dev, dev.tensor(wv, [K, N]), { format: 'int8', label: 'a' });
    const b = await Linear.fromWeights(dev, dev.tensor(wv.slice(0, N * N), [N, N]), { format: 'fp16', bias: bv, label: 'b' });
    const x = dev.tensor(xv, [M, K]);
    const g = new Graph('two layers');
    g.output(b.addTo(g, a.addTo(g, g.input('x', 'fp32', [M, K]))));
    const [fused] = await dev.run(g, [x]);
    const twice = await b.forward(await a.forward(x));
    expect(fused.toArray()).toEqual(twice.toArray());
  });

  it('typed errors: format, bias, shapes, devices, threshold, block size', async () => {
    const dev = await device('cpu');
    const w = dev.tensor(wv, [K, N]);
    await expect(Linear.fromWeights(dev, w, { format: 'fp8' as never })).rejects.toThrow('unknown Linear format "fp8"; expected one of fp32, fp16, bf16, int8-tensor, int8, llm.int8, int4');
    await expect(Linear.fromWeights(dev, w, { bias: [1, 2, 3] })).rejects.toThrow(/the bias must be \[48\]/);
    await expect(Linear.fromWeights(dev, dev.tensor([1, 2, 3], [3]))).rejects.toThrow(ShapeError);
    await expect(Linear.fromWeights(dev, w, { format: 'llm.int8', threshold: -1 })).rejects.toThrow(QuantizationError);
    await expect(Linear.fromWeights(dev, w, { format: 'int4', blockSize: 24 })).rejects.toThrow(/power of two >= 16/);
    await expect(Linear.fromWeights(dev, dev.tensor(wv.slice(0, 48 * N), [48, N]), { format: 'int4' })).rejects.toThrow(/multiple of blockSize=32/);
    const lin = await Linear.fromWeights(dev, w, { format: 'llm.int8' });
    await expect(lin.forward(dev.tensor([1, 2], [1, 2]))).rejects.toThrow(/inFeatures=64/);
    const other = await device('reference');
    await expect(lin.forward(other.tensor(xv, [M, K]))).rejects.toThrow(DeviceError);
  });

  it('llm.int8 inside a larger graph (outliers found in the graph) equals forward (outliers found on the host)', async () => {
    const dev = await device('cpu');
    // Planted outliers in dimensions 3 and 40, in some rows only: LLM.int8's outliers are per column of the batch.
    const x = xv.map((v, i) => ((i % K === 3 && i < 5 * K) || i % K === 40 ? v * 20 : v));
    for (const variant of ['paper', 'bitsandbytes'] as const) {
      const lin = await Linear.fromWeights(dev, dev.tensor(wv, [K, N]), { format: 'llm.int8', variant, bias: bv });
      const g = new Graph('llm.int8 in a graph');
      g.output(lin.addTo(g, g.input('x', 'fp32', ['rows', K])));
      const xt = dev.tensor(x, [M, K]);
      const [inGraph] = await dev.run(g, [xt]);
      const direct = await lin.forward(xt);
      const a = inGraph.toFloat32();
      const b = direct.toFloat32();
      // Same integers and the same fp16 products; the two graphs may sum the fp32 parts in another order.
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i]), `${variant} element ${i}`).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(b[i])));
      const rows3d = await dev.run(g, [dev.tensor(x.slice(0, 5 * K), [5, K])]);
      expect(rows3d[0].shape).toEqual([5, N]);
      lin.dispose();
    }
  });

  it('takes weights from another device, copying them, and leaves nothing behind there', async () => {
    const dev = await device('cpu');
    const ref = await device('reference');
    const w = ref.tensor(wv, [K, N], 'fp32', { tag: 'weights' });
    const refBefore = ref.memory.live;
    const lin = await Linear.fromWeights(dev, w, { format: 'int8' });
    expect(ref.memory.live).toBe(refBefore);
    expect(lin.bytes().parts).toEqual({ 'linear.q': K * N, 'linear.scale': 4 * N });
  });
});
