/**
 * The Linear 'nf4' and 'fp4' formats (QLoRA's storage type, onnxruntime's MatMulBnb4), on the cpu and reference
 * backends: y equals x times the layer's own dequantized weight plus b to fp32 rounding (1e-6 normwise), and is
 * within the 4-bit error of x @ W + b (NF4 0.12, FP4 0.16 normwise for Gaussian x and W, measured 0.07 and 0.1);
 * bytes match the tracker and nf4WeightBytes exactly, with double quantization bringing the constants from 0.5 to
 * 0.127 bits per weight (plus the stored map and mean); the held weight dequantizes in another graph; bad options are
 * refused before anything is allocated. Also loads the built-in model in nf4 and compares its logits with fp32.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, Graph, Linear, QuantizationError, type Device, type Nf4Weight, type Tensor } from '../../../engine/index.ts';
import { bitsPerParameter, codebookDequantize, codebookQuantize, doubleDequantize, doubleQuantize, FP4, NF4, NonFiniteBlockError, nf4WeightBytes, addNf4Weight } from '../../../engine/quant/index.ts';
import { loadModel } from '../../../engine/model/checkpoint.ts';
import { gaussian } from '../../helpers/gaussian.ts';

const K = 128;
const N = 48;
const M = 6;


const xv = gaussian(M * K, 11);
const wv = gaussian(K * N, 12).map((v) => v / 8);
const bv = gaussian(N, 13);

function product(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | null): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
    let s = b ? b[j] : 0;
    for (let k = 0; k < K; k++) s += x[i * K + k] * w[k * N + j];
    out[i * N + j] = s;
  }
  return out;
}

function relError(y: Tensor | ArrayLike<number>, ref: Float64Array): number {
  const v = 'toFloat32' in y ? (y as Tensor).toFloat32() : y;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (v[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The weight the layer stands for, [K, N], by the host functions (transposed in, quantized, transposed back). */
function dequantized(format: 'nf4' | 'fp4', blockSize: number, doubleQuant: boolean): Float32Array {
  const t = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) t[n * K + k] = wv[k * N + n];
  const book = format === 'nf4' ? NF4 : FP4;
  const q = codebookQuantize(t, book, { blockSize });
  const absmax = doubleQuant ? doubleDequantize(doubleQuantize(q.absmax)) : q.absmax;
  const d = codebookDequantize({ ...q, absmax }, book);
  const out = new Float32Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) out[k * N + n] = d[n * K + k];
  return out;
}

const TOLERANCE = { nf4: 0.12, fp4: 0.16 };

