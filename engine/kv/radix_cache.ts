/** Prefix sharing across requests: a radix tree over token ids, ref-counted, LRU leaf eviction (SGLang's RadixAttention, Zheng et al. 2024). */
import { checkCount, invariant, KvCacheError } from './errors.ts';

/** A handle on a tree node: what `matchPrefix` returns for `lock` / `unlock`. */
export interface RadixNode {
  readonly id: number;
  /** Token ids on the edge from the parent. */
  readonly key: readonly number[];
  /** One cache id per page of `key`: token slots when pageSize is 1, block ids when it is the block size. */
  readonly value: readonly number[];
  /** Requests using this node or one below it; only nodes at 0 can be evicted. */
  readonly lockRef: number;
  readonly lastAccess: number;
}

export interface RadixMatch {
  /** Tokens matched, a multiple of pageSize. */
  length: number;
  /** The cache ids of the matched prefix, one per page. */
  values: number[];
  /** The node ending exactly at the match (the root when nothing matched): lock it while the request runs. */
  node: RadixNode;
}

class Node implements RadixNode {
  children = new Map<string, Node>();
  lockRef = 0;
  constructor(
    readonly id: number,
    public key: number[],
    public value: number[],
    public parent: Node | null,
    public lastAccess: number,
  ) {}
}

/**
 * Owns no memory: the caller allocates slots or blocks, inserts them with their tokens, and frees the ids that
 * `evict` returns (and, after `insert`, its own ids for the prefix the tree already held). Time is a counter bumped
 * by every match and insert, so eviction order is exact and repeatable.
 */
export class RadixCache {
  readonly pageSize: number;
  private readonly root: Node;
  private clock = 0;
  private nextId = 1;
  private totalSize = 0;
  private protectedTokens = 0;

  constructor(pageSize = 1) {
    checkCount('RadixCache', 'pageSize', pageSize, 1);
    this.pageSize = pageSize;
    this.root = new Node(0, [], [], null, 0);
    this.root.lockRef = 1; // the root is never evicted
  }

  /** Tokens held in the tree. */
  get numCachedTokens(): number {
    return this.totalSize;
  }

  /** Tokens in nodes no request holds: what `evict` can free. */
  get evictableSize(): number {
    return this.totalSize - this.protectedTokens;
  }

  get protectedSize(): number {
    return this.protectedTokens;
  }

  /** The longest cached prefix of `tokens` in whole pages; an edge matched part-way is split so the match ends at a node. */
  matchPrefix(tokens: readonly number[]): RadixMatch {
    const t = ++this.clock;
    const values: number[] = [];
    let node = this.root;
    let i = 0;
    while (i + this.pageSize <= tokens.length) {
      let child = node.children.get(this.childKey(tokens, i));
      if (!child) break;
      const k = this.matchLen(child.key, tokens, i);
      if (k < child.key.length) child = this.split(child, k);
      child.lastAccess = t;
      values.push(...child.value);
      node = child;
      i += k;
    }
    return { length: i, values, node };
  }

  /**
   * Caches `tokens` with `values` (one id per page; tokens.length = values.length x pageSize) and returns how many
   * leading tokens the tree already held: the caller frees its own ids for those, the tree keeps its first copy.
   */
  insert(tokens: readonly number[], values: readonly number[]): number {
    if (tokens.length !== values.length * this.pageSize) {
      throw new KvCacheError('RadixCache.insert', 'invalid-argument', `${tokens.length} tokens need ${tokens.length / this.pageSize} values of pages of ${this.pageSize}, got ${values.length}`);
    }
    const t = ++this.clock;
    let node = this.root;
    let i = 0;
    while (i < tokens.length) {
      let child = node.children.get(this.childKey(tokens, i));
      if (!child) {
        const leaf = new Node(this.nextId++, tokens.slice(i), values.slice(i / this.pageSize), node, t);
        node.children.set(this.childKey(leaf.key, 0), leaf);
        this.totalSize += leaf.key.length;
        return i;
      }
      const k = this.matchLen(child.key, tokens, i);
      if (k < child.key.length) child = this.split(child, k);
      child.lastAccess = t;
      node = child;
      i += k;
    }
    return i;
  }

  /** Marks the path from `node` to the root in use: none of it can be evicted until `unlock`. */
  lock(node: RadixNode): void {
    for (let n: Node | null = this.own('RadixCache.lock', node); n !== this.root && n; n = n.parent) {
      if (n.lockRef++ === 0) this.protectedTokens += n.key.length;
    }
  }

  unlock(node: RadixNode): void {
    const start = this.own('RadixCache.unlock', node);
    for (let n: Node | null = start; n !== this.root && n; n = n.parent) {
      if (n.lockRef === 0) throw new KvCacheError('RadixCache.unlock', 'double-free', `node ${n.id} is not locked`);
    }
    for (let n: Node | null = start; n !== this.root && n; n = n.parent) {
      if (--n.lockRef === 0) this.protectedTokens -= n.key.length;
    }
  }

