/**
 * Megatron-LM tensor parallelism (Shoeybi et al. 2019) for a Llama decoder layer: the graphs one rank runs. A layer
 * is two blocks, attention and the SwiGLU MLP, each a column-parallel projection followed by a row-parallel one
 * (tensor_parallel_shard.ts splits the weights), so each block needs one collective in the forward and one in the
 * backward:
 *
 *   f: identity in the forward (every rank reads the whole residual stream h), all-reduce of d h in the backward;
 *   g: all-reduce of the ranks' partial outputs in the forward, identity in the backward (every rank gets all of dOut).
 *
 * Attention block, rank r: partial_r = o_r(attention over its heads of rotary(q_r(n)), rotary(k_r(n)), v_r(n))),
 * n = RMSNorm(h); the caller forms h + allReduce(partial). MLP block: partial_r = down_r(SiLU(gate_r(n)) * up_r(n)).
 * Summed over ranks the partials are the unsharded block's output exactly in real arithmetic: o's rows and down's rows
 * split the contraction, and every head (every MLP column) is computed whole on one rank.
 *
 * The norm sits inside the block, after f: its input h is the residual stream, replicated, and the block is one
 * graph from h to the partial (and one VJP graph back), as a layer segment is. The price: each rank differentiates
 * the norm only through its own heads, so the VJP's d h and the norm weight's gradient are both PARTIAL, and the
 * caller sums both over ranks (d h is f's all-reduce; the norm gradient, hidden elements, rides along with it or
 * with the data-parallel gradient reduction). Megatron instead puts f after the norm, so the all-reduced d n reaches
 * one redundant norm backward per rank and its gradient comes out whole; that splits the VJP into two graphs around
 * the collective for the same count of b s h all-reduces.
 *
 * Precision 'bf16' takes the rank's parameters as bf16 inputs cast to fp32 for the arithmetic (mixed precision,
 * as castParam): activations, partials and d h stay fp32, parameter gradients come back bf16.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { DTypeError, ShapeError } from '../errors.ts';
import { backward } from '../autograd/backward.ts';
import { rotaryTables } from '../graph/ops_model.ts';
import { causalAttention } from '../model/decoder.ts';
import type { LlamaConfig } from '../model/config.ts';
import { LAYER_PARAMS, rankConfig, shardShapes } from './tensor_parallel_shard.ts';

export type TensorParallelPrecision = 'fp32' | 'bf16';

/**
 * A block's graphs for one rank (the same for every rank: only the parameters fed differ).
 * forward: inputs h fp32 [batch, seq, hidden], positions int32 [batch, seq], the block's parameter shards
 * -> the partial output fp32 [batch, seq, hidden].
 * vjp: the same inputs and dOut fp32 [batch, seq, hidden] -> [sum(partial * dOut), d h (partial), ...d params] (the
 * block's norm weight's gradient partial, the rest this rank's shard's whole gradients). The first output summed over
 * ranks is <block output, dOut>.
 */
export interface TensorParallelBlock {
  forward: Graph;
  vjp: Graph;
  /** The block's parameters in paramSpecs order: 'attention' attnNorm, q, k, v, o; 'mlp' mlpNorm, gate, up, down. */
  params: readonly string[];
  /** Their shapes on one rank. */
  shapes: number[][];
}

export interface TensorParallelLayer {
  size: number;
  precision: TensorParallelPrecision;
  attention: TensorParallelBlock;
  mlp: TensorParallelBlock;
  /** The rotary tables the attention graphs hold as constants: dispose them when done with the graphs. */
  tables: Tensor[];
  dispose(): void;
}

type Block = 'attention' | 'mlp';

/** Builds one block's graph up to its partial output, given the parameter values (fp32) and the rotary tables. */
function blockMath(g: Graph, cfg: LlamaConfig, size: number, block: Block, h: Value, positions: Value, p: Value[], cos: Value, sin: Value): Value {
  const local = rankConfig(cfg, size);
  const op = (...args: Parameters<Graph['op']>) => g.op(...args)[0];
  const n = op('RMSNorm', [h, p[0]], { epsilon: cfg.rmsNormEps });
  const mm = (x: Value, w: Value) => op('MatMul', [x, w]);
  if (block === 'attention') {
    const [, q, k, v, o] = p;
    const rope = (x: Value, heads: number) => op('RotaryEmbedding', [x, positions, cos, sin], { numHeads: heads });
    const att = causalAttention(g, local)(0, rope(mm(n, q), local.numHeads), rope(mm(n, k), local.numKvHeads), mm(n, v));
    return mm(att, o);
  }
  const [, gate, up, down] = p;
  return mm(op('Mul', [op('SiLU', [mm(n, gate)]), mm(n, up)]), down);
}