describe.each(['cpu', 'reference'])('Linear nf4/fp4 on %s', (kind) => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice(kind);
  });
  afterAll(async () => {
    await dev.dispose();
  });

  for (const format of ['nf4', 'fp4'] as const) {
    for (const doubleQuant of [false, true]) {
      it(`${format}${doubleQuant ? ' double-quantized' : ''}: x times its own dequantized weight, near x @ W, exact bytes`, async () => {
        const w = dev.tensor(wv, [K, N], 'fp32', { tag: 'weights', label: 'source' });
        const before = dev.memory.liveByTag().weights;
        const lin = await Linear.fromWeights(dev, w, { format, doubleQuant, bias: bv, label: 'mlp.up' });
        const bytes = lin.bytes();
        expect(bytes.weights).toBe(nf4WeightBytes(K, N, { blockSize: 64, doubleQuant }));
        expect(dev.memory.liveByTag().weights - before).toBe(bytes.total);
        expect(Object.keys(bytes.parts).every((l) => l.startsWith('mlp.up.'))).toBe(true);
        // Codes and constants as QLoRA counts them; the 16 levels (and with double quantization the mean and the
        // 256-entry map) are per-tensor extras.
        const tables = 64 + (doubleQuant ? 4 + 1024 : 0);
        const perWeight = bitsPerParameter({ blockSize: 64, doubleQuant, numel: K * N });
        expect(bytes.bitsPerWeight).toBeCloseTo(perWeight.codes + perWeight.constants + (tables * 8) / (K * N), 12);

        const x = dev.tensor(xv, [2, 3, K]);
        const y = await lin.forward(x);
        expect([y.dtype, y.shape]).toEqual(['fp32', [2, 3, N]]);
        expect(relError(y, product(xv, dequantized(format, 64, doubleQuant), bv))).toBeLessThan(1e-6);
        const err = relError(y, product(xv, wv, bv));
        expect(err).toBeLessThan(TOLERANCE[format]);
        expect(err, 'a 4-bit format is not secretly exact').toBeGreaterThan(1e-3);
        expect(lin.describe()).toMatchObject({ format, options: { blockSize: 64, doubleQuant, ...(doubleQuant ? { blockSize2: 256 } : {}) } });
        expect(lin.describe().compute).toMatch(/MatMulBnb4/);

        lin.dispose();
        expect(dev.memory.liveByTag().weights).toBe(before);
        for (const t of [w, x, y]) t.dispose();
      });
    }
  }

  it('the held Nf4Weight dequantizes in another graph (a QLoRA base) to the weight forward multiplies by', async () => {
    const lin = await Linear.fromWeights(dev, dev.tensor(wv, [K, N]), { format: 'nf4', doubleQuant: true, blockSize: 32 });
    const g = new Graph('base');
    g.output(addNf4Weight(g, lin.weight as Nf4Weight, 'base'));
    const [W] = await dev.run(g, []);
    const t = new Float32Array(K * N);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) t[n * K + k] = wv[k * N + n];
    const q = codebookQuantize(t, NF4, { blockSize: 32 });
    const d = codebookDequantize({ ...q, absmax: doubleDequantize(doubleQuantize(q.absmax)) }, NF4);
    const got = W.toFloat32();
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) expect(got[k * N + n]).toBe(d[n * K + k]);
    lin.dispose();
  });

  it('bad options and non-finite weights are refused, leaving nothing allocated', async () => {
    const before = dev.memory.liveByTag().weights ?? 0;
    const w = dev.tensor(wv, [K, N], 'fp32', { tag: 'other' });
    for (const blockSize of [8, 48, 512]) await expect(Linear.fromWeights(dev, w, { format: 'nf4', blockSize })).rejects.toThrow(/blockSize must be one of 16, 32, 64, 128, 256/);
    await expect(Linear.fromWeights(dev, w, { format: 'nf4', doubleQuant: 'yes' as never })).rejects.toThrow(QuantizationError);
    const bad = Float32Array.from(wv);
    bad[5 * N + 7] = NaN; // W[5, 7] is W^T[7, 5]: flat 7 K + 5, block (7 K + 5) / 64
    await expect(Linear.fromWeights(dev, dev.tensor(bad, [K, N], 'fp32', { tag: 'other' }), { format: 'fp4' })).rejects.toThrow(NonFiniteBlockError);
    await expect(Linear.fromWeights(dev, dev.tensor(bad, [K, N], 'fp32', { tag: 'other' }), { format: 'fp4' })).rejects.toThrow(`block ${Math.floor((7 * K + 5) / 64)} holds NaN`);
    expect(dev.memory.liveByTag().weights ?? 0).toBe(before);
  });
});

describe('the built-in model in nf4', () => {
  it('loads with double quantization, stores 4.127 bits per weight plus per-tensor tables, and its logits stay close to fp32', async () => {
    const dev = await createDevice('cpu');
    const dir = new URL('../../../models/builtin/', import.meta.url).pathname;
    const fp32 = await loadModel(dir, { device: dev, format: 'fp32' });
    const nf4 = await loadModel(dir, { device: dev, format: 'nf4', linear: { doubleQuant: true } });
    let bits = 0;
    let count = 0;
    let expected = 0;
    for (const lin of nf4.linears().values()) {
      bits += lin.bytes().weights * 8;
      count += lin.inFeatures * lin.outFeatures;
      expected += nf4WeightBytes(lin.inFeatures, lin.outFeatures, { doubleQuant: true }) * 8;
    }
    // The paper's 4.127 counts codes and constants; each of these small matrices (65536 to 196608 weights) also
    // carries its 1 KiB dynamic map, the mean and the 16 levels, about 0.08 bits more per weight.
    expect(bits).toBe(expected);
    const prompt = [[...new TextEncoder().encode('The cat sat on the mat. ')]];
    const logits = async (m: typeof fp32) => (await m.prefill(prompt, await m.createCache(1, 64), { all: true })).logits.toFloat32();
    const [a, b] = [await logits(fp32), await logits(nf4)];
    let num = 0;
    let den = 0;
    let agree = 0;
    const V = fp32.cfg.vocabSize;
    for (let r = 0; r < a.length / V; r++) {
      const ra = a.subarray(r * V, (r + 1) * V);
      const rb = b.subarray(r * V, (r + 1) * V);
      if (ra.indexOf(Math.max(...ra)) === rb.indexOf(Math.max(...rb))) agree++;
    }
    for (let i = 0; i < a.length; i++) {
      num += (a[i] - b[i]) ** 2;
      den += a[i] ** 2;
    }
    console.log(`built-in model nf4 + double quant: ${(bits / count).toFixed(3)} bits per linear weight; logits rel. error ${Math.sqrt(num / den).toFixed(4)}; argmax agrees at ${agree}/${a.length / V} positions`);
    expect(bits / count).toBeGreaterThan(4.127);
    expect(bits / count).toBeLessThan(4.25);
    expect(Math.sqrt(num / den)).toBeLessThan(0.2);
    expect(agree / (a.length / V)).toBeGreaterThan(0.6);
    fp32.dispose();
    nf4.dispose();
    await dev.dispose();
  });
});
