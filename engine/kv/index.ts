/**
 * KV caches: the interface the model runs through, a static cache (contiguous rows, fused attention) and a pooled one
 * (contiguous regions, paged blocks or token slots, read by PagedAttention); their bookkeeping (block pool, paged block
 * manager, token pool, region pool, radix prefix cache) and the vLLM paper's waste accounting.
 */
export { KvCacheError, type KvErrorReason } from './errors.ts';
export { BlockPool, type BlockHash } from './block_pool.ts';
export { BlockManager, hashBlock, type SeqId, type BlockCopy, type AppendResult, type BlockManagerOptions } from './block_manager.ts';
export { TokenPool } from './token_pool.ts';
export { RadixCache, type RadixNode, type RadixMatch } from './radix_cache.ts';
export { kvWaste, kvWasteForModel, type KvLayout, type SeqLength, type KvWaste } from './waste.ts';
export { shareGptLikeLengths, shareGptLikeBatch, type RequestLengths, type ShareGptLikeOptions, type ShareGptLikeBatchOptions } from './sharegpt.ts';
export { RegionPool, type Region } from './region_pool.ts';
export { KvPool } from './kv_pool.ts';
export { StaticKvCache } from './static_cache.ts';
export { PoolKvCache, type PoolLayout, type PoolKvCacheOptions } from './pool_cache.ts';
export type { KvCache, KvShape, KvLayoutName, StepSeq, KvGraph, KvPlan, KvMemory } from './kv_cache.ts';
