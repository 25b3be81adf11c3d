/**
 * A pre-norm decoder block as one graph (Llama's layout: RMSNorm, q/k/v/o projections, causal attention, a residual,
 * an MLP with SiLU), built at symbolic or exact sizes from the same layers, so a session that serves every batch and
 * length can be timed against one compiled for a single shape.
 */
import { Graph, Linear, type Device, type Dim, type LinearFormat, type Tensor, type Value } from '../engine/index.ts';
import { rng, uniform } from './random.ts';

export interface BlockConfig {
  hidden: number;
  heads: number;
  /** Formats of the MLP's up and down projections (attention projections are fp32). */
  mlp: [LinearFormat, LinearFormat];
}

export interface Block {
  readonly config: BlockConfig;
  /** The step graph at these dims: symbols ('batch', 'seq') or sizes. Input x [batch, seq, hidden], output the same. */
  build(batch: Dim, seq: Dim): Graph;
  dispose(): void;
}

/** Weights with the variance of N(0, 1/k), seeded, so every run of the benchmark builds the same block. */
function weight(dev: Device, k: number, n: number, seed: number): Tensor {
  const half = Math.sqrt(3 / k);
  return dev.tensor(uniform(rng(seed), k * n, -half, half), [k, n], 'fp32', { tag: 'weights', label: `block.source${seed}` });
}

export async function makeBlock(dev: Device, config: BlockConfig): Promise<Block> {
  const { hidden: H, heads, mlp } = config;
  if (H % heads !== 0) throw new Error(`block: hidden ${H} is not a multiple of heads ${heads}`);
  const layer = async (k: number, n: number, format: LinearFormat, seed: number, label: string) => {
    const w = weight(dev, k, n, seed);
    try {
      return await Linear.fromWeights(dev, w, { format, label: `block.${label}`, ...(format === 'int4' ? { accuracyLevel: 4 as const } : {}) });
    } finally {
      w.dispose();
    }
  };
  const [q, k, v, o] = await Promise.all(['q', 'k', 'v', 'o'].map((nm, i) => layer(H, H, 'fp32', i + 1, nm)));
  const up = await layer(H, 2 * H, mlp[0], 5, 'up');
  const down = await layer(2 * H, H, mlp[1], 6, 'down');
  const norm1 = dev.tensor(new Float32Array(H).fill(1), [H], 'fp32', { tag: 'weights', label: 'block.norm1' });
  const norm2 = dev.tensor(new Float32Array(H).fill(1), [H], 'fp32', { tag: 'weights', label: 'block.norm2' });
  const hd = H / heads;

  const build = (batch: Dim, seq: Dim): Graph => {
    const g = new Graph(`decoder block ${H} (${typeof batch === 'number' ? `${batch} x ${seq}` : 'symbolic'})`);
    const one = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
    const x = g.input('x', 'fp32', [batch, seq, H]);
    // [batch, seq, H] -> [batch, heads, seq, hd] and back.
    const split = (t: Value) => one('Transpose', [one('Reshape', [t], { shape: [batch, seq, heads, hd] })], { perm: [0, 2, 1, 3] });
    const merge = (t: Value) => one('Reshape', [one('Transpose', [t], { perm: [0, 2, 1, 3] })], { shape: [batch, seq, H] });
    const h = one('RMSNorm', [x, g.constant('norm1', norm1)]);
    const att = one('Attention', [split(q.addTo(g, h)), split(k.addTo(g, h)), split(v.addTo(g, h))], { causal: true });
    const r = one('Add', [x, o.addTo(g, merge(att))]);
    const m = down.addTo(g, one('SiLU', [up.addTo(g, one('RMSNorm', [r, g.constant('norm2', norm2)]))]));
    return g.output(one('Add', [r, m]));
  };

  return {
    config,
    build,
    dispose() {
      for (const l of [q, k, v, o, up, down]) l.dispose();
      norm1.dispose();
      norm2.dispose();
    },
  };
}
