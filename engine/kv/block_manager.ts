/** Paged KV cache manager: per-sequence block tables, prefix caching by chained block hashes, copy-on-write (vLLM, SOSP 2023). */
import { createHash } from 'node:crypto';
import { BlockPool, type BlockHash } from './block_pool.ts';
import { checkCount, invariant, KvCacheError } from './errors.ts';

export type SeqId = number | string;

/** Copy block `src` into block `dst` on the device before the step that writes into `dst` (copy-on-write). */
export interface BlockCopy {
  src: number;
  dst: number;
}

export interface AppendResult {
  /** Where the new token's key and value go: blockTable[pos / B] * B + pos % B (vLLM's slot_mapping). */
  slot: number;
  copy: BlockCopy | null;
}

export interface BlockManagerOptions {
  numBlocks: number;
  blockSize?: number;
  /** The model's context: a sequence may hold at most this many tokens. */
  maxModelLen?: number;
  prefixCaching?: boolean;
}

interface SeqState {
  tokens: number[];
  blockTable: number[];
  /** Chained hashes of the sequence's full blocks, in order: blockHashes[i] covers tokens [0, (i + 1) B). */
  blockHashes: BlockHash[];
  numCachedTokens: number;
}

/**
 * A full block's hash: sha256 over the parent block's hash (16 hex digits as ASCII; nothing for a sequence's first
 * block) followed by the block's token ids as little-endian uint32, truncated to 64 bits (16 hex digits). Chaining
 * makes the hash name the whole prefix, not only the block: equal blocks after different prefixes differ. With 2^20
 * cached blocks a 64-bit collision has probability about 2^-25 (birthday bound), so tokens are not compared again.
 */
export function hashBlock(parent: BlockHash | null, tokens: readonly number[]): BlockHash {
  const buf = Buffer.alloc(4 * tokens.length);
  tokens.forEach((t, i) => buf.writeUInt32LE(t, 4 * i));
  return createHash('sha256').update(parent ?? '').update(buf).digest('hex').slice(0, 16);
}

/**
 * Owns the block tables; the pool owns free blocks and ref counts (nano-vllm's block_manager.py, vLLM v1's
 * KVCacheManager). Each act has a check, so a scheduler can test before it commits: canAllocate / allocate for a
 * prompt, canAppend / append for a decoded token. Checks throw only for requests that could never succeed (unknown
 * sequence, past maxModelLen); acts that lack blocks throw KvCacheError('exhausted') with nothing changed.
 */
export class BlockManager {
  readonly pool: BlockPool;
  readonly blockSize: number;
  readonly maxModelLen: number;
  readonly prefixCaching: boolean;
  private readonly seqs = new Map<SeqId, SeqState>();

  constructor(opts: BlockManagerOptions) {
    this.pool = new BlockPool(opts.numBlocks, opts.blockSize ?? 16);
    this.blockSize = this.pool.blockSize;
    this.maxModelLen = opts.maxModelLen ?? Infinity;
    if (this.maxModelLen !== Infinity) checkCount('BlockManager', 'maxModelLen', this.maxModelLen, 1);
    this.prefixCaching = opts.prefixCaching ?? true;
  }

  /**
   * Whether a prompt fits now. Given only a token count it assumes no prefix hit (nano-vllm's bound, never too
   * optimistic); given the token ids it counts exactly: a hit on a block in use costs nothing, a hit on a freed one
   * costs the free block it leaves.
   */
  canAllocate(seq: SeqId, prompt: number | readonly number[]): boolean {
    this.checkNew('BlockManager.canAllocate', seq);
    if (typeof prompt === 'number') {
      checkCount('BlockManager.canAllocate', 'prompt length', prompt, 1);
      this.checkLength('BlockManager.canAllocate', prompt);
      return Math.ceil(prompt / this.blockSize) <= this.pool.numFree;
    }
    return this.plan('BlockManager.canAllocate', prompt).needed <= this.pool.numFree;
  }

  /** Free blocks a new prompt would take: its blocks less the cached ones in use (a hit on a freed block still takes it). */
  blocksNeeded(seq: SeqId, tokens: readonly number[]): number {
    this.checkNew('BlockManager.blocksNeeded', seq);
    return this.plan('BlockManager.blocksNeeded', tokens).needed;
  }

  /** Free blocks appending n tokens would take: new blocks past the last, and a copy of a shared partial last block. */
  appendBlocks(seq: SeqId, n: number): number {
    const s = this.get('BlockManager.appendBlocks', seq);
    checkCount('BlockManager.appendBlocks', 'n', n, 0);
    const len = s.tokens.length;
    const grow = Math.ceil((len + n) / this.blockSize) - Math.ceil(len / this.blockSize);
    return grow + (n > 0 && len % this.blockSize !== 0 && this.needsBlock(s) === 1 ? 1 : 0);
  }

