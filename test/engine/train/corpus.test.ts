/** The Moby-Dick corpus: its split, a hash stable across calls, and seeded, resumable language-model batches. */
import { describe, expect, it } from 'vitest';
import { BatchSampler, evalBatches, makeCorpus, mobyDick, mobyDickText } from '../../../engine/train/corpus.ts';

describe('mobyDick', () => {
  const c = mobyDick();

  it('holds out the last 5% of the bytes', () => {
    expect(c.bytes.length).toBeGreaterThan(1_100_000);
    expect(c.split).toBe(Math.floor(0.95 * c.bytes.length));
    expect(c.train.length).toBe(c.split);
    expect(c.heldOut.length).toBe(c.bytes.length - c.split);
    expect(c.train[c.split - 1]).toBe(c.bytes[c.split - 1]);
    expect(c.heldOut[0]).toBe(c.bytes[c.split]);
  });

  it('is the same bytes and hash on every call', () => {
    const d = mobyDick();
    expect(d.sha256).toBe(c.sha256);
    expect(d.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(Buffer.from(d.bytes).equals(c.bytes)).toBe(true);
  });

  it('joins the chapters in order, numbered ones under their Contents heading', () => {
    const text = mobyDickText();
    expect(text.startsWith('CONTENTS\n')).toBe(true);
    const ch1 = text.indexOf('\n\nCHAPTER 1. Loomings.\n\nCall me Ishmael.');
    const ch135 = text.lastIndexOf('\n\nCHAPTER 135. The Chase.—Third Day.\n\n');
    const epilogue = text.indexOf('\n\nEpilogue "AND I ONLY AM ESCAPED');
    expect(ch1).toBeGreaterThan(0);
    expect(ch135).toBeGreaterThan(ch1);
    expect(epilogue).toBeGreaterThan(ch135);
    expect(text.endsWith('only found another orphan.\n')).toBe(true);
    expect(Buffer.from(text, 'utf8').equals(c.bytes)).toBe(true);
  });
});

describe('BatchSampler', () => {
  const data = new Uint8Array(5000).map((_, i) => (i * 7 + (i >> 8)) & 255);
  const opts = { batch: 4, context: 16, seed: 1234 };

  it('labels are the tokens shifted by one, from real windows of the data', () => {
    const { tokens, labels, batch, context } = new BatchSampler(data, opts).next();
    expect([batch, context, tokens.length, labels.length]).toEqual([4, 16, 64, 64]);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < context - 1; t++) expect(labels[b * context + t]).toBe(tokens[b * context + t + 1]);
      // Find the window and check every label is the byte after its token.
      const row = Array.from(tokens.subarray(b * context, (b + 1) * context));
      const start = data.findIndex((_, i) => row.every((v, t) => data[i + t] === v));
      expect(start).toBeGreaterThanOrEqual(0);
      expect(labels[b * context + context - 1]).toBe(data[start + context]);
    }
  });

  it('is deterministic for a seed and differs for another', () => {
    const a = new BatchSampler(data, opts);
    const b = new BatchSampler(data, opts);
    const other = new BatchSampler(data, { ...opts, seed: 1235 });
    for (let i = 0; i < 3; i++) {
      const x = a.next();
      expect(b.next()).toEqual(x);
      expect(other.next().tokens).not.toEqual(x.tokens);
    }
  });

  it('resumes from a saved state with the batches the uninterrupted run draws', () => {
    const a = new BatchSampler(data, opts);
    a.next();
    a.next();
    const saved = JSON.parse(JSON.stringify(a.state()));
    const want = [a.next(), a.next()];
    const b = new BatchSampler(data, opts);
    b.restore(saved);
    expect([b.next(), b.next()]).toEqual(want);
  });

  it('reaches both ends of the data', () => {
    const small = new Uint8Array([10, 11, 12, 13, 14]);
    const s = new BatchSampler(small, { batch: 64, context: 3, seed: 5 });
    const firsts = new Set(s.next().tokens.filter((_, i) => i % 3 === 0));
    expect([...firsts].sort()).toEqual([10, 11]);
    expect(() => new BatchSampler(small, { batch: 1, context: 5, seed: 0 })).toThrow(/context \+ 1 = 6/);
  });
});

describe('evalBatches', () => {
  it('walks consecutive windows and drops the partial last one', () => {
    const data = Uint8Array.from({ length: 23 }, (_, i) => i);
    const batches = evalBatches(data, 5, 2);
    // (23 - 1) / 5 = 4 whole windows: bytes 1..20 predicted, 21 and 22 dropped.
    expect(batches.map((b) => b.batch)).toEqual([2, 2]);
    const tokens = batches.flatMap((b) => Array.from(b.tokens));
    const labels = batches.flatMap((b) => Array.from(b.labels));
    expect(tokens).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(labels).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(evalBatches(data, 5, 3).map((b) => b.batch)).toEqual([3, 1]);
    expect(evalBatches(data, 22)).toHaveLength(1);
  });

  it('covers the held-out bytes the same way on every call', () => {
    const { heldOut } = makeCorpus(new TextEncoder().encode('abcdefghij'.repeat(100)));
    const a = evalBatches(heldOut, 8, 4);
    expect(evalBatches(heldOut, 8, 4)).toEqual(a);
    expect(a.reduce((n, b) => n + b.batch, 0)).toBe(Math.floor((heldOut.length - 1) / 8));
  });
});
