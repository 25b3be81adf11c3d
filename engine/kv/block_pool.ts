/** Block pool: the free block queue, ref counts and prefix-cache hashes of fixed-size KV blocks (vLLM v1 block_pool.py). */
import { checkCount, invariant, KvCacheError } from './errors.ts';

/** A full block's chained hash as 16 hex digits (see hashBlock in block_manager.ts). */
export type BlockHash = string;

const NONE = -1;

/**
 * `numBlocks` blocks of `blockSize` token slots each, ids 0..numBlocks-1. Numbers only: the device tensors that hold
 * the keys and values are the model runner's; this class decides which block a token goes to.
 *
 * The free queue is vLLM's FreeKVCacheBlockQueue: allocation takes from the front, a block whose ref count drops to 0
 * joins the back. A freed block keeps its hash until it is taken again, so a later request with the same prefix can
 * still hit it (touch pulls it out of the middle of the queue); blocks are thus evicted in least-recently-freed order.
 */
export class BlockPool {
  readonly numBlocks: number;
  readonly blockSize: number;
  private readonly refCounts: Int32Array;
  private readonly hashes: (BlockHash | null)[];
  /** hash -> block: one block per hash, so `hashes[b] === h` exactly when `cached.get(h) === b`. */
  private readonly cached = new Map<BlockHash, number>();
  // A doubly linked list over block ids: a cache hit leaves from the middle of the queue in O(1).
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NONE;
  private tail = NONE;
  private nFree = 0;

  constructor(numBlocks: number, blockSize = 16) {
    checkCount('BlockPool', 'numBlocks', numBlocks, 1);
    checkCount('BlockPool', 'blockSize', blockSize, 1);
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.refCounts = new Int32Array(numBlocks);
    this.hashes = new Array<BlockHash | null>(numBlocks).fill(null);
    this.prev = new Int32Array(numBlocks).fill(NONE);
    this.next = new Int32Array(numBlocks).fill(NONE);
    for (let b = 0; b < numBlocks; b++) this.pushBack(b);
  }

  /** Blocks in the free queue, cached ones included: all of them can be allocated. */
  get numFree(): number {
    return this.nFree;
  }

  /** Blocks whose hash can still be hit, referenced or not. */
  get numCachedBlocks(): number {
    return this.cached.size;
  }

  canAllocate(n: number): boolean {
    checkCount('BlockPool.canAllocate', 'n', n, 0);
    return n <= this.nFree;
  }