  /**
   * Removes unlocked leaves, least recently used first (ties by node id), until at least `numTokens` tokens are
   * freed or nothing is evictable; a parent left childless and unlocked becomes a candidate. Returns the ids freed.
   */
  evict(numTokens: number): number[] {
    checkCount('RadixCache.evict', 'numTokens', numTokens, 0);
    const older = (a: Node, b: Node) => a.lastAccess < b.lastAccess || (a.lastAccess === b.lastAccess && a.id < b.id);
    const heap: Node[] = [];
    const push = (n: Node) => {
      heap.push(n);
      for (let i = heap.length - 1; i > 0 && older(heap[i], heap[(i - 1) >> 1]); i = (i - 1) >> 1) [heap[i], heap[(i - 1) >> 1]] = [heap[(i - 1) >> 1], heap[i]];
    };
    const pop = (): Node => {
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        for (let i = 0; ; ) {
          const l = 2 * i + 1;
          const m = l + 1 < heap.length && older(heap[l + 1], heap[l]) ? l + 1 : l;
          if (l >= heap.length || !older(heap[m], heap[i])) break;
          [heap[i], heap[m]] = [heap[m], heap[i]];
          i = m;
        }
      }
      return top;
    };
    for (const n of this.nodes()) if (n.children.size === 0 && n.lockRef === 0) push(n);
    const freed: number[] = [];
    let tokens = 0;
    while (tokens < numTokens && heap.length > 0) {
      const leaf = pop();
      const parent = leaf.parent!;
      parent.children.delete(this.childKey(leaf.key, 0));
      leaf.parent = null; // a stale handle on it is refused by lock and unlock
      freed.push(...leaf.value);
      tokens += leaf.key.length;
      this.totalSize -= leaf.key.length;
      if (parent !== this.root && parent.children.size === 0 && parent.lockRef === 0) push(parent);
    }
    return freed;
  }

  /** Sizes add up, locks only grow toward the root, values cover keys page for page. */
  checkInvariants(): void {
    const op = 'RadixCache.checkInvariants';
    let total = 0;
    let prot = 0;
    for (const n of this.nodes()) {
      total += n.key.length;
      if (n.lockRef > 0) prot += n.key.length;
      invariant(n.key.length > 0 && n.key.length === n.value.length * this.pageSize, op, `node ${n.id}: ${n.key.length} tokens, ${n.value.length} values`);
      invariant(n.parent!.children.get(this.childKey(n.key, 0)) === n, op, `node ${n.id} is not its parent's child`);
      invariant(n.parent === this.root || n.parent!.lockRef >= n.lockRef, op, `node ${n.id} is locked more than its parent`);
    }
    invariant(total === this.totalSize && prot === this.protectedTokens, op, `sizes ${this.totalSize}/${this.protectedTokens}, counted ${total}/${prot}`);
  }

  /** Every node but the root. */
  private *nodes(): Generator<Node> {
    const stack = [...this.root.children.values()];
    while (stack.length > 0) {
      const n = stack.pop()!;
      yield n;
      stack.push(...n.children.values());
    }
  }

  /** Splits `child` after its first `k` tokens; the new upper node inherits locks and access time, so handles stay valid. */
  private split(child: Node, k: number): Node {
    const p = k / this.pageSize;
    const mid = new Node(this.nextId++, child.key.slice(0, k), child.value.slice(0, p), child.parent, child.lastAccess);
    mid.lockRef = child.lockRef;
    child.parent!.children.set(this.childKey(mid.key, 0), mid);
    child.key = child.key.slice(k);
    child.value = child.value.slice(p);
    child.parent = mid;
    mid.children.set(this.childKey(child.key, 0), child);
    return mid;
  }

  /** Tokens of `key` equal to tokens[i..], rounded down to whole pages. */
  private matchLen(key: readonly number[], tokens: readonly number[], i: number): number {
    let k = 0;
    while (k < key.length && i + k < tokens.length && key[k] === tokens[i + k]) k++;
    return k - (k % this.pageSize);
  }

  private childKey(tokens: readonly number[], i: number): string {
    return this.pageSize === 1 ? String(tokens[i]) : tokens.slice(i, i + this.pageSize).join(',');
  }

  private own(op: string, node: RadixNode): Node {
    if (!(node instanceof Node)) throw new KvCacheError(op, 'invalid-argument', 'not a node of a radix cache');
    let n = node;
    while (n.parent) n = n.parent;
    if (n !== this.root) throw new KvCacheError(op, 'invalid-argument', `node ${node.id} is not in this cache (evicted, or another cache's)`);
    return node;
  }
}
