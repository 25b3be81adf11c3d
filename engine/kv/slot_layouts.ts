/**
 * The four ways a PoolKvCache hands out its pool's token slots, behind one interface: a region of maxSeqLen slots per
 * sequence (contiguous, as Orca and FasterTransformer), blocks with prefix caching and copy-on-write (paged, vLLM),
 * single slots (token, LightLLM's TokenAttention), and single slots shared across requests through a radix tree
 * (SGLang's RadixAttention). Each is bookkeeping only: the pool's tensors and the attention kernel are the cache's.
 */
import type { BlockManager, SeqId } from './block_manager.ts';
import type { StepSeq } from './kv_cache.ts';
import type { RadixSlots } from './radix_slots.ts';
import type { RegionPool } from './region_pool.ts';
import type { TokenPool } from './token_pool.ts';

/** What one step's admissions leave for the cache to do before and after attention. */
export interface StepWrites {
  /** Paged: blocks this step fills; a later prompt in the same step must not hit them. */
  unwritten: Set<number>;
  /** Paged: slot copies (source, destination) that copy-on-write needs before the step writes. */
  copies: [number, number][];
}

/** A layout's slot counts, for KvMemory (in slots; the cache multiplies by bytes per slot). */
export interface SlotCounts {
  reserved: number;
  used: number;
  /** Reserved for a sequence's future tokens (contiguous). */
  reservation: number;
  /** Free slots in gaps too small for a sequence (contiguous). */
  external: number;
  free: number;
}

export interface SlotLayout {
  /** Whether a new sequence with this prompt could be admitted now. */
  canAdmit(seq: SeqId, prompt: readonly number[]): boolean;
  /** Whether the free memory holds what this step takes (`lens`: cached tokens of the sequences already in). */
  fits(batch: readonly StepSeq[], lens: ReadonlyMap<SeqId, number>): boolean;
  /** Whether sequences of these final lengths could all be held at once, now. */
  canReserve(lengths: readonly number[]): boolean;
  /** Allocates one sequence's slots for a step: the prompt tokens found cached, and (paged) the blocks it hashed. */
  admit(s: StepSeq, fresh: boolean, step: StepWrites): { hit: number; hashed: number[] };
  /** Undoes a new sequence's admission whose keys and values were never written. */
  abandon(seq: SeqId, hashed: readonly number[]): void;
  /** Frees the sequence's memory past its first n tokens. */
  cut(seq: SeqId, n: number): void;
  free(seq: SeqId): void;
  /** The slot of each of the sequence's `length` cached positions. */
  slotTable(seq: SeqId, length: number): number[];
  counts(lens: ReadonlyMap<SeqId, number>): SlotCounts;
  /** Called once a new sequence's first keys and values are written. */
  written?(seq: SeqId): void;
}

const sum = (xs: Iterable<number>) => {
  let s = 0;
  for (const x of xs) s += x;
  return s;
};

/** A region of maxSeqLen slots per sequence, reserved whole when it arrives: what the lecture calls reservation waste. */
export class ContiguousSlots implements SlotLayout {
  constructor(
    readonly regions: RegionPool,
    private readonly maxSeqLen: number,
  ) {}

  canAdmit(): boolean {
    return this.regions.canAllocate(this.maxSeqLen);
  }

  fits(batch: readonly StepSeq[], lens: ReadonlyMap<SeqId, number>): boolean {
    const fresh = batch.filter((s) => !lens.has(s.seq)).map(() => this.maxSeqLen);
    return fresh.length === 0 || this.regions.canAllocateAll(fresh);
  }

  canReserve(lengths: readonly number[]): boolean {
    return this.regions.canAllocateAll(lengths.map(() => this.maxSeqLen));
  }

  admit(s: StepSeq, fresh: boolean): { hit: number; hashed: number[] } {
    if (fresh) this.regions.allocate(s.seq, this.maxSeqLen);
    return { hit: 0, hashed: [] };
  }

  abandon(seq: SeqId): void {
    this.regions.free(seq);
  }

  cut(): void {
    // The region stays reserved whole: that is the layout.
  }

  free(seq: SeqId): void {
    this.regions.free(seq);
  }

  slotTable(seq: SeqId, length: number): number[] {
    const r = this.regions.region(seq);
    return Array.from({ length }, (_, i) => r.offset + i);
  }

  counts(lens: ReadonlyMap<SeqId, number>): SlotCounts {
    const used = sum(lens.values());
    const reserved = lens.size * this.maxSeqLen;
    const gaps = this.regions.gaps();
    return {
      reserved,
      used,
      reservation: reserved - used,
      external: sum(gaps.filter((g) => g.length < this.maxSeqLen).map((g) => g.length)),
      free: sum(gaps.map((g) => g.length)),
    };
  }
}

/** Blocks allocated as tokens arrive, full blocks of equal prefixes shared and copied on write (vLLM). */
export class PagedSlots implements SlotLayout {
  constructor(readonly blocks: BlockManager) {}

  private get blockSize(): number {
    return this.blocks.blockSize;
  }

  canAdmit(seq: SeqId, prompt: readonly number[]): boolean {
    return this.blocks.canAllocate(seq, prompt);
  }

  fits(batch: readonly StepSeq[], lens: ReadonlyMap<SeqId, number>): boolean {
    let need = 0;
    let earlier = false;
    for (const s of batch) {
      if (!lens.has(s.seq)) {
        // A prompt after another in the same step may not hit what that one fills: counted without hits.
        need += earlier ? Math.ceil(s.tokens.length / this.blockSize) : this.blocks.blocksNeeded(s.seq, s.tokens);
      } else need += this.blocks.appendBlocks(s.seq, s.tokens.length);
      earlier = true;
    }
    return need <= this.blocks.pool.numFree;
  }

