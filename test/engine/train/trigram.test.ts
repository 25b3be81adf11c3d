/**
 * Add-one byte n-gram cross entropy against numpy (test/fixtures/generate_trigram.py), to 1e-9 relative: both sum
 * the same float64 logs, in a different order at most. And the number the built-in model must beat on Moby-Dick.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { crossEntropy, fitNgram, fitTrigram, type NgramOrder } from '../../../engine/train/trigram.ts';
import { makeCorpus, mobyDick } from '../../../engine/train/corpus.ts';

interface Expected {
  text: string;
  numBytes: number;
  split: number;
  orders: Record<string, { nats: number; bitsPerByte: number; perplexity: number; count: number }>;
}

const FIXTURE: Expected = JSON.parse(readFileSync(new URL('../../fixtures/trigram/expected.json', import.meta.url), 'utf8'));

function close(got: number, want: number, rel = 1e-9) {
  expect(Math.abs(got - want)).toBeLessThanOrEqual(rel * Math.abs(want));
}

describe('add-one byte n-grams', () => {
  const corpus = makeCorpus(new TextEncoder().encode(FIXTURE.text));

  it('splits the fixture text as numpy does', () => {
    expect([corpus.bytes.length, corpus.split]).toEqual([FIXTURE.numBytes, FIXTURE.split]);
  });

  for (const order of [1, 2, 3] as NgramOrder[]) {
    it(`order ${order} matches numpy's held-out cross entropy`, () => {
      const want = FIXTURE.orders[order];
      const got = crossEntropy(fitNgram(corpus.train, order), corpus.heldOut);
      expect(got.count).toBe(want.count);
      close(got.nats, want.nats);
      close(got.bitsPerByte, want.bitsPerByte);
      close(got.perplexity, want.perplexity);
    });
  }

  it('is the formula on a string small enough to count by hand', () => {
    // train "abab": trigrams aba, bab; held-out "a" has context "ab" (the tail), seen once, followed by a once.
    const m = fitTrigram(new TextEncoder().encode('abab'));
    const r = crossEntropy(m, new TextEncoder().encode('a'));
    close(r.nats, -Math.log(2 / 257), 1e-15);
    // held-out "ax": x after "ba", a context seen once (followed by b): (0 + 1) / (1 + 256).
    const r2 = crossEntropy(m, new TextEncoder().encode('ax'));
    close(r2.nats, -(Math.log(2 / 257) + Math.log(1 / 257)) / 2, 1e-15);
    expect(r2.count).toBe(2);
  });

  it('sums to one over the next byte', () => {
    const m = fitTrigram(corpus.train);
    const ctx = (97 * 256 + 110) * 256; // "an"
    let total = 0;
    for (let c = 0; c < 256; c++) total += (m.counts[ctx + c] + 1) / (m.contextCounts[ctx / 256] + 256);
    close(total, 1, 1e-12);
  });
});

describe('the baseline on Moby-Dick', () => {
  it('has a finite held-out bits per byte between 1 and 8', () => {
    const { train, heldOut } = mobyDick();
    const tri = crossEntropy(fitTrigram(train), heldOut);
    const bi = crossEntropy(fitNgram(train, 2), heldOut);
    const uni = crossEntropy(fitNgram(train, 1), heldOut);
    console.log(
      `Moby-Dick held-out (${tri.count} bytes), add-one byte n-grams: ` +
        `trigram ${tri.bitsPerByte.toFixed(4)} bits/byte (${tri.nats.toFixed(4)} nats, perplexity ${tri.perplexity.toFixed(3)}), ` +
        `bigram ${bi.bitsPerByte.toFixed(4)}, unigram ${uni.bitsPerByte.toFixed(4)}`,
    );
    expect(Number.isFinite(tri.bitsPerByte)).toBe(true);
    expect(tri.bitsPerByte).toBeGreaterThan(1);
    expect(tri.bitsPerByte).toBeLessThan(8);
    expect(tri.count).toBe(heldOut.length);
    // More context helps on a million bytes of English.
    expect(tri.bitsPerByte).toBeLessThan(bi.bitsPerByte);
    expect(bi.bitsPerByte).toBeLessThan(uni.bitsPerByte);
  });
});
