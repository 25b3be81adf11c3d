/**
 * Contiguous KV memory: each sequence reserves one region of consecutive token slots up front, as Orca and
 * FasterTransformer do (the vLLM paper's Fig. 3: reservation, internal and external fragmentation). Regions are placed
 * first-fit in a pool of `numSlots` slots; a freed region leaves a gap that only an equal or smaller region can use.
 */
import { checkCount, invariant, KvCacheError } from './errors.ts';
import type { SeqId } from './block_manager.ts';

export interface Region {
  offset: number;
  length: number;
}

export class RegionPool {
  readonly numSlots: number;
  private readonly regions = new Map<SeqId, Region>();

  constructor(numSlots: number) {
    checkCount('RegionPool', 'numSlots', numSlots, 1);
    this.numSlots = numSlots;
  }

  /** Free gaps between regions, in slot order. */
  gaps(): Region[] {
    const used = [...this.regions.values()].sort((a, b) => a.offset - b.offset);
    const out: Region[] = [];
    let at = 0;
    for (const r of used) {
      if (r.offset > at) out.push({ offset: at, length: r.offset - at });
      at = r.offset + r.length;
    }
    if (at < this.numSlots) out.push({ offset: at, length: this.numSlots - at });
    return out;
  }

  get numFree(): number {
    return this.gaps().reduce((s, g) => s + g.length, 0);
  }

  /** Whether a region of `length` slots fits in one gap (free slots in several gaps do not add up). */
  canAllocate(length: number): boolean {
    checkCount('RegionPool.canAllocate', 'length', length, 1);
    return this.gaps().some((g) => g.length >= length);
  }

  /** Whether regions of these lengths could all be placed now, first-fit in order. */
  canAllocateAll(lengths: readonly number[]): boolean {
    const gaps = this.gaps().map((g) => g.length);
    for (const n of lengths) {
      const i = gaps.findIndex((g) => g >= n);
      if (i < 0) return false;
      gaps[i] -= n;
    }
    return true;
  }

  /** Places a region for `seq` in the first gap that holds it. */
  allocate(seq: SeqId, length: number): Region {
    const op = 'RegionPool.allocate';
    checkCount(op, 'length', length, 1);
    if (this.regions.has(seq)) throw new KvCacheError(op, 'invalid-argument', `sequence ${seq} already has a region`);
    const gap = this.gaps().find((g) => g.length >= length);
    if (!gap) {
      const free = this.numFree;
      const why = free >= length ? ` (${free} slots are free, but in gaps of at most ${Math.max(0, ...this.gaps().map((g) => g.length))}: external fragmentation)` : '';
      throw new KvCacheError(op, 'exhausted', `no gap of ${length} slots for sequence ${seq}${why}`);
    }
    const r = { offset: gap.offset, length };
    this.regions.set(seq, r);
    return { ...r };
  }

  free(seq: SeqId): void {
    if (!this.regions.delete(seq)) throw new KvCacheError('RegionPool.free', 'invalid-argument', `unknown sequence ${seq}`);
  }

  has(seq: SeqId): boolean {
    return this.regions.has(seq);
  }

  region(seq: SeqId): Region {
    const r = this.regions.get(seq);
    if (!r) throw new KvCacheError('RegionPool.region', 'invalid-argument', `unknown sequence ${seq}`);
    return { ...r };
  }

  /** Regions lie inside the pool and do not overlap. */
  checkInvariants(): void {
    const rs = [...this.regions.entries()].sort((a, b) => a[1].offset - b[1].offset);
    let end = 0;
    for (const [id, r] of rs) {
      invariant(r.offset >= end && r.offset + r.length <= this.numSlots, 'RegionPool.checkInvariants', `region of sequence ${id} [${r.offset}, ${r.offset + r.length}) overlaps another or leaves the pool`);
      end = r.offset + r.length;
    }
  }
}
