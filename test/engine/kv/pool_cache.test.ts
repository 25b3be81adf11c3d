/**
 * The pooled KV cache on a real model: every layout gives the logits of the static (contiguous, fused-attention)
 * cache; prefix hits, copy-on-write and token trees give what computing everything again gives; the memory it reports
 * is exact; and a step that cannot run leaves every sequence's cache as it was.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, KvCacheError, type Device } from '../../../engine/index.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import type { PoolKvCache, PoolLayout } from '../../../engine/kv/pool_cache.ts';
import { randomWeights, TINY_LLAMA } from '../model/tiny_config.ts';
import { relError } from '../../helpers/rel_error.ts';

const CFG = TINY_LLAMA;
const LAYOUTS: [string, { layout: PoolLayout; radixCache?: boolean }][] = [
  ['contiguous', { layout: 'contiguous' }],
  ['paged', { layout: 'paged' }],
  ['token', { layout: 'token' }],
  ['token with a radix cache', { layout: 'token', radixCache: true }],
];
const PROMPTS = [
  [3, 17, 42, 5, 63, 0, 28, 9, 11, 50, 7, 33, 1, 2, 4, 8, 16, 32, 61, 19, 22],
  [12, 40, 6],
  [9, 9, 27, 55, 13, 31, 44, 2, 18, 36],
];
// bytes per token slot: 2 (k, v) x 2 layers x 2 kv heads x 8 dims x 4 bytes
const BPT = 2 * 2 * 2 * 8 * 4;

let dev: Device;
let model: LlamaModel;
beforeAll(async () => {
  dev = await createDevice('cpu');
  const w = randomWeights(CFG, 21);
  model = await LlamaModel.fromWeights(dev, CFG, (n) => w.get(n)!);
});
afterAll(async () => {
  model.dispose();
  await dev.dispose();
});

/** Row b of logits [B, S, V] at position i. */
const row = (l: Float32Array, _B: number, S: number, b: number, i = S - 1) => l.subarray((b * S + i) * CFG.vocabSize, (b * S + i + 1) * CFG.vocabSize);

/** Logits at the last token of each prefix tokens[0..n) for n in `ends`, from a static cache of one sequence. */
async function staticLogits(tokens: readonly number[], ends: readonly number[]): Promise<Float32Array[]> {
  const c = await model.createCache(1, CFG.maxPositions);
  try {
    const out: Float32Array[] = [];
    const first = Math.min(...ends);
    const p = await model.prefill([tokens.slice(0, first)], c);
    out.push(p.logits.toFloat32());
    p.logits.dispose();
    for (let n = first + 1; n <= Math.max(...ends); n++) {
      const d = await model.decode([tokens[n - 1]], c);
      if (ends.includes(n)) out.push(d.logits.toFloat32());
      d.logits.dispose();
    }
    return out;
  } finally {
    c.dispose();
  }
}

async function argmaxStep(cache: PoolKvCache, seqs: number[], next: number[][]): Promise<Float32Array> {
  const r = await model.forward(cache, seqs.map((seq, b) => ({ seq, tokens: next[b] })));
  const l = r.logits.toFloat32();
  r.logits.dispose();
  return l;
}

