/**
 * KV memory per layout on a ShareGPT-like batch mid-decode (vLLM, Kwon et al. SOSP 2023, Figs. 1-2): the share of what
 * each reserves that holds tokens, from a pooled cache's own bookkeeping against kvWaste, and how many such requests fit
 * one memory budget. The batch is the one a server holds at a random moment of a long run (long requests found in it
 * in proportion to their output length), so its shares are what the paper's average over a serving run measures.
 */
import { createDevice, type Device } from '../engine/index.ts';
import { KvCacheError, kvWaste, PoolKvCache, shareGptLikeBatch, type KvLayout, type PoolLayout, type SeqLength } from '../engine/kv/index.ts';
import { kvBytesPerToken, OPT_13B } from '../engine/model/presets.ts';
import { BLOCK } from './kv_attention.ts';

export interface UsageRow {
  layout: PoolLayout;
  /** usedBytes / reservedBytes from cache.memory() after the batch's tokens were allocated. */
  usedShare: number;
  /** In token slots, from cache.memory(). */
  reservedSlots: number;
  usedSlots: number;
  reservation: number;
  internalFragmentation: number;
  externalFragmentation: number;
  /** kvWaste's usedShare for the same lengths, and whether its reserved and used slots equal the cache's. */
  kvWasteShare: number;
  agrees: boolean;
  /** The reserved bytes at the preset's fp16 KV bytes per token. */
  presetReservedGiB: number;
}

/** The KV benchmark's memory section: per layout, the pre-allocating systems' context, and the requests that fit a budget. */
export interface KvMemoryBench {
  preset: string;
  presetBytesPerToken: number;
  requests: number;
  seed: number;
  meanLength: number;
  meanFinalLength: number;
  maxSeqLen: number;
  blockSize: number;
  rows: UsageRow[];
  /** kvWaste for the pre-allocating systems of the paper's Fig. 2: region of maxSeqLen, next power of two, exact final length. */
  context: { system: string; usedShare: number }[];
  budget: { bytes: number; slots: number; fits: { layout: PoolLayout; now: number; toFinish: number }[] };
}

/** The paper's pre-allocation bound: OPT's context, and each request cut to fit it (engine/kv/sharegpt.ts). */
const MAX_SEQ_LEN = 2048;
/** KV memory beside OPT-13B's 26 GB of fp16 weights on an A100-40GB: about 30% of it (the vLLM paper's Fig. 1). */
const KV_BUDGET_BYTES = 12e9;
/**
 * The pooled cache that keeps the books of the memory rows: one layer, one kv head, head dim 1 (8 bytes a slot). Its
 * accounting is in token slots, the same for any model; bytes are then those of the preset at fp16.
 */
const BOOKKEEPING = { numLayers: 1, numKvHeads: 1, numHeads: 1, headDim: 1, maxPositions: MAX_SEQ_LEN };

/** Allocates (plan, then commit of zero rows) `len` tokens for a new sequence; false when the pool is exhausted. */
async function admit(dev: Device, cache: PoolKvCache, seq: number, len: number): Promise<boolean> {
  const tokens = Array.from({ length: len }, (_, i) => (seq * 1009 + i) % 50000);
  let plan;
  try {
    plan = await cache.plan([{ seq, tokens }]);
  } catch (e) {
    if (e instanceof KvCacheError && e.reason === 'exhausted') return false;
    throw e;
  }
  await plan.commit([0, 1].map(() => dev.tensor(new Float32Array(len), [1, len, 1])));
  return true;
}

const WASTE_LAYOUT: Record<PoolLayout, KvLayout> = {
  contiguous: { kind: 'contiguous', maxSeqLen: MAX_SEQ_LEN },
  paged: { kind: 'paged', blockSize: BLOCK },
  token: { kind: 'token' },
};

const bookkeeping = (dev: Device, layout: PoolLayout, numSlots: number) =>
  PoolKvCache.create(dev, BOOKKEEPING, { layout, numSlots, blockSize: BLOCK, maxSeqLen: MAX_SEQ_LEN, prefixCaching: false });

