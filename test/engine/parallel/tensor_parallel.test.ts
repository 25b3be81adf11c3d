/**
 * Megatron tensor parallelism of one Llama layer (engine/parallel/tensor_parallel.ts), every rank's graphs run in
 * this process and the collectives replaced by sums: the ranks' partial outputs plus the residual against the
 * unsharded layer (its math written here from the same ops, as decoder.ts has it) and against decoder() itself for a
 * whole 2-layer model; the partial d h and norm gradients summed and the sharded gradients concatenated against
 * backward() of the unsharded layer.
 *
 * Errors are max |tp - ref| / max |ref| per tensor. One rank runs the same arithmetic as the unsharded layer: exactly
 * 0 (measured). fp32 on 2 and 4 ranks: the sums over ranks reorder fp32 additions of the row-parallel contractions
 * (o, down) and of the norms' backward; measured up to 3.4e-7 (outputs, d h and every gradient), and 3.0e-7 on the
 * logits of a 2-layer model against decoder(); bound 1e-5. bf16 parameters, against the reference run in fp32 at the
 * same bf16-rounded values: outputs and d h stay fp32 (measured up to 2.6e-7, bound 1e-5); parameter gradients come
 * back rounded to bf16 (unit roundoff 2^-8 = 3.9e-3 relative) and the norms' gradients are sums of N rounded
 * partials: measured up to 3.4e-3, bound 2^-7 = 7.8e-3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, Graph, ShapeError, backward, type Device, type Tensor, type Value } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { causalAttention, decoder, type DecoderWeights } from '../../../engine/model/decoder.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { tensorParallelLayer, tpCommBytesPerLayer, type TensorParallelLayer, type TensorParallelPrecision } from '../../../engine/parallel/tensor_parallel.ts';
import { gatherShards, layerShapes, shardLayer, unshardLayerGrads, type LayerShard } from '../../../engine/parallel/tensor_parallel_shard.ts';
import { maxRelError } from '../../helpers/rel_error.ts';
import { TINY_LLAMA } from '../../helpers/tiny_llama.ts';

const CFG: LlamaConfig = { ...TINY_LLAMA, maxPositions: 16, tieWordEmbeddings: false };
/** Multi-head attention (4 kv heads), so that 4 ranks divide every split. */
const CFG_MHA: LlamaConfig = { ...CFG, numKvHeads: 4 };
const B = 2;
const S = 5;
const H = CFG.hiddenSize;
const FP32_TOL = 1e-5;
const BF16_GRAD_TOL = 2 ** -7;

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const randn = (r: Rng, n: number, mean: number, std: number) => Float32Array.from({ length: n }, () => r.normal(mean, std));
/** Linears N(0, 1/in) so activations keep unit scale; norms N(1, 0.1) so their gradients are not symmetric. */
const randomLayer = (cfg: LlamaConfig, r: Rng) => layerShapes(cfg).map((s) => (s.length === 1 ? randn(r, s[0], 1, 0.1) : randn(r, numel(s), 0, 1 / Math.sqrt(s[0]))));
/** Row b of the batch starts at position b, so that the tables are read at more than one offset. */
const POSITIONS = Int32Array.from({ length: B * S }, (_, i) => Math.floor(i / S) + (i % S));

const relErr = maxRelError;

/** The collectives, replaced by sums; every all-reduce's element count is recorded. */
class Sums {
  readonly counts: number[] = [];
  allReduce(parts: readonly Float32Array[], plus?: Float32Array): Float32Array {
    this.counts.push(parts[0].length);
    const out = plus ? plus.slice() : new Float32Array(parts[0].length);
    for (const p of parts) for (let i = 0; i < out.length; i++) out[i] += p[i];
    return out;
  }
}

async function run(graph: Graph, feeds: Tensor[]): Promise<Float32Array[]> {
  const outs = await dev.run(graph, feeds);
  const v = outs.map((t) => t.toFloat32());
  outs.forEach((t) => t.dispose());
  return v;
}

