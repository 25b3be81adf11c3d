/**
 * What every KV cache layout offers the model runner, and what it reports. The model builds one step graph per layout
 * (the cache declares its inputs and how attention reads it), plans each step through the cache (which allocates the
 * new tokens' slots, or says why it cannot), runs it, and hands the outputs back to the cache.
 */
import type { Graph, Value } from '../graph/graph.ts';
import type { Tensor } from '../tensor/tensor.ts';
import type { SeqId } from './block_manager.ts';

/** What a cache needs to know of the model: its attention shape. */
export interface KvShape {
  numLayers: number;
  numKvHeads: number;
  numHeads: number;
  headDim: number;
  maxPositions: number;
}

export type KvLayoutName = 'static' | 'contiguous' | 'paged' | 'token';

/** One sequence's part of a step: the tokens whose keys and values this step computes and caches. */
export interface StepSeq {
  seq: SeqId;
  tokens: readonly number[];
  /**
   * A token tree instead of a run of tokens (SpecInfer): parents[i] is the index in `tokens` of token i's parent, or
   * -1 for a child of the sequence's last cached token. Each token sees the cached prefix and its own ancestors; its
   * position is the prefix length plus its depth. Only caches with `supportsTrees` take trees.
   */
  parents?: readonly number[];
}

/** Attention of layer i through the cache, and the values the step graph must output for the cache. */
export interface KvGraph {
  /** q [B, S, Hq*D], k and v [B, S, Hkv*D] (rotated) -> [B, S, Hq*D]. */
  attend(layer: number, q: Value, k: Value, v: Value): Value;
  /** Outputs the cache takes back after the run, in order (filled as attend is called for each layer). */
  outputs: Value[];
}

/** A step the cache has made room for. */
export interface KvPlan {
  /** Prompt tokens found in the prefix cache for each sequence: the step computes tokens.slice(cached[b]) only. */
  cached: number[];
  /** New tokens per sequence after the prefix hits (the step's real rows; the batch is padded to their maximum). */
  counts: number[];
  /** Rotary positions [B, S] (padding rows: 0). */
  positions: Int32Array;
  /** The cache's feeds, in the order it declared its inputs. */
  feeds: Tensor[];
  /** Indices into feeds that the run may write in place. */
  donate: number[];
  /** Takes the run's cache outputs (KvGraph.outputs order); afterwards the step's tokens are cached. */
  commit(outputs: Tensor[]): Promise<void>;
  /** Undoes the plan's allocations when the run failed; the cache is as it was before the plan. */
  abort(): void;
}

/** Bytes of a cache, split as in the vLLM paper (Kwon et al., SOSP 2023, Fig. 2). */
export interface KvMemory {
  layout: KvLayoutName;
  bytesPerToken: number;
  /** Device memory the cache holds (what the tracker counts under tag 'kv'). */
  poolBytes: number;
  /** Held for sequences now: regions, blocks or slots in use. */
  reservedBytes: number;
  /** Slots holding some token's keys and values (a slot shared by several sequences counts once). */
  usedBytes: number;
  /** Reserved for tokens not produced yet (contiguous regions before the sequence's final length). */
  reservation: number;
  /** Reserved that no token will use: a paged sequence's last block past its length; a region past its final length. */
  internalFragmentation: number;
  /** Free gaps between contiguous regions that no new region fits in. */
  externalFragmentation: number;
  /** Free memory in the pool (free blocks, slots or regions, cached prefix blocks included). */
  freeBytes: number;
  /** usedBytes / reservedBytes (1 when nothing is reserved). */
  usedShare: number;
  /** Sequences holding memory. */
  sequences: number;
}

export interface KvCache {
  readonly layout: KvLayoutName;
  readonly shape: KvShape;
  /** Key to the model's step graphs: caches that declare the same inputs share them. */
  readonly graphKey: string;
  readonly supportsTrees: boolean;
  /** Declares the cache's graph inputs (after the model's own) and returns how attention reads the cache. */
  declare(g: Graph, seq: number | string, tree: boolean): KvGraph;
  /**
   * Makes room for a step: allocates the new tokens' slots (a KvCacheError 'exhausted' or 'too-long' with nothing
   * changed when it cannot), copies shared blocks that the step writes into (copy-on-write), and builds the feeds.
   */
  plan(batch: readonly StepSeq[]): Promise<KvPlan>;
  has(seq: SeqId): boolean;
  /** Tokens cached for the sequence. */
  length(seq: SeqId): number;
  /** Releases the sequence's memory. */
  free(seq: SeqId): void;
  /** Releases every sequence. */
  reset(): void;
  memory(): KvMemory;
  dispose(): void;
}