describe.each(LAYOUTS)('%s layout', (_name, { layout, radixCache }) => {
  it('three prompts prefilled together, then 6 decode steps: the static cache\'s logits (normwise <= 1e-5)', async () => {
    const cache = await model.createCache({ layout, radixCache, numSlots: 256, maxSeqLen: 48, blockSize: 4 });
    try {
      const p = await model.forward(cache, PROMPTS.map((tokens, seq) => ({ seq, tokens })));
      const l0 = p.logits.toFloat32();
      p.logits.dispose();
      const seqs = PROMPTS.map((pr) => [...pr]);
      const got: Float32Array[][] = [[0, 1, 2].map((b) => row(l0, 3, 1, b).slice())];
      for (let step = 0; step < 6; step++) {
        const next = seqs.map((s, b) => (s[s.length - 1] * 7 + step + b) % CFG.vocabSize);
        next.forEach((t, b) => seqs[b].push(t));
        const l = await argmaxStep(cache, [0, 1, 2], next.map((t) => [t]));
        got.push([0, 1, 2].map((b) => row(l, 3, 1, b).slice()));
      }
      for (let b = 0; b < 3; b++) {
        const want = await staticLogits(seqs[b], [PROMPTS[b].length, ...Array.from({ length: 6 }, (_, i) => PROMPTS[b].length + i + 1)]);
        want.forEach((w, t) => expect(relError(got[t][b], w), `sequence ${b}, step ${t}`).toBeLessThan(1e-5));
        expect(cache.length(b)).toBe(seqs[b].length);
      }
      const m = cache.memory();
      const used = seqs.reduce((s, q) => s + q.length, 0);
      expect(m.usedBytes).toBe(used * BPT);
      const reserved = layout === 'contiguous' ? 3 * 48 : layout === 'paged' ? seqs.reduce((s, q) => s + Math.ceil(q.length / 4) * 4, 0) : used;
      expect(m.reservedBytes).toBe(reserved * BPT);
      expect(m.reservation + m.internalFragmentation + m.externalFragmentation).toBe((reserved - used) * BPT);
      expect(m.poolBytes).toBe((layout === 'contiguous' ? 5 * 48 : 256) * BPT); // contiguous: whole regions of 48
      expect(dev.memory.snapshot().byTag.kv).toBeGreaterThanOrEqual(m.poolBytes);
    } finally {
      cache.dispose();
    }
  });

  it('a sequence that leaves frees its memory and a new one takes it; steps can mix prefill and decode', async () => {
    const cache = await model.createCache({ layout, radixCache, numSlots: 96, maxSeqLen: 32, blockSize: 4 });
    try {
      (await model.forward(cache, [{ seq: 'a', tokens: PROMPTS[0] }, { seq: 'b', tokens: PROMPTS[1] }])).logits.dispose();
      cache.free('a');
      expect(cache.has('a')).toBe(false);
      // b decodes while c arrives with its prompt: one padded step.
      const r = await model.forward(cache, [{ seq: 'b', tokens: [5] }, { seq: 'c', tokens: PROMPTS[2] }]);
      const l = r.logits.toFloat32();
      r.logits.dispose();
      const [wantB] = await staticLogits([...PROMPTS[1], 5], [PROMPTS[1].length + 1]);
      const [wantC] = await staticLogits(PROMPTS[2], [PROMPTS[2].length]);
      expect(relError(row(l, 2, 1, 0), wantB)).toBeLessThan(1e-5);
      expect(relError(row(l, 2, 1, 1), wantC)).toBeLessThan(1e-5);
      expect(cache.memory().sequences).toBe(2);
    } finally {
      cache.dispose();
    }
  });

  it('a step that cannot get memory throws exhausted and leaves the other sequences\' caches as they were', async () => {
    // contiguous: 2 regions of 24; paged: 12 blocks of 4; token: 48 slots.
    const cache = await model.createCache({ layout, radixCache, numSlots: 48, maxSeqLen: 24, blockSize: 4 });
    try {
      (await model.forward(cache, [{ seq: 0, tokens: PROMPTS[0] }, { seq: 1, tokens: PROMPTS[1] }])).logits.dispose();
      const before = cache.memory();
      const big = Array.from({ length: layout === 'contiguous' ? 3 : 24 }, (_, i) => (i * 5) % 64);
      const err = await model.forward(cache, [{ seq: 1, tokens: [8] }, { seq: 2, tokens: big }]).catch((e) => e);
      expect(err).toBeInstanceOf(KvCacheError);
      expect((err as KvCacheError).reason).toBe('exhausted');
      expect(cache.memory()).toEqual(before);
      expect([cache.length(0), cache.length(1), cache.has(2)]).toEqual([PROMPTS[0].length, PROMPTS[1].length, false]);
      const l = await argmaxStep(cache, [1], [[8]]);
      const [want] = await staticLogits([...PROMPTS[1], 8], [PROMPTS[1].length + 1]);
      expect(relError(row(l, 1, 1, 0), want)).toBeLessThan(1e-5);
      // Too long for the cache: a different reason, nothing changed either.
      const long = await model.forward(cache, [{ seq: 1, tokens: Array(24).fill(1) }]).catch((e) => e);
      expect((long as KvCacheError).reason).toBe('too-long');
      expect(cache.length(1)).toBe(PROMPTS[1].length + 1);
    } finally {
      cache.dispose();
    }
  });
});