/** The unsharded layer (decoder.ts's block math with the same ops): h -> h + attn(norm h) -> + mlp(norm); or its VJP. */
function fullLayer(cfg: LlamaConfig, tables: Tensor[], vjp: boolean): Graph {
  const g = new Graph(`full layer${vjp ? ' VJP' : ''}`);
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const h = g.input('h', 'fp32', ['batch', 'seq', H]);
  const positions = g.input('positions', 'int32', ['batch', 'seq']);
  const p = layerShapes(cfg).map((s, i) => g.input(`p${i}`, 'fp32', s));
  const [cos, sin] = [g.constant('cos', tables[0]), g.constant('sin', tables[1])];
  const rope = (x: Value, n: number) => op('RotaryEmbedding', [x, positions, cos, sin], { numHeads: n });
  const mm = (x: Value, w: Value) => op('MatMul', [x, w]);
  const n = op('RMSNorm', [h, p[0]], { epsilon: cfg.rmsNormEps });
  const att = causalAttention(g, cfg)(0, rope(mm(n, p[1]), cfg.numHeads), rope(mm(n, p[2]), cfg.numKvHeads), mm(n, p[3]));
  const h1 = op('Add', [h, mm(att, p[4])]);
  const n2 = op('RMSNorm', [h1, p[5]], { epsilon: cfg.rmsNormEps });
  const out = op('Add', [h1, mm(op('Mul', [op('SiLU', [mm(n2, p[6])]), mm(n2, p[7])]), p[8])]);
  if (!vjp) return g.output(out);
  const dY = g.input('dY', 'fp32', ['batch', 'seq', H]);
  return backward(g, op('ReduceSum', [op('Mul', [out, dY])], { keepdims: false }), [h, ...p]).graph;
}

const tensors = (values: readonly Float32Array[], shapes: readonly number[][], dtype: TensorParallelPrecision) => values.map((v, i) => dev.tensor(v, shapes[i], dtype));
const free = (ts: Tensor[]) => ts.forEach((t) => t.dispose());

interface TpResult {
  out: Float32Array;
  dh: Float32Array;
  grads: Float32Array[];
  sums: Sums;
}

/** One layer on `size` ranks: forward, then the VJP of dY, the collectives as sums. */
async function tpLayer(cfg: LlamaConfig, tp: TensorParallelLayer, shards: LayerShard[], h: Float32Array, dY?: Float32Array): Promise<TpResult> {
  const sums = new Sums();
  const shape = [B, S, H];
  const pos = dev.tensor(POSITIONS, [B, S], 'int32');
  const params = shards.map((s) => tensors(s.values, s.shapes, tp.precision));
  const block = async (which: 'attention' | 'mlp', x: Float32Array) => {
    const lo = which === 'attention' ? 0 : 5;
    const hi = which === 'attention' ? 5 : 9;
    const hT = dev.tensor(x, shape);
    const partials = await Promise.all(params.map(async (p) => (await run(tp[which].forward, [hT, pos, ...p.slice(lo, hi)]))[0]));
    hT.dispose();
    return sums.allReduce(partials, x); // g's all-reduce, then the residual
  };
  const vjp = async (which: 'attention' | 'mlp', x: Float32Array, dOut: Float32Array) => {
    const lo = which === 'attention' ? 0 : 5;
    const hi = which === 'attention' ? 5 : 9;
    const [hT, dT] = [dev.tensor(x, shape), dev.tensor(dOut, shape)];
    const outs = await Promise.all(params.map((p) => run(tp[which].vjp, [hT, pos, ...p.slice(lo, hi), dT])));
    free([hT, dT]);
    // f's all-reduce of the partial d h, then the residual's dOut.
    return { dh: sums.allReduce(outs.map((o) => o[1]), dOut), grads: outs.map((o) => o.slice(2)) };
  };
  const h1 = await block('attention', h);
  const out = await block('mlp', h1);
  if (!dY) {
    free([pos, ...params.flat()]);
    return { out, dh: new Float32Array(0), grads: [], sums };
  }
  const m = await vjp('mlp', h1, dY);
  const a = await vjp('attention', h, m.dh);
  free([pos, ...params.flat()]);
  const perRank = a.grads.map((g, r) => [...g, ...m.grads[r]]);
  return { out, dh: a.dh, grads: unshardLayerGrads(cfg, perRank), sums };
}

async function compare(cfg: LlamaConfig, size: number, precision: TensorParallelPrecision, seed: number) {
  const r = new Rng(seed);
  const layer = randomLayer(cfg, r);
  const h = randn(r, B * S * H, 0, 1);
  const dY = randn(r, B * S * H, 0, 1);
  const tp = tensorParallelLayer(cfg, dev, size, precision);
  // The reference runs at the values the ranks hold: bf16-rounded for 'bf16'.
  const held = precision === 'fp32' ? layer : layer.map((v, i) => {
    const t = dev.tensor(v, layerShapes(cfg)[i], 'bf16');
    const x = t.toFloat32();
    t.dispose();
    return x;
  });
  const shards = Array.from({ length: size }, (_, rank) => shardLayer(cfg, layer, rank, size));
  const got = await tpLayer(cfg, tp, shards, h, dY);
  const hT = dev.tensor(h, [B, S, H]);
  const pos = dev.tensor(POSITIONS, [B, S], 'int32');
  const dT = dev.tensor(dY, [B, S, H]);
  const ps = tensors(held, layerShapes(cfg), 'fp32');
  const [out] = await run(fullLayer(cfg, tp.tables, false), [hT, pos, ...ps]);
  const [, dh, ...grads] = await run(fullLayer(cfg, tp.tables, true), [hT, pos, ...ps, dT]);
  free([hT, pos, dT, ...ps]);
  tp.dispose();
  return {
    out: relErr(got.out, out),
    dh: relErr(got.dh, dh),
    grads: grads.map((g, i) => relErr(got.grads[i], g)),
    sums: got.sums,
  };
}