  /** Takes `n` blocks from the front of the free queue, each with ref count 1; a cached one loses its hash (evicted). */
  allocate(n: number): number[] {
    checkCount('BlockPool.allocate', 'n', n, 0);
    if (n > this.nFree) throw new KvCacheError('BlockPool.allocate', 'exhausted', `asked for ${n} blocks with ${this.nFree} of ${this.numBlocks} free`);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const b = this.head;
      this.unlink(b);
      invariant(this.refCounts[b] === 0, 'BlockPool.allocate', `block ${b} in the free queue has ref count ${this.refCounts[b]}`);
      this.uncache(b);
      this.refCounts[b] = 1;
      out.push(b);
    }
    return out;
  }

  /**
   * Drops one reference to each block, in order; a block reaching 0 joins the back of the free queue (its hash kept).
   * Callers free a sequence's blocks last-first, as vLLM does, so its tail blocks (least likely shared) go first.
   */
  free(blocks: readonly number[]): void {
    const drops = this.countIds('BlockPool.free', blocks);
    for (const [b, k] of drops) {
      if (this.refCounts[b] < k) {
        throw new KvCacheError('BlockPool.free', 'double-free', `block ${b} has ref count ${this.refCounts[b]} and was freed ${k} more time${k > 1 ? 's' : ''}`);
      }
    }
    for (const b of blocks) if (--this.refCounts[b] === 0) this.pushBack(b);
  }

  /** Adds a reference to each block; a cached block at ref count 0 (a prefix hit) leaves the free queue. */
  touch(blocks: readonly number[]): void {
    for (const b of this.countIds('BlockPool.touch', blocks).keys()) {
      if (this.refCounts[b] === 0 && this.hashes[b] === null) {
        throw new KvCacheError('BlockPool.touch', 'invalid-argument', `block ${b} is free and holds no cached prefix; allocate it instead`);
      }
    }
    for (const b of blocks) if (this.refCounts[b]++ === 0) this.unlink(b);
  }

  /**
   * Registers a referenced full block under `hash`. Returns false, caching nothing, when another block already holds
   * that hash (two sequences filled identical blocks): the first one stays the one a prefix lookup finds.
   */
  cacheBlock(block: number, hash: BlockHash): boolean {
    this.checkId('BlockPool.cacheBlock', block);
    if (this.refCounts[block] === 0) throw new KvCacheError('BlockPool.cacheBlock', 'invalid-argument', `block ${block} is free`);
    const held = this.cached.get(hash);
    if (held === block) return true;
    if (this.hashes[block] !== null) {
      throw new KvCacheError('BlockPool.cacheBlock', 'invalid-argument', `block ${block} already holds hash ${this.hashes[block]}, not ${hash}`);
    }
    if (held !== undefined) return false;
    this.cached.set(hash, block);
    this.hashes[block] = hash;
    return true;
  }

  /** Drops the block's hash, if it has one: its contents are not (or no longer) the prefix the hash names. */
  forget(block: number): void {
    this.checkId('BlockPool.forget', block);
    this.uncache(block);
  }

  /** The block holding `hash`, referenced or waiting in the free queue; undefined once evicted. */
  cachedBlock(hash: BlockHash): number | undefined {
    return this.cached.get(hash);
  }

  refCount(block: number): number {
    this.checkId('BlockPool.refCount', block);
    return this.refCounts[block];
  }

  blockHash(block: number): BlockHash | null {
    this.checkId('BlockPool.blockHash', block);
    return this.hashes[block];
  }

  /** The free queue from front (next to be allocated, or evicted if cached) to back. */
  freeBlockIds(): number[] {
    const out: number[] = [];
    for (let b = this.head; b !== NONE; b = this.next[b]) out.push(b);
    return out;
  }

  /** Walks every structure and throws KvCacheError('invariant') on the first disagreement. */
  checkInvariants(): void {
    const op = 'BlockPool.checkInvariants';
    const inQueue = new Uint8Array(this.numBlocks);
    let n = 0;
    for (let b = this.head, p = NONE; b !== NONE; p = b, b = this.next[b]) {
      invariant(this.prev[b] === p && !inQueue[b] && n < this.numBlocks, op, `free queue broken at block ${b}`);
      inQueue[b] = 1;
      n++;
    }
    invariant(n === this.nFree, op, `free queue holds ${n} blocks, numFree says ${this.nFree}`);
    for (let b = 0; b < this.numBlocks; b++) {
      const rc = this.refCounts[b];
      invariant(rc >= 0 && (rc === 0) === (inQueue[b] === 1), op, `block ${b}: ref count ${rc}, ${inQueue[b] ? '' : 'not '}in the free queue`);
      const h = this.hashes[b];
      invariant(h === null || this.cached.get(h) === b, op, `block ${b} holds hash ${h} that maps elsewhere`);
    }
    for (const [h, b] of this.cached) invariant(this.hashes[b] === h, op, `hash ${h} maps to block ${b} holding ${this.hashes[b]}`);
  }

  private uncache(b: number): void {
    const h = this.hashes[b];
    if (h === null) return;
    this.cached.delete(h);
    this.hashes[b] = null;
  }

  private pushBack(b: number): void {
    this.prev[b] = this.tail;
    this.next[b] = NONE;
    if (this.tail === NONE) this.head = b;
    else this.next[this.tail] = b;
    this.tail = b;
    this.nFree++;
  }

  private unlink(b: number): void {
    const p = this.prev[b];
    const q = this.next[b];
    if (p === NONE) this.head = q;
    else this.next[p] = q;
    if (q === NONE) this.tail = p;
    else this.prev[q] = p;
    this.prev[b] = this.next[b] = NONE;
    this.nFree--;
  }

  private checkId(op: string, b: number): void {
    if (!Number.isInteger(b) || b < 0 || b >= this.numBlocks) {
      throw new KvCacheError(op, 'invalid-argument', `block id ${b} is not in [0, ${this.numBlocks})`);
    }
  }

  /** Validates every id before anything changes and counts repeats: a call either applies whole or not at all. */
  private countIds(op: string, blocks: readonly number[]): Map<number, number> {
    const counts = new Map<number, number>();
    for (const b of blocks) {
      this.checkId(op, b);
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    return counts;
  }
}
