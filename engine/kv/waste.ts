/** KV memory accounting of the vLLM paper (Kwon et al., SOSP 2023, Fig. 2-3): tokens, reservation, internal and external fragmentation. */
import { kvBytesPerToken, type ModelShape } from '../model/presets.ts';
import { checkCount, invariant, KvCacheError } from './errors.ts';

export type KvLayout =
  /**
   * One region per sequence reserved up front (Orca, FasterTransformer, Hugging Face's static cache). With
   * `poolTokens`, the regions sit in a pool of that many token slots, and free gaps too small for one more region of
   * `maxSeqLen` count as external fragmentation.
   */
  | { kind: 'contiguous'; maxSeqLen: number; poolTokens?: number }
  /** Blocks of `blockSize` slots allocated on demand (vLLM). */
  | { kind: 'paged'; blockSize: number }
  /** Single-token slots allocated on demand (LightLLM): a block size of 1. */
  | { kind: 'token' };

export interface SeqLength {
  /** Tokens whose keys and values are cached now. */
  length: number;
  /** The length the sequence will reach, if known. Contiguous only: slots up to it are reservation, past it internal fragmentation. */
  finalLength?: number;
  /** Contiguous only: slots reserved for this sequence (default maxSeqLen), for systems that reserve prompt + max_tokens. */
  reserved?: number;
  /** Contiguous with poolTokens only: where the region starts in the pool. Give it for every sequence or for none (packed from 0). */
  offset?: number;
}

/** Bytes; reservedBytes = usedBytes + reservation + internalFragmentation + externalFragmentation exactly. */
export interface KvWaste {
  layout: KvLayout['kind'];
  bytesPerToken: number;
  reservedBytes: number;
  /** Bytes holding some token's keys and values. */
  usedBytes: number;
  /** Reserved for tokens the sequence has not produced yet (all the slack of a contiguous region when finalLength is unknown). */
  reservation: number;
  /** Slots reserved that no token will ever use: a paged sequence's last block past its length; a region past finalLength. */
  internalFragmentation: number;
  /** Free gaps between contiguous regions that no new region fits in; 0 for the uniform pools of paged and token layouts. */
  externalFragmentation: number;
  /** usedBytes / reservedBytes; 1 when nothing is reserved. */
  usedShare: number;
}

/**
 * Accounts for `seqs` under `layout`, `bytesPerToken` bytes per token slot (1 counts slots). On-demand layouts reserve
 * nothing ahead, so their waste is only the unfilled tail of each sequence's last block: at most blockSize - 1 slots.
 */
export function kvWaste(layout: KvLayout, seqs: readonly SeqLength[], bytesPerToken = 1): KvWaste {
  const op = 'kvWaste';
  if (!(bytesPerToken > 0)) throw new KvCacheError(op, 'invalid-size', `bytesPerToken must be positive, got ${bytesPerToken}`);
  for (const s of seqs) {
    checkCount(op, 'length', s.length, 0);
    if (s.finalLength !== undefined) {
      checkCount(op, 'finalLength', s.finalLength, 0);
      if (s.finalLength < s.length) throw new KvCacheError(op, 'invalid-argument', `finalLength ${s.finalLength} is below length ${s.length}`);
    }
  }
  let used = 0;
  let reservation = 0;
  let internal = 0;
  let external = 0;
  for (const s of seqs) used += s.length;
  switch (layout.kind) {
    case 'contiguous': {
      checkCount(op, 'maxSeqLen', layout.maxSeqLen, 1);
      for (const s of seqs) {
        const r = s.reserved ?? layout.maxSeqLen;
        checkCount(op, 'reserved', r, 1);
        const end = s.finalLength ?? s.length;
        if (end > r) throw new KvCacheError(op, 'too-long', `a sequence of ${end} tokens does not fit its region of ${r}`);
        reservation += s.finalLength === undefined ? r - s.length : s.finalLength - s.length;
        internal += s.finalLength === undefined ? 0 : r - s.finalLength;
      }
      if (layout.poolTokens !== undefined) external = gapWaste(layout.maxSeqLen, layout.poolTokens, seqs);
      else if (seqs.some((s) => s.offset !== undefined)) throw new KvCacheError(op, 'invalid-argument', 'offsets need poolTokens');
      break;
    }
    case 'paged':
      checkCount(op, 'blockSize', layout.blockSize, 1);
      for (const s of seqs) internal += Math.ceil(s.length / layout.blockSize) * layout.blockSize - s.length;
      break;
    case 'token':
      break;
    default:
      throw new KvCacheError(op, 'invalid-argument', `unknown layout ${JSON.stringify(layout)}`);
  }
  const reserved = used + reservation + internal + external;
  const b = bytesPerToken;
  return {
    layout: layout.kind,
    bytesPerToken: b,
    reservedBytes: reserved * b,
    usedBytes: used * b,
    reservation: reservation * b,
    internalFragmentation: internal * b,
    externalFragmentation: external * b,
    usedShare: reserved === 0 ? 1 : used / reserved,
  };
}

/** The same accounting with a model's bytes per token: kvBytesPerToken(cfg, bytesPerElement), 2 for fp16. */
export function kvWasteForModel(cfg: ModelShape, bytesPerElement: number, layout: KvLayout, seqs: readonly SeqLength[]): KvWaste {
  return kvWaste(layout, seqs, kvBytesPerToken(cfg, bytesPerElement));
}

/** Slots of free gaps in the pool that cannot hold one more region of maxSeqLen: the remainder of each gap. */
function gapWaste(maxSeqLen: number, poolTokens: number, seqs: readonly SeqLength[]): number {
  const op = 'kvWaste';
  checkCount(op, 'poolTokens', poolTokens, 1);
  const placed = seqs.filter((s) => s.offset !== undefined).length;
  if (placed !== 0 && placed !== seqs.length) throw new KvCacheError(op, 'invalid-argument', `offsets given for ${placed} of ${seqs.length} sequences`);
  let next = 0;
  const regions = seqs.map((s) => {
    const size = s.reserved ?? maxSeqLen;
    const start = s.offset ?? next;
    checkCount(op, 'offset', start, 0);
    next = start + size;
    return [start, start + size] as const;
  });
  regions.sort((a, b) => a[0] - b[0]);
  let waste = 0;
  let cursor = 0;
  for (const [start, end] of [...regions, [poolTokens, poolTokens] as const]) {
    if (start < cursor || end > poolTokens) {
      throw new KvCacheError(op, 'invalid-argument', `region [${start}, ${end}) overlaps another or leaves the pool of ${poolTokens}`);
    }
    waste += (start - cursor) % maxSeqLen;
    cursor = end;
  }
  invariant(waste <= poolTokens, op, `external fragmentation ${waste} exceeds the pool ${poolTokens}`);
  return waste;
}
