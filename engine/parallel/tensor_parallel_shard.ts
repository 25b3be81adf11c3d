/**
 * How one Llama decoder layer's parameters are split for Megatron-LM tensor parallelism (Shoeybi et al. 2019):
 * attention by heads (each rank holds the q columns of numHeads / size query heads, the k and v columns of the
 * numKvHeads / size kv heads those query heads read, and the matching rows of o), the SwiGLU MLP column-wise in gate
 * and up and row-wise in down; the two RMSNorm weights are replicated. Heads are given out contiguously: rank r holds
 * query heads [r Hq/N, (r+1) Hq/N), and since query head h reads kv head floor(h / (Hq/Hkv)) (grouped-query attention,
 * Ainslie et al. 2023) those are exactly kv heads [r Hkv/N, (r+1) Hkv/N): the grouping inside a rank is the model's.
 *
 * Values are plain Float32Arrays in the engine's layout (a linear [in, out]), in a layer's paramSpecs order
 * (attnNorm, q, k, v, o, mlpNorm, gate, up, down), so a runner can make tensors of them on any device.
 */
import { ShapeError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';

/** A layer's parameters in paramSpecs order, each with its shape. */
export interface LayerShard {
  values: Float32Array[];
  shapes: number[][];
}

/** The names of a layer's parameters, in paramSpecs order. */
export const LAYER_PARAMS = ['attnNorm', 'q', 'k', 'v', 'o', 'mlpNorm', 'gate', 'up', 'down'] as const;
export type LayerParamName = (typeof LAYER_PARAMS)[number];

/** How each parameter is split: replicated, by columns of [in, out] (its outputs) or by rows (its inputs). */
const SPLIT: Record<LayerParamName, 'replicated' | 'columns' | 'rows'> = {
  attnNorm: 'replicated',
  q: 'columns',
  k: 'columns',
  v: 'columns',
  o: 'rows',
  mlpNorm: 'replicated',
  gate: 'columns',
  up: 'columns',
  down: 'rows',
};

/** Throws a ShapeError naming what `size` does not divide: query heads, kv heads or the MLP's width. */
export function checkTensorParallelSize(cfg: LlamaConfig, size: number): void {
  if (!Number.isSafeInteger(size) || size < 1) throw new ShapeError('tensor parallel', [], `size must be a positive integer, got ${size}`);
  const parts: [string, number][] = [
    ['numHeads (query heads)', cfg.numHeads],
    ['numKvHeads (key/value heads)', cfg.numKvHeads],
    ['intermediateSize (the MLP width)', cfg.intermediateSize],
  ];
  for (const [what, n] of parts) {
    if (n % size !== 0) throw new ShapeError('tensor parallel', [[n]], `${size} ranks do not divide ${what} = ${n}: each rank must hold a whole, equal share`);
  }
}

/** The per-rank config: the heads and MLP width one rank computes (hidden size, head dim and the rest unchanged). */
export function rankConfig(cfg: LlamaConfig, size: number): LlamaConfig {
  checkTensorParallelSize(cfg, size);
  return { ...cfg, numHeads: cfg.numHeads / size, numKvHeads: cfg.numKvHeads / size, intermediateSize: cfg.intermediateSize / size };
}

/** The full (unsharded) shapes of a layer's 9 parameters, [in, out] for linears. */
export function layerShapes(cfg: LlamaConfig): number[][] {
  const H = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  return [[H], [H, q], [H, kv], [H, kv], [q, H], [H], [H, I], [H, I], [I, H]];
}

/** Each rank's shapes of a layer's 9 parameters (the same on every rank). */
export function shardShapes(cfg: LlamaConfig, size: number): number[][] {
  return layerShapes(rankConfig(cfg, size));
}

/** Columns [c0, c0 + w) of a row-major [rows, cols] matrix. */
function columns(x: Float32Array, rows: number, cols: number, c0: number, w: number): Float32Array {
  const out = new Float32Array(rows * w);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * cols + c0, r * cols + c0 + w), r * w);
  return out;
}

function checkLayer(cfg: LlamaConfig, values: readonly Float32Array[], shapes: readonly number[][], what: string): void {
  if (values.length !== LAYER_PARAMS.length) {
    throw new ShapeError(what, shapes, `a layer has ${LAYER_PARAMS.length} parameters (${LAYER_PARAMS.join(', ')}), got ${values.length}`);
  }
  values.forEach((v, i) => {
    const n = shapes[i].reduce((a, b) => a * b, 1);
    if (v.length !== n) throw new ShapeError(what, [shapes[i]], `${LAYER_PARAMS[i]} of hidden ${cfg.hiddenSize} holds ${n} values, got ${v.length}`);
  });
}

/**
 * Rank `rank`'s shard of one layer's parameters (full values in paramSpecs order, linears [in, out]): q, k, v, gate
 * and up by columns, o and down by rows, the norms copied.
 */
export function shardLayer(cfg: LlamaConfig, layerParams: readonly Float32Array[], rank: number, size: number): LayerShard {
  const shapes = shardShapes(cfg, size);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) throw new ShapeError('shardLayer', [], `rank must be in [0, ${size}), got ${rank}`);
  const full = layerShapes(cfg);
  checkLayer(cfg, layerParams, full, 'shardLayer');
  const values = LAYER_PARAMS.map((name, i) => {
    const [rows, cols] = full[i];
    const x = layerParams[i];
    switch (SPLIT[name]) {
      case 'replicated':
        return x.slice();
      case 'columns': {
        const w = shapes[i][1];
        return columns(x, rows, cols, rank * w, w);
      }
      case 'rows': {
        const h = shapes[i][0];
        return x.slice(rank * h * cols, (rank + 1) * h * cols);
      }
    }
  });
  return { values, shapes };
}

/**
 * Every rank's shard (perRank[rank] in paramSpecs order) put back into full shapes: columns and rows concatenated in
 * rank order; the replicated norms are summed when `replicated` is 'sum' (gradients: each rank's is partial) or taken
 * from rank 0 with 'first' (values: every rank holds the same).
 */
export function gatherShards(cfg: LlamaConfig, perRank: readonly (readonly Float32Array[])[], replicated: 'sum' | 'first'): LayerShard {
  const size = perRank.length;
  const shapes = shardShapes(cfg, size);
  perRank.forEach((p) => checkLayer(cfg, p, shapes, 'gatherShards'));
  const full = layerShapes(cfg);
  const values = LAYER_PARAMS.map((name, i) => {
    const out = new Float32Array(full[i].reduce((a, b) => a * b, 1));
    const parts = perRank.map((p) => p[i]);
    switch (SPLIT[name]) {
      case 'replicated':
        if (replicated === 'first') out.set(parts[0]);
        else for (const p of parts) for (let j = 0; j < out.length; j++) out[j] += p[j];
        break;
      case 'columns': {
        const [rows, cols] = full[i];
        const w = shapes[i][1];
        parts.forEach((p, r) => {
          for (let row = 0; row < rows; row++) out.set(p.subarray(row * w, (row + 1) * w), row * cols + r * w);
        });
        break;
      }
      case 'rows':
        parts.forEach((p, r) => out.set(p, r * p.length));
        break;
    }
    return out;
  });
  return { values, shapes: full };
}

/**
 * Every rank's gradients of its shard (perRank[rank] in paramSpecs order) as the full layer's gradients: the sharded
 * ones concatenated, the norms' partial gradients summed (what an all-reduce of them gives every rank).
 */
export function unshardLayerGrads(cfg: LlamaConfig, perRank: readonly (readonly Float32Array[])[]): Float32Array[] {
  return gatherShards(cfg, perRank, 'sum').values;
}