/** The batch's tokens allocated in a pooled cache of `layout`; its memory() against kvWaste for the same lengths. */
export async function usage(dev: Device, batch: readonly SeqLength[], layout: PoolLayout, presetBytesPerToken: number): Promise<UsageRow> {
  const cache = await bookkeeping(dev, layout, batch.length * MAX_SEQ_LEN);
  try {
    for (const [i, s] of batch.entries()) if (!(await admit(dev, cache, i, s.length))) throw new Error(`kv: the ${layout} pool could not hold sequence ${i}`);
    const m = cache.memory();
    const slots = (bytes: number) => bytes / m.bytesPerToken;
    const w = kvWaste(WASTE_LAYOUT[layout], batch);
    return {
      layout,
      usedShare: m.usedShare,
      reservedSlots: slots(m.reservedBytes),
      usedSlots: slots(m.usedBytes),
      reservation: slots(m.reservation),
      internalFragmentation: slots(m.internalFragmentation),
      externalFragmentation: slots(m.externalFragmentation),
      kvWasteShare: w.usedShare,
      agrees: w.reservedBytes === slots(m.reservedBytes) && w.usedBytes === slots(m.usedBytes),
      presetReservedGiB: (slots(m.reservedBytes) * presetBytesPerToken) / 2 ** 30,
    };
  } finally {
    cache.dispose();
  }
}

/** Requests admitted in order, first come first served, until the first that does not fit a pool of `slots`. */
export async function fits(dev: Device, batch: readonly SeqLength[], layout: PoolLayout, slots: number, toFinish: boolean): Promise<number> {
  // A pool smaller than one region (contiguous) or one block holds no sequence at all.
  const cache = await bookkeeping(dev, layout, slots).catch((e) => {
    if (e instanceof KvCacheError && e.reason === 'invalid-size') return null;
    throw e;
  });
  if (!cache) return 0;
  try {
    let n = 0;
    while (n < batch.length && (await admit(dev, cache, n, toFinish ? batch[n].finalLength! : batch[n].length))) n++;
    return n;
  } finally {
    cache.dispose();
  }
}

export async function memoryRows(quick: boolean): Promise<KvMemoryBench> {
  const dev = await createDevice('cpu');
  try {
    const requests = quick ? 200 : 1000;
    const seed = 0;
    const batch = shareGptLikeBatch(requests, seed, { maxSeqLen: MAX_SEQ_LEN, sample: 'running' });
    const presetBytesPerToken = kvBytesPerToken(OPT_13B, 2);
    const layouts: PoolLayout[] = ['contiguous', 'paged', 'token'];
    const rows: UsageRow[] = [];
    for (const l of layouts) rows.push(await usage(dev, batch, l, presetBytesPerToken));
    const pow2 = (n: number) => Math.min(MAX_SEQ_LEN, 2 ** Math.ceil(Math.log2(n)));
    const context = [
      { system: `Orca (Max): a region of ${MAX_SEQ_LEN} per request`, usedShare: kvWaste(WASTE_LAYOUT.contiguous, batch).usedShare },
      { system: 'Orca (Pow2): the final length rounded up to a power of two', usedShare: kvWaste(WASTE_LAYOUT.contiguous, batch.map((s) => ({ ...s, reserved: pow2(s.finalLength!) }))).usedShare },
      { system: 'Orca (Oracle): exactly the final length', usedShare: kvWaste(WASTE_LAYOUT.contiguous, batch.map((s) => ({ ...s, reserved: s.finalLength! }))).usedShare },
    ];
    const slots = Math.floor(KV_BUDGET_BYTES / presetBytesPerToken);
    const fit = [];
    for (const l of layouts) fit.push({ layout: l, now: await fits(dev, batch, l, slots, false), toFinish: await fits(dev, batch, l, slots, true) });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return {
      preset: 'OPT-13B', presetBytesPerToken, requests, seed,
      meanLength: mean(batch.map((s) => s.length)), meanFinalLength: mean(batch.map((s) => s.finalLength!)),
      maxSeqLen: MAX_SEQ_LEN, blockSize: BLOCK, rows, context,
      budget: { bytes: KV_BUDGET_BYTES, slots, fits: fit },
    };
  } finally {
    await dev.dispose();
  }
}