describe('paged layout', () => {
  it('a second request with the same 16-token prefix hits 4 cached blocks of 4 (the last prompt token is always computed) and gets the same logits', async () => {
    const cache = await model.createCache({ layout: 'paged', numSlots: 128, blockSize: 4 });
    try {
      const shared = PROMPTS[0].slice(0, 16);
      const a = [...shared, 1];
      (await model.forward(cache, [{ seq: 'a', tokens: a }])).logits.dispose();
      const b = [...shared, 2, 3];
      const r = await model.forward(cache, [{ seq: 'b', tokens: b }]);
      expect(r.cached).toEqual([16]);
      expect(r.counts).toEqual([2]);
      const [want] = await staticLogits(b, [b.length]);
      expect(relError(r.logits.toFloat32(), want)).toBeLessThan(1e-5);
      r.logits.dispose();
      expect(cache.blockManager.blockTable('b').slice(0, 4)).toEqual(cache.blockManager.blockTable('a').slice(0, 4));
      // 4 shared blocks + a's last + b's last: 6 blocks reserved, 16 + 1 + 2 slots used.
      const m = cache.memory();
      expect([m.reservedBytes, m.usedBytes]).toEqual([6 * 4 * BPT, 19 * BPT]);
      // Both leave; a third request still hits the prefix, cached in free blocks.
      cache.free('a');
      cache.free('b');
      const c = await model.forward(cache, [{ seq: 'c', tokens: [...shared, 9] }]);
      expect(c.cached).toEqual([16]);
      c.logits.dispose();
    } finally {
      cache.dispose();
    }
  });

  it('a prompt does not hit a block that another prompt of the same step fills (its keys are written after the step)', async () => {
    const cache = await model.createCache({ layout: 'paged', numSlots: 128, blockSize: 4 });
    try {
      const shared = PROMPTS[0].slice(0, 8);
      const r = await model.forward(cache, [{ seq: 'a', tokens: [...shared, 1] }, { seq: 'b', tokens: [...shared, 2] }]);
      expect(r.cached).toEqual([0, 0]);
      const l = r.logits.toFloat32();
      r.logits.dispose();
      const [wb] = await staticLogits([...shared, 2], [9]);
      expect(relError(row(l, 2, 1, 1), wb)).toBeLessThan(1e-5);
      const c = await model.forward(cache, [{ seq: 'c', tokens: [...shared, 3] }]);
      expect(c.cached).toEqual([8]);
      c.logits.dispose();
    } finally {
      cache.dispose();
    }
  });

  it('fork shares the blocks; the first write into the shared partial block copies it (copy-on-write) and each branch decodes as if alone', async () => {
    const cache = await model.createCache({ layout: 'paged', numSlots: 64, blockSize: 4, prefixCaching: false });
    try {
      const prompt = PROMPTS[2]; // 10 tokens: 2 full blocks and one with 2 slots
      (await model.forward(cache, [{ seq: 0, tokens: prompt }])).logits.dispose();
      cache.fork(0, 1);
      const shared = cache.blockManager.blockTable(1);
      expect(shared).toEqual(cache.blockManager.blockTable(0));
      const l = await argmaxStep(cache, [0, 1], [[20], [30]]);
      // The first writer moves to a copy of the shared block; the second then holds the original alone.
      const [t0, t1] = [cache.blockManager.blockTable(0), cache.blockManager.blockTable(1)];
      expect([t0.slice(0, 2), t1.slice(0, 2)]).toEqual([shared.slice(0, 2), shared.slice(0, 2)]);
      expect([t0[2] !== shared[2], t1[2]]).toEqual([true, shared[2]]);
      const [w0] = await staticLogits([...prompt, 20], [11]);
      const [w1] = await staticLogits([...prompt, 30], [11]);
      expect(relError(row(l, 2, 1, 0), w0)).toBeLessThan(1e-5);
      expect(relError(row(l, 2, 1, 1), w1)).toBeLessThan(1e-5);
      cache.blockManager.checkInvariants();
    } finally {
      cache.dispose();
    }
  });
});

describe('token layout with a radix cache (RadixAttention)', () => {
  it('a request arriving while another runs shares its prefilled prefix; finished requests stay cached until evicted, least recently used first', async () => {
    const cache = await model.createCache({ layout: 'token', radixCache: true, numSlots: 48 });
    try {
      const shared = PROMPTS[0].slice(0, 16);
      (await model.forward(cache, [{ seq: 'a', tokens: [...shared, 1, 2, 3, 4] }])).logits.dispose();
      const b = [...shared, 5, 6];
      const r = await model.forward(cache, [{ seq: 'a', tokens: [7] }, { seq: 'b', tokens: b }]);
      expect(r.cached).toEqual([0, 16]);
      const [want] = await staticLogits(b, [b.length]);
      expect(relError(row(r.logits.toFloat32(), 2, 1, 1), want)).toBeLessThan(1e-5);
      r.logits.dispose();
      expect(cache.slotTable('b').slice(0, 16)).toEqual(cache.slotTable('a').slice(0, 16));
      // a holds 21 slots and b 2 of its own beyond the 16 it shares.
      expect(cache.memory().reservedBytes).toBe(23 * BPT);
      cache.free('a');
      cache.free('b');
      expect(cache.memory().reservedBytes).toBe(0);
      const tree = cache.radixTree.tree;
      expect(tree.numCachedTokens).toBe(21 + 2);
      const c = await model.forward(cache, [{ seq: 'c', tokens: [...shared, 5, 6, 9] }]);
      expect(c.cached).toEqual([18]);
      c.logits.dispose();
      cache.free('c');
      // An unrelated prompt of 40 tokens needs 40 of 48 slots with 24 free: 16 cached tokens must go. Leaves go least
      // recently used first, whole: a's tail (5 tokens), c's (1), then b's (2) and the shared 16 they hung from.
      const long = Array.from({ length: 40 }, (_, i) => (i * 3 + 1) % 64);
      const d = await model.forward(cache, [{ seq: 'd', tokens: long }]);
      expect(d.cached).toEqual([0]);
      d.logits.dispose();
      expect(tree.numCachedTokens).toBe(40); // d's own prompt, cached once prefilled
      cache.radixTree.checkInvariants();
      const e = await model.forward(cache, [{ seq: 'd', tokens: [2] }]);
      const [we] = await staticLogits([...long, 2], [41]);
      expect(relError(e.logits.toFloat32(), we)).toBeLessThan(1e-5);
      e.logits.dispose();
      cache.free('d');
      const f = await model.forward(cache, [{ seq: 'f', tokens: [...shared, 5] }]);
      expect(f.cached).toEqual([0]);
      f.logits.dispose();
    } finally {
      cache.dispose();
    }
  });
});