  /**
   * Builds the prompt's block table: leading full blocks already cached are shared, the rest allocated and hashed.
   * Blocks in `unwritten` (filled by the same step, not yet holding their keys) are not hit.
   */
  allocate(seq: SeqId, tokens: readonly number[], opts: { unwritten?: ReadonlySet<number> } = {}): readonly number[] {
    const op = 'BlockManager.allocate';
    this.checkNew(op, seq);
    const p = this.plan(op, tokens, opts.unwritten);
    if (p.needed > this.pool.numFree) {
      throw new KvCacheError(op, 'exhausted', `sequence ${seq} needs ${p.needed} free blocks (${p.hits.length} cached) with ${this.pool.numFree} free`);
    }
    this.pool.touch(p.hits);
    const blockTable = [...p.hits, ...this.pool.allocate(p.numBlocks - p.hits.length)];
    // Registered now, as nano-vllm does: the prefill that fills these blocks runs before any later step reads them.
    // A caller whose step writes the keys after attention reads them passes the blocks its step fills (unwritten),
    // so that a prompt of the same step does not hit them.
    for (let i = p.hits.length; i < p.hashes.length; i++) this.pool.cacheBlock(blockTable[i], p.hashes[i]);
    this.seqs.set(seq, { tokens: [...tokens], blockTable, blockHashes: p.hashes, numCachedTokens: p.hits.length * this.blockSize });
    return blockTable;
  }

  /** Whether `append` can run now: it needs a free block when the last one is full or shared. */
  canAppend(seq: SeqId): boolean {
    const s = this.get('BlockManager.canAppend', seq);
    this.checkLength('BlockManager.canAppend', s.tokens.length + 1);
    return this.needsBlock(s) <= this.pool.numFree;
  }

  /**
   * Adds one token. A full last block gets a new block after it; a partial last block shared after fork is copied
   * first (copy-on-write: this sequence moves to the copy, the others keep the original). A block that becomes full
   * is hashed and cached.
   */
  append(seq: SeqId, token: number): AppendResult {
    const op = 'BlockManager.append';
    const s = this.get(op, seq);
    checkToken(op, token);
    const pos = s.tokens.length;
    this.checkLength(op, pos + 1);
    const B = this.blockSize;
    let copy: BlockCopy | null = null;
    if (pos % B === 0) {
      s.blockTable.push(this.pool.allocate(1)[0]);
    } else if (this.needsBlock(s) === 1) {
      const last = s.blockTable.length - 1;
      const src = s.blockTable[last];
      const [dst] = this.pool.allocate(1);
      this.pool.free([src]);
      s.blockTable[last] = dst;
      copy = { src, dst };
    }
    s.tokens.push(token);
    if (this.prefixCaching && (pos + 1) % B === 0) {
      const h = hashBlock(s.blockHashes.at(-1) ?? null, s.tokens.slice(pos + 1 - B));
      s.blockHashes.push(h);
      this.pool.cacheBlock(s.blockTable[s.blockTable.length - 1], h);
    }
    invariant(s.blockTable.length === Math.ceil(s.tokens.length / B), op, `sequence ${seq}: ${s.blockTable.length} blocks for ${s.tokens.length} tokens`);
    return { slot: s.blockTable[Math.floor(pos / B)] * B + (pos % B), copy };
  }

  /** The child shares every block of the parent (parallel sampling, beam search); writes diverge by copy-on-write. */
  fork(parent: SeqId, child: SeqId): void {
    const p = this.get('BlockManager.fork', parent);
    this.checkNew('BlockManager.fork', child);
    this.pool.touch(p.blockTable);
    this.seqs.set(child, { tokens: [...p.tokens], blockTable: [...p.blockTable], blockHashes: [...p.blockHashes], numCachedTokens: p.numCachedTokens });
  }

  /** Releases the sequence's blocks last-first, so its tail is evicted before the prefix it may share. */
  free(seq: SeqId): void {
    const s = this.get('BlockManager.free', seq);
    this.pool.free([...s.blockTable].reverse());
    this.seqs.delete(seq);
  }

  /**
   * Keeps the sequence's first `n` tokens (a step that failed, rejected speculative tokens): the blocks past them are
   * freed last-first, and a block left partly filled that no other sequence holds loses its hash, since its tail will
   * be written again.
   */
  truncate(seq: SeqId, n: number): void {
    const op = 'BlockManager.truncate';
    const s = this.get(op, seq);
    checkCount(op, 'n', n, 0);
    if (n > s.tokens.length) throw new KvCacheError(op, 'invalid-argument', `sequence ${seq} holds ${s.tokens.length} tokens, cannot keep ${n}`);
    const B = this.blockSize;
    const keep = Math.ceil(n / B);
    this.pool.free(s.blockTable.slice(keep).reverse());
    s.blockTable.length = keep;
    s.tokens.length = n;
    s.blockHashes.length = Math.min(s.blockHashes.length, Math.floor(n / B));
    s.numCachedTokens = Math.min(s.numCachedTokens, n);
    const last = s.blockTable[keep - 1];
    if (n % B !== 0 && last !== undefined && this.pool.refCount(last) === 1) this.pool.forget(last);
  }

