/** KV cache bookkeeping: block pool, paged block manager, token pool, radix prefix cache and the vLLM paper's waste accounting. */
export { KvCacheError, type KvErrorReason } from './errors.ts';
export { BlockPool, type BlockHash } from './block_pool.ts';
export { BlockManager, hashBlock, type SeqId, type BlockCopy, type AppendResult, type BlockManagerOptions } from './block_manager.ts';
export { TokenPool } from './token_pool.ts';
export { RadixCache, type RadixNode, type RadixMatch } from './radix_cache.ts';
export { kvWaste, kvWasteForModel, type KvLayout, type SeqLength, type KvWaste } from './waste.ts';
export { shareGptLikeLengths, shareGptLikeBatch, type RequestLengths, type ShareGptLikeOptions } from './sharegpt.ts';