describe('shardLayer', () => {
  it('splits q, k, v by heads with the grouped-query mapping kept, o by the query heads rows, the MLP by columns then rows', () => {
    const r = new Rng(1);
    const layer = randomLayer(CFG, r);
    const D = CFG.headDim;
    const s1 = shardLayer(CFG, layer, 1, 2);
    expect(s1.shapes).toEqual([[H], [H, 16], [H, 8], [H, 8], [16, H], [H], [H, 24], [H, 24], [24, H]]);
    // Rank 1 holds query heads 2 and 3, which read kv head floor(h / 2) = 1: q columns 16..31, k and v columns 8..15.
    for (let row = 0; row < H; row++) {
      expect(s1.values[1].subarray(row * 2 * D, (row + 1) * 2 * D)).toEqual(layer[1].subarray(row * 4 * D + 2 * D, (row + 1) * 4 * D));
      expect(s1.values[2].subarray(row * D, (row + 1) * D)).toEqual(layer[2].subarray(row * 2 * D + D, (row + 1) * 2 * D));
      expect(s1.values[7].subarray(row * 24, (row + 1) * 24)).toEqual(layer[7].subarray(row * 48 + 24, (row + 1) * 48));
    }
    expect(s1.values[4]).toEqual(layer[4].subarray(16 * H));
    expect(s1.values[8]).toEqual(layer[8].subarray(24 * H));
    expect(s1.values[0]).toEqual(layer[0]);
    for (const size of [1, 2]) {
      const back = gatherShards(CFG, Array.from({ length: size }, (_, k) => shardLayer(CFG, layer, k, size).values), 'first');
      back.values.forEach((v, i) => expect(v).toEqual(layer[i]));
    }
  });

  it('names what the size does not divide', () => {
    const layer = randomLayer(CFG, new Rng(2));
    expect(() => shardLayer(CFG, layer, 0, 3)).toThrow(ShapeError);
    expect(() => shardLayer(CFG, layer, 0, 3)).toThrow(/3 ranks do not divide numHeads \(query heads\) = 4/);
    expect(() => shardLayer(CFG, layer, 0, 4)).toThrow(/4 ranks do not divide numKvHeads \(key\/value heads\) = 2/);
    const wide = { ...CFG_MHA, intermediateSize: 50 };
    expect(() => tensorParallelLayer(wide, dev, 4)).toThrow(/4 ranks do not divide intermediateSize \(the MLP width\) = 50/);
    expect(() => tensorParallelLayer(CFG, dev, 4, 'bf16')).toThrow(ShapeError);
    expect(() => shardLayer(CFG, layer, 2, 2)).toThrow(/rank must be in \[0, 2\)/);
    expect(() => shardLayer(CFG, layer.slice(1), 0, 2)).toThrow(/a layer has 9 parameters/);
  });
});

describe('tensor-parallel layer against the unsharded layer', () => {
  const cases: [string, LlamaConfig, number, TensorParallelPrecision][] = [
    ['1 rank, fp32', CFG, 1, 'fp32'],
    ['2 ranks (2 query heads and 1 kv head each), fp32', CFG, 2, 'fp32'],
    ['4 ranks (multi-head attention, 1 head each), fp32', CFG_MHA, 4, 'fp32'],
    ['2 ranks, bf16 parameters', CFG, 2, 'bf16'],
    ['4 ranks, bf16 parameters', CFG_MHA, 4, 'bf16'],
  ];
  for (const [name, cfg, size, precision] of cases) {
    it(`${name}: partials + residual = the layer's output; summed d h and norm gradients, concatenated shards = its gradients`, async () => {
      const e = await compare(cfg, size, precision, 10 + size);
      expect(e.out).toBeLessThan(FP32_TOL);
      expect(e.dh).toBeLessThan(FP32_TOL);
      for (const g of e.grads) expect(g).toBeLessThan(precision === 'fp32' ? FP32_TOL : BF16_GRAD_TOL);
      // Megatron's count: 2 all-reduces of b s h in the forward, 2 in the backward.
      const comm = tpCommBytesPerLayer({ batch: B, seq: S, hidden: H, bytesPerElement: 4, size });
      expect(e.sums.counts).toEqual(Array(4).fill(comm.elements));
      expect(comm.bytes).toBe(4 * B * S * H * 4);
    });
  }
});

