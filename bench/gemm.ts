/** GEMM and decode-GEMV throughput per weight format (fp32, int8, 4-bit) on one device, each run as a whole graph. */
import { Graph, pack4, type Device, type Tensor } from '../engine/index.ts';
import { timeIt } from './stats.ts';

export interface GemmResult {
  op: string;
  dtype: string;
  m: number;
  k: number;
  n: number;
  backend: string;
  gflops: number;
  ms: number;
  runs: number;
}

export const SHAPES: [number, number, number][] = [
  [256, 256, 256],
  [1024, 1024, 1024],
  [2048, 2048, 2048],
  [1, 4096, 4096],
];

const BLOCK = 32;

function randomFloats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** Builds the graph and its operands for one format; the weight is what a quantized linear layer would hold. */
function setup(dev: Device, dtype: 'fp32' | 'int8' | 'int4', m: number, k: number, n: number): { graph: Graph; feeds: Tensor[] } {
  const g = new Graph(`${dtype}-gemm-${m}x${k}x${n}`);
  const x = g.input('x', 'fp32', [m, k]);
  const xs = dev.tensor(randomFloats(m * k, 1), [m, k]);
  if (dtype === 'fp32') {
    const w = g.input('w', 'fp32', [k, n]);
    g.output(g.op('MatMul', [x, w])[0]);
    return { graph: g, feeds: [xs, dev.tensor(randomFloats(k * n, 2), [k, n], 'fp32', { tag: 'weights' })] };
  }
  if (dtype === 'int8') {
    // The int8 linear as served: activations quantized on the fly, int8 weights, int32 accumulation, one rescale.
    const w = g.input('w', 'int8', [k, n]);
    const ws = g.input('wScale', 'fp32', []);
    const [q, qs, qz] = g.op('DynamicQuantizeLinear', [x]);
    const [acc] = g.op('MatMulInteger', [q, w, qz]);
    const [f] = g.op('Cast', [acc], { to: 'fp32' });
    const [s] = g.op('Mul', [qs, ws]);
    g.output(g.op('Mul', [f, s])[0]);
    const wq = Int8Array.from(randomFloats(k * n, 3), (v) => Math.round(v * 254));
    return { graph: g, feeds: [xs, dev.tensor(wq, [k, n], 'int8', { tag: 'weights' }), dev.tensor([0.01], [], 'fp32', { tag: 'weights' })] };
  }
  const nb = k / BLOCK;
  const codes = g.input('codes', 'uint8', [n, nb, BLOCK / 2]);
  const scales = g.input('scales', 'fp32', [n * nb]);
  g.output(g.op('MatMulNBits', [x, codes, scales, null], { K: k, N: n, blockSize: BLOCK, bits: 4 })[0]);
  const packed = pack4(Uint8Array.from(randomFloats(n * k, 4), (v) => Math.floor((v + 0.5) * 16) & 15));
  return {
    graph: g,
    feeds: [xs, dev.tensor(packed, [n, nb, BLOCK / 2], 'uint8', { tag: 'weights' }), dev.tensor(randomFloats(n * nb, 5).map((v) => 0.01 + Math.abs(v) * 0.02), [n * nb], 'fp32', { tag: 'weights' })],
  };
}

const OP = { fp32: 'MatMul', int8: 'DynamicQuantizeLinear+MatMulInteger', int4: 'MatMulNBits' } as const;

export async function benchGemm(dev: Device, dtype: 'fp32' | 'int8' | 'int4', [m, k, n]: [number, number, number]): Promise<GemmResult> {
  const { graph, feeds } = setup(dev, dtype, m, k, n);
  try {
    const t = await timeIt(async () => {
      for (const o of await dev.run(graph, feeds)) o.dispose();
    }, { warmup: 2, minRuns: 5, maxRuns: 30, minTimeMs: 500 });
    return { op: OP[dtype], dtype, m, k, n, backend: dev.kind, gflops: (2 * m * k * n) / t.ms / 1e6, ms: t.ms, runs: t.runs };
  } finally {
    for (const f of feeds) f.dispose();
  }
}