  /** Drops the hashes of these blocks of the sequence (contents never written: a prefill that failed). */
  forgetBlocks(seq: SeqId, blockIndices: readonly number[]): void {
    const s = this.get('BlockManager.forgetBlocks', seq);
    for (const i of blockIndices) if (s.blockTable[i] !== undefined) this.pool.forget(s.blockTable[i]);
  }

  has(seq: SeqId): boolean {
    return this.seqs.has(seq);
  }

  blockTable(seq: SeqId): readonly number[] {
    return [...this.get('BlockManager.blockTable', seq).blockTable];
  }

  numTokens(seq: SeqId): number {
    return this.get('BlockManager.numTokens', seq).tokens.length;
  }

  /** Prompt tokens whose keys and values were found in the prefix cache: the prefill starts after them. */
  numCachedTokens(seq: SeqId): number {
    return this.get('BlockManager.numCachedTokens', seq).numCachedTokens;
  }

  /** The slot of every token from `start` on: where the model runner writes (prefill) or the kernel reads. */
  slotMapping(seq: SeqId, start = 0): number[] {
    const s = this.get('BlockManager.slotMapping', seq);
    const B = this.blockSize;
    const out: number[] = [];
    for (let i = start; i < s.tokens.length; i++) out.push(s.blockTable[Math.floor(i / B)] * B + (i % B));
    return out;
  }

  /** Every block's ref count equals the number of block tables holding it; then the pool's own invariants. */
  checkInvariants(): void {
    const op = 'BlockManager.checkInvariants';
    const refs = new Map<number, number>();
    for (const [id, s] of this.seqs) {
      invariant(s.blockTable.length === Math.ceil(s.tokens.length / this.blockSize), op, `sequence ${id}: ${s.blockTable.length} blocks for ${s.tokens.length} tokens`);
      for (const b of s.blockTable) refs.set(b, (refs.get(b) ?? 0) + 1);
    }
    for (let b = 0; b < this.pool.numBlocks; b++) {
      invariant(this.pool.refCount(b) === (refs.get(b) ?? 0), op, `block ${b}: ref count ${this.pool.refCount(b)}, in ${refs.get(b) ?? 0} block tables`);
    }
    this.pool.checkInvariants();
  }

  private needsBlock(s: SeqState): 0 | 1 {
    const n = s.tokens.length;
    if (n % this.blockSize === 0) return 1;
    return this.pool.refCount(s.blockTable[s.blockTable.length - 1]) > 1 ? 1 : 0;
  }

  /**
   * Hashes the prompt's full blocks and looks up its longest cached prefix. At most floor((n - 1) / B) blocks may hit,
   * as vLLM v1 caps the hit at n - 1 tokens: the last prompt token is always computed, for the logits it yields.
   */
  private plan(op: string, tokens: readonly number[], unwritten?: ReadonlySet<number>) {
    const n = tokens.length;
    checkCount(op, 'prompt length', n, 1);
    this.checkLength(op, n);
    for (const t of tokens) checkToken(op, t);
    const B = this.blockSize;
    const numBlocks = Math.ceil(n / B);
    const hashes: BlockHash[] = [];
    const hits: number[] = [];
    if (this.prefixCaching) {
      for (let i = 0; i < Math.floor(n / B); i++) hashes.push(hashBlock(hashes.at(-1) ?? null, tokens.slice(i * B, (i + 1) * B)));
      for (let i = 0; i < Math.floor((n - 1) / B); i++) {
        const b = this.pool.cachedBlock(hashes[i]);
        if (b === undefined || unwritten?.has(b)) break;
        hits.push(b);
      }
    }
    const fromFreeQueue = hits.filter((b) => this.pool.refCount(b) === 0).length;
    return { numBlocks, hashes, hits, needed: fromFreeQueue + numBlocks - hits.length };
  }

  private checkLength(op: string, n: number): void {
    if (n > this.maxModelLen) throw new KvCacheError(op, 'too-long', `${n} tokens exceed maxModelLen ${this.maxModelLen}`);
  }

  private checkNew(op: string, seq: SeqId): void {
    if (this.seqs.has(seq)) throw new KvCacheError(op, 'invalid-argument', `sequence ${seq} already has a block table`);
  }

  private get(op: string, seq: SeqId): SeqState {
    const s = this.seqs.get(seq);
    if (!s) throw new KvCacheError(op, 'invalid-argument', `unknown sequence ${seq}`);
    return s;
  }
}

function checkToken(op: string, t: number): void {
  if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new KvCacheError(op, 'invalid-argument', `token id ${t} is not a uint32`);
}