describe('tensor-parallel layers in a whole model', () => {
  it('2 layers on 2 ranks, embedding and head around them, give decoder()\'s logits', async () => {
    const r = new Rng(7);
    const V = CFG.vocabSize;
    const embedding = randn(r, V * H, 0, 1);
    const layers = [randomLayer(CFG, r), randomLayer(CFG, r)];
    const finalNorm = randn(r, H, 1, 0.1);
    const head = randn(r, H * V, 0, 1 / Math.sqrt(H));
    const tokens = Int32Array.from({ length: B * S }, () => r.uniformInt(V));
    const tp = tensorParallelLayer(CFG, dev, 2);

    const g = new Graph('decoder');
    const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
    const tok = g.input('tokens', 'int32', ['batch', 'seq']);
    const positions = g.input('positions', 'int32', ['batch', 'seq']);
    const emb = g.input('embedding', 'fp32', [V, H]);
    const lp = layers.map((_, i) => layerShapes(CFG).map((s, j) => g.input(`l${i}.${j}`, 'fp32', s)));
    const fn = g.input('finalNorm', 'fp32', [H]);
    const hd = g.input('head', 'fp32', [H, V]);
    const proj = (w: Value) => (x: Value) => op('MatMul', [x, w]);
    const w: DecoderWeights = {
      embedding: emb,
      layers: lp.map((p) => ({ attnNorm: p[0], q: proj(p[1]), k: proj(p[2]), v: proj(p[3]), o: proj(p[4]), mlpNorm: p[5], gate: proj(p[6]), up: proj(p[7]), down: proj(p[8]) })),
      finalNorm: fn,
      head: proj(hd),
      cos: g.constant('cos', tp.tables[0]),
      sin: g.constant('sin', tp.tables[1]),
    };
    g.output(decoder(g, CFG, w, tok, positions, causalAttention(g, CFG)));
    const feeds = [
      dev.tensor(tokens, [B, S], 'int32'),
      dev.tensor(POSITIONS, [B, S], 'int32'),
      dev.tensor(embedding, [V, H]),
      ...layers.flatMap((l) => tensors(l, layerShapes(CFG), 'fp32')),
      dev.tensor(finalNorm, [H]),
      dev.tensor(head, [H, V]),
    ];
    const [want] = await run(g, feeds);
    free(feeds);

    let h: Float32Array = new Float32Array(B * S * H);
    tokens.forEach((t, i) => h.set(embedding.subarray(t * H, (t + 1) * H), i * H));
    for (const l of layers) h = (await tpLayer(CFG, tp, [0, 1].map((rank) => shardLayer(CFG, l, rank, 2)), h)).out;
    const f = new Graph('final norm and head');
    const x = f.input('h', 'fp32', ['batch', 'seq', H]);
    f.output(f.op('MatMul', [f.op('RMSNorm', [x, f.input('finalNorm', 'fp32', [H])], { epsilon: CFG.rmsNormEps })[0], f.input('head', 'fp32', [H, V])])[0]);
    const ff = [dev.tensor(h, [B, S, H]), dev.tensor(finalNorm, [H]), dev.tensor(head, [H, V])];
    const [got] = await run(f, ff);
    free(ff);
    tp.dispose();
    const err = relErr(got, want);
    expect(err).toBeLessThan(FP32_TOL);
  });
});

describe('tpCommBytesPerLayer', () => {
  it("counts Megatron's four all-reduces of b s h per layer and the ring's 2 (N - 1) / N of them per rank", () => {
    // The built-in model's width, 8 sequences of 256 in fp32 on 4 ranks: 4 x 8 x 256 x 256 x 4 bytes.
    const c = tpCommBytesPerLayer({ batch: 8, seq: 256, hidden: 256, bytesPerElement: 4, size: 4 });
    expect(c.elements).toBe(8 * 256 * 256);
    expect(c.allReduces).toEqual({ forward: 2, backward: 2 });
    expect(c.bytes).toBe(4 * 8 * 256 * 256 * 4);
    expect(c.ringBytesPerRank).toBe(1.5 * c.bytes);
    expect(tpCommBytesPerLayer({ batch: 1, seq: 1, hidden: 8, bytesPerElement: 2, size: 1 }).ringBytesPerRank).toBe(0);
    expect(() => tpCommBytesPerLayer({ batch: 1, seq: 1, hidden: 8, bytesPerElement: 2, size: 0 })).toThrow(ShapeError);
  });
});
