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
  /** How the format is computed, so a number is read with its method. */
  variant: string;
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

/**
 * Builds the graph for one format with its weight bound as a constant, as a served linear layer holds it
 * (onnxruntime prepacks constant weights once); the activations are the feed.
 */
function setup(dev: Device, dtype: 'fp32' | 'int8' | 'int4', m: number, k: number, n: number, accuracyLevel = 4): { graph: Graph; feeds: Tensor[]; weights: Tensor[] } {
  const g = new Graph(`${dtype}-gemm-${m}x${k}x${n}`);
  const x = g.input('x', 'fp32', [m, k]);
  const feeds = [dev.tensor(randomFloats(m * k, 1), [m, k])];
  const opts = { tag: 'weights' as const };
  if (dtype === 'fp32') {
    const wt = dev.tensor(randomFloats(k * n, 2), [k, n], 'fp32', opts);
    g.output(g.op('MatMul', [x, g.constant('w', wt)])[0]);
    return { graph: g, feeds, weights: [wt] };
  }
  if (dtype === 'int8') {
    // The int8 linear as served: activations quantized on the fly, int8 weights, int32 accumulation, one rescale.
    const wt = dev.tensor(Int8Array.from(randomFloats(k * n, 3), (v) => Math.round(v * 254)), [k, n], 'int8', opts);
    const st = dev.tensor([0.01], [], 'fp32', opts);
    const [q, qs, qz] = g.op('DynamicQuantizeLinear', [x]);
    const [acc] = g.op('MatMulInteger', [q, g.constant('w', wt), qz]);
    const [f] = g.op('Cast', [acc], { to: 'fp32' });
    const [s] = g.op('Mul', [qs, g.constant('wScale', st)]);
    g.output(g.op('Mul', [f, s])[0]);
    return { graph: g, feeds, weights: [wt, st] };
  }
  const nb = k / BLOCK;
  const packed = pack4(Uint8Array.from(randomFloats(n * k, 4), (v) => Math.floor((v + 0.5) * 16) & 15));
  const codes = dev.tensor(packed, [n, nb, BLOCK / 2], 'uint8', opts);
  const scales = dev.tensor(randomFloats(n * nb, 5).map((v) => 0.01 + Math.abs(v) * 0.02), [n * nb], 'fp32', opts);
  g.output(g.op('MatMulNBits', [x, g.constant('codes', codes), g.constant('scales', scales), null], { K: k, N: n, blockSize: BLOCK, bits: 4, accuracyLevel })[0]);
  return { graph: g, feeds, weights: [codes, scales] };
}

const OP = { fp32: 'MatMul', int8: 'DynamicQuantizeLinear+MatMulInteger', int4: 'MatMulNBits' } as const;
const VARIANT = {
  fp32: 'fp32 weight, fp32 accumulation',
  int8: 'activations quantized per tensor on the fly (uint8), int8 weight, int32 accumulation, fp32 rescale',
  int4: `4-bit weight in blocks of ${BLOCK} with fp32 scales; accuracy level 4 (activations quantized to int8 per block)`,
} as const;

export async function benchGemm(dev: Device, dtype: 'fp32' | 'int8' | 'int4', [m, k, n]: [number, number, number]): Promise<GemmResult> {
  const { graph, feeds, weights } = setup(dev, dtype, m, k, n);
  try {
    const t = await timeIt(async () => {
      for (const o of await dev.run(graph, feeds)) o.dispose();
    }, { warmup: 2, minRuns: 5, maxRuns: 30, minTimeMs: 500 });
    return { op: OP[dtype], dtype, m, k, n, backend: dev.kind, gflops: (2 * m * k * n) / t.ms / 1e6, ms: t.ms, runs: t.runs, variant: VARIANT[dtype] };
  } finally {
    for (const f of [...feeds, ...weights]) f.dispose();
  }
}