describe('token layout: a token tree verified in one step (SpecInfer)', () => {
  // Tree over a 10-token prefix: 0 -> 1 -> 3, 0 -> 2, and a second root 4.
  const tokens = [11, 22, 33, 44, 55];
  const parents = [-1, 0, 0, 1, -1];
  const pathOf = (i: number): number[] => (i < 0 ? [] : [...pathOf(parents[i]), i]);

  it('each node\'s logits are those of decoding its own branch; the accepted branch then decodes as if decoded alone', async () => {
    const cache = await model.createCache({ layout: 'token', numSlots: 64 });
    try {
      const prompt = PROMPTS[2];
      (await model.forward(cache, [{ seq: 0, tokens: prompt }])).logits.dispose();
      const r = await model.forward(cache, [{ seq: 0, tokens, parents }]);
      const l = r.logits.toFloat32();
      r.logits.dispose();
      for (let i = 0; i < tokens.length; i++) {
        const branch = [...prompt, ...pathOf(i).map((j) => tokens[j])];
        const [want] = await staticLogits(branch, [branch.length]);
        expect(relError(row(l, 1, 5, 0, i), want), `node ${i}`).toBeLessThan(1e-5);
      }
      expect(cache.memory().usedBytes).toBe(15 * BPT);
      cache.acceptTree(0, pathOf(3));
      expect(cache.length(0)).toBe(13);
      expect(cache.memory().reservedBytes).toBe(13 * BPT);
      const next = await argmaxStep(cache, [0], [[7]]);
      const branch = [...prompt, 11, 22, 44, 7];
      const [want] = await staticLogits(branch, [branch.length]);
      expect(relError(next, want)).toBeLessThan(1e-5);
    } finally {
      cache.dispose();
    }
  });

  it('refuses trees where they cannot work: another layout, an unprefilled sequence, a parent after its child, a step before acceptTree', async () => {
    const paged = await model.createCache({ layout: 'paged', numSlots: 64 });
    const token = await model.createCache({ layout: 'token', numSlots: 64 });
    try {
      (await model.forward(paged, [{ seq: 0, tokens: [1, 2, 3] }])).logits.dispose();
      const reason = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as KvCacheError).reason;
      expect(await reason(model.forward(paged, [{ seq: 0, tokens, parents }]))).toBe('invalid-argument');
      expect(await reason(model.forward(token, [{ seq: 5, tokens, parents }]))).toBe('invalid-argument');
      (await model.forward(token, [{ seq: 0, tokens: [1, 2, 3] }])).logits.dispose();
      expect(await reason(model.forward(token, [{ seq: 0, tokens: [1, 2], parents: [1, -1] }]))).toBe('invalid-argument');
      (await model.forward(token, [{ seq: 0, tokens, parents }])).logits.dispose();
      expect(await reason(model.forward(token, [{ seq: 0, tokens: [4] }]))).toBe('invalid-argument');
      expect(token.length(0)).toBe(8);
    } finally {
      paged.dispose();
      token.dispose();
    }
  });
});

describe('bad options', () => {
  it('name what was wrong', async () => {
    const reason = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as KvCacheError).reason;
    expect(await reason(model.createCache({ layout: 'paged', numSlots: 64, blockSize: 0 }))).toBe('invalid-size');
    expect(await reason(model.createCache({ layout: 'paged', numSlots: 8, blockSize: 16 }))).toBe('invalid-size');
    expect(await reason(model.createCache({ layout: 'token' }))).toBe('invalid-argument');
    expect(await reason(model.createCache({ layout: 'nope' as PoolLayout, numSlots: 8 }))).toBe('invalid-argument');
    expect(await reason(model.createCache({ layout: 'contiguous', numSlots: 64, maxSeqLen: 65 }))).toBe('too-long');
    const c = await model.createCache({ layout: 'token', budgetBytes: 10 * BPT + 5 });
    expect(c.pool.numSlots).toBe(10);
    c.dispose();
    c.dispose();
  });
});