  canReserve(lengths: readonly number[]): boolean {
    return sum(lengths.map((n) => Math.ceil(n / this.blockSize))) <= this.blocks.pool.numFree;
  }

  admit(s: StepSeq, fresh: boolean, step: StepWrites): { hit: number; hashed: number[] } {
    const B = this.blockSize;
    if (fresh) {
      const table = this.blocks.allocate(s.seq, s.tokens, { unwritten: step.unwritten });
      const hit = this.blocks.numCachedTokens(s.seq);
      // Blocks past the hits were hashed before their keys and values exist: undone if the step fails.
      const hashed = Array.from({ length: table.length }, (_, i) => i).filter((i) => i >= hit / B);
      for (const i of hashed) step.unwritten.add(table[i]);
      return { hit, hashed };
    }
    for (const t of s.tokens) {
      const r = this.blocks.append(s.seq, t);
      if (r.copy) for (let i = 0; i < B; i++) step.copies.push([r.copy.src * B + i, r.copy.dst * B + i]);
      step.unwritten.add(Math.floor(r.slot / B));
    }
    return { hit: 0, hashed: [] };
  }

  abandon(seq: SeqId, hashed: readonly number[]): void {
    this.blocks.forgetBlocks(seq, [...hashed]);
    this.blocks.free(seq);
  }

  /** Blocks past the first n tokens that only this sequence holds lose their hashes: their keys are gone. */
  cut(seq: SeqId, n: number): void {
    const table = this.blocks.blockTable(seq);
    const from = Math.floor(n / this.blockSize);
    const mine = Array.from({ length: table.length - from }, (_, i) => from + i).filter((i) => this.blocks.pool.refCount(table[i]) === 1);
    this.blocks.forgetBlocks(seq, mine);
    this.blocks.truncate(seq, n);
  }

  free(seq: SeqId): void {
    this.blocks.free(seq);
  }

  slotTable(seq: SeqId): number[] {
    return this.blocks.slotMapping(seq);
  }

  counts(lens: ReadonlyMap<SeqId, number>): SlotCounts {
    const B = this.blockSize;
    // A block shared by several sequences is counted once, as full as the fullest of them.
    const filled = new Map<number, number>();
    for (const [seq, n] of lens) {
      this.blocks.blockTable(seq).forEach((blk, i) => filled.set(blk, Math.max(filled.get(blk) ?? 0, Math.min(B, n - i * B))));
    }
    return { reserved: filled.size * B, used: sum(filled.values()), reservation: 0, external: 0, free: this.blocks.pool.numFree * B };
  }
}

/** Single slots allocated as tokens arrive; a token tree's rejected branches are freed slot by slot (LightLLM, SpecInfer). */
export class TokenSlots implements SlotLayout {
  constructor(readonly tokens: TokenPool) {}

  canAdmit(_seq: SeqId, prompt: readonly number[]): boolean {
    return prompt.length <= this.tokens.numFree;
  }

  fits(batch: readonly StepSeq[]): boolean {
    return sum(batch.map((s) => s.tokens.length)) <= this.tokens.numFree;
  }

  canReserve(lengths: readonly number[]): boolean {
    return sum(lengths) <= this.tokens.numFree;
  }

  admit(s: StepSeq): { hit: number; hashed: number[] } {
    this.tokens.allocate(s.seq, s.tokens.length);
    return { hit: 0, hashed: [] };
  }

  abandon(seq: SeqId): void {
    this.tokens.free(seq);
  }

  cut(seq: SeqId, n: number): void {
    this.tokens.truncate(seq, n);
  }

  free(seq: SeqId): void {
    this.tokens.free(seq);
  }

  slotTable(seq: SeqId): number[] {
    return [...this.tokens.tokenTable(seq)];
  }

  counts(lens: ReadonlyMap<SeqId, number>): SlotCounts {
    const free = this.tokens.numFree;
    return { reserved: this.tokens.numSlots - free, used: sum(lens.values()), reservation: 0, external: 0, free };
  }
}

/** Single slots whose prompt prefixes are shared across requests in a radix tree and kept after a request ends (SGLang). */
export class RadixTokenSlots implements SlotLayout {
  constructor(readonly radix: RadixSlots) {}

  canAdmit(_seq: SeqId, prompt: readonly number[]): boolean {
    return this.radix.canAdmit(prompt);
  }

  fits(batch: readonly StepSeq[], lens: ReadonlyMap<SeqId, number>): boolean {
    const need = sum(batch.map((s) => (lens.has(s.seq) ? s.tokens.length : s.tokens.length - this.radix.tree.matchPrefix(s.tokens.slice(0, -1)).length)));
    return need <= this.radix.numAvailable;
  }

  canReserve(lengths: readonly number[]): boolean {
    return sum(lengths) <= this.radix.numAvailable;
  }

  admit(s: StepSeq, fresh: boolean): { hit: number; hashed: number[] } {
    if (fresh) return { hit: this.radix.admit(s.seq, s.tokens), hashed: [] };
    this.radix.append(s.seq, s.tokens);
    return { hit: 0, hashed: [] };
  }

  abandon(seq: SeqId): void {
    this.radix.abandon(seq);
  }

  cut(seq: SeqId, n: number): void {
    this.radix.truncate(seq, n);
  }

  free(seq: SeqId): void {
    this.radix.finish(seq);
  }

  slotTable(seq: SeqId): number[] {
    return [...this.radix.table(seq)];
  }

  counts(): SlotCounts {
    const held = this.radix.heldSlots();
    return { reserved: held, used: held, reservation: 0, external: 0, free: this.radix.numAvailable };
  }

  written(seq: SeqId): void {
    this.radix.cacheUnfinished(seq);
  }
}