function blockGraphs(cfg: LlamaConfig, size: number, precision: TensorParallelPrecision, block: Block, tables: Tensor[]): TensorParallelBlock {
  const all = shardShapes(cfg, size);
  const range = block === 'attention' ? [0, 5] : [5, 9];
  const params = LAYER_PARAMS.slice(range[0], range[1]);
  const shapes = all.slice(range[0], range[1]);
  const H = cfg.hiddenSize;
  const build = (vjp: boolean): Graph => {
    const g = new Graph(`tensor-parallel ${block} block, 1 of ${size} ranks (${precision})${vjp ? ' VJP' : ''}`);
    const h = g.input('h', 'fp32', ['batch', 'seq', H]);
    const positions = g.input('positions', 'int32', ['batch', 'seq']);
    const leaves = params.map((name, i) => g.input(name, precision, shapes[i]));
    const values = leaves.map((x) => (precision === 'fp32' ? x : g.op('Cast', [x], { to: 'fp32' })[0]));
    const partial = blockMath(g, cfg, size, block, h, positions, values, g.constant('rope.cos', tables[0]), g.constant('rope.sin', tables[1]));
    if (!vjp) return g.output(partial);
    // The loss whose gradient is the vector-Jacobian product with dOut: sum(partial * dOut).
    const dOut = g.input('dOut', 'fp32', ['batch', 'seq', H]);
    const dot = g.op('ReduceSum', [g.op('Mul', [partial, dOut])[0]], { keepdims: false })[0];
    return backward(g, dot, [h, ...leaves], { name: g.name }).graph;
  };
  return { forward: build(false), vjp: build(true), params, shapes };
}

/**
 * The attention and MLP block graphs of one rank of `size` (ShapeError when size does not divide the heads, the kv
 * heads or the MLP width). They depend on the config, size and precision only: build them once and run every rank's
 * shards through them. `dev` holds the rotary tables.
 */
export function tensorParallelLayer(cfg: LlamaConfig, dev: Device, size: number, precision: TensorParallelPrecision = 'fp32'): TensorParallelLayer {
  if (precision !== 'fp32' && precision !== 'bf16') throw new DTypeError('tensorParallelLayer', [String(precision)], "the parameters' precision must be 'fp32' or 'bf16'");
  rankConfig(cfg, size);
  const { cos, sin } = rotaryTables(cfg.maxPositions, cfg.headDim, cfg.ropeTheta);
  const half = [cfg.maxPositions, cfg.headDim / 2];
  const tables = [dev.tensor(cos, half, 'fp32', { tag: 'weights', label: 'rope.cos' }), dev.tensor(sin, half, 'fp32', { tag: 'weights', label: 'rope.sin' })];
  try {
    return {
      size,
      precision,
      attention: blockGraphs(cfg, size, precision, 'attention', tables),
      mlp: blockGraphs(cfg, size, precision, 'mlp', tables),
      tables,
      dispose: () => tables.forEach((t) => t.dispose()),
    };
  } catch (e) {
    tables.forEach((t) => t.dispose());
    throw e;
  }
}

export interface TensorParallelCommShape {
  batch: number;
  seq: number;
  hidden: number;
  /** Of the activations all-reduced: 4 for fp32, 2 for bf16. */
  bytesPerElement: number;
  /** Ranks N (default 2), for the ring's bytes. */
  size?: number;
}

export interface TensorParallelComm {
  /** Elements of one all-reduced tensor: b s h. */
  elements: number;
  /** Megatron's count per layer: 2 all-reduces of b s h in the forward (g of each block), 2 in the backward (f). */
  allReduces: { forward: number; backward: number };
  /** Bytes of the tensors all-reduced per layer, forward and backward: 4 b s h bytesPerElement. */
  bytes: number;
  /**
   * Bytes each rank sends per layer in ring all-reduces (reduce-scatter then all-gather, each N - 1 steps of 1/N of
   * the tensor): 2 (N - 1) / N x bytes. The total over ranks is exactly N times this; each rank's own count is this
   * exactly when N divides b s h (else the chunks differ by one element).
   */
  ringBytesPerRank: number;
}

/** The communication tensor parallelism adds per layer and training step (one micro-batch of b sequences of s). */
export function tpCommBytesPerLayer(shape: TensorParallelCommShape): TensorParallelComm {
  const { batch, seq, hidden, bytesPerElement, size = 2 } = shape;
  for (const [k, v] of Object.entries({ batch, seq, hidden, bytesPerElement, size })) {
    const least = k === 'size' || k === 'bytesPerElement' ? 1 : 0;
    if (!(Number.isSafeInteger(v) && v >= least)) throw new ShapeError('tpCommBytesPerLayer', [], `${k} must be an integer >= ${least}, got ${v}`);
  }
  const elements = batch * seq * hidden;
  const bytes = 4 * elements * bytesPerElement;
  return { elements, allReduces: { forward: 2, backward: 2 }, bytes, ringBytesPerRank: (2 * (size - 1) * bytes) / size };
}
