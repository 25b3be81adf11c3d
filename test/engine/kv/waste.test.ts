/**
 * The vLLM paper's waste accounting against hand-computed traces, and a ShareGPT-like batch (mean input 161, output
 * 338 tokens, log-normal) under each layout: the paper reports 20.4-38.2% of reserved KV memory holding tokens in
 * pre-allocating systems, and vLLM's waste bounded by one partial block per sequence.
 */
import { describe, expect, it } from 'vitest';
import { kvWaste, kvWasteForModel, type SeqLength } from '../../../engine/kv/waste.ts';
import { shareGptLikeBatch, shareGptLikeLengths } from '../../../engine/kv/sharegpt.ts';
import { OPT_13B } from '../../../engine/model/presets.ts';
import { throwsKv } from './helpers.ts';

const seqs = (lengths: number[], finals?: number[]): SeqLength[] => lengths.map((length, i) => ({ length, finalLength: finals?.[i] }));
const sum = (w: ReturnType<typeof kvWaste>) => w.usedBytes + w.reservation + w.internalFragmentation + w.externalFragmentation;

describe('kvWaste on lengths [5, 17, 33]', () => {
  it('paged, block 16: 1 + 2 + 3 blocks, the last ones 11, 15 and 15 slots short', () => {
    const w = kvWaste({ kind: 'paged', blockSize: 16 }, seqs([5, 17, 33]));
    expect(w).toEqual({
      layout: 'paged', bytesPerToken: 1, reservedBytes: 96, usedBytes: 55, reservation: 0,
      internalFragmentation: 11 + 15 + 15, externalFragmentation: 0, usedShare: 55 / 96,
    });
  });

  it('token-level: every reserved slot holds a token', () => {
    expect(kvWaste({ kind: 'token' }, seqs([5, 17, 33]))).toMatchObject({ reservedBytes: 55, usedBytes: 55, internalFragmentation: 0, usedShare: 1 });
  });

  it('contiguous, 64 per sequence: slack is reservation until the final length is known, past it internal fragmentation', () => {
    const open = kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, seqs([5, 17, 33]));
    expect(open).toMatchObject({ reservedBytes: 192, usedBytes: 55, reservation: 59 + 47 + 31, internalFragmentation: 0, externalFragmentation: 0 });
    const known = kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, seqs([5, 17, 33], [10, 20, 40]));
    expect(known).toMatchObject({ reservedBytes: 192, reservation: 5 + 3 + 7, internalFragmentation: 54 + 44 + 24 });
    const own = kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, [5, 17, 33].map((length, i) => ({ length, reserved: [8, 32, 48][i] })));
    expect(own).toMatchObject({ reservedBytes: 88, reservation: 3 + 15 + 15 });
  });

  it('contiguous in a pool: gaps no region of maxSeqLen fits in are external fragmentation', () => {
    const placed = [0, 70, 134].map((offset, i) => ({ length: [5, 17, 33][i], offset }));
    const w = kvWaste({ kind: 'contiguous', maxSeqLen: 64, poolTokens: 200 }, placed);
    expect(w).toMatchObject({ externalFragmentation: 6 + 2, reservedBytes: 200, usedShare: 55 / 200 });
    expect(kvWaste({ kind: 'contiguous', maxSeqLen: 64, poolTokens: 300 }, seqs([5, 17, 33])).externalFragmentation).toBe(108 % 64);
  });

  it('in bytes with a model: OPT-13B in fp16 holds 800 KiB per token', () => {
    const w = kvWasteForModel(OPT_13B, 2, { kind: 'paged', blockSize: 16 }, seqs([5, 17, 33]));
    expect(w.bytesPerToken).toBe(819200);
    expect(w).toMatchObject({ reservedBytes: 96 * 819200, usedBytes: 55 * 819200, internalFragmentation: 41 * 819200, usedShare: 55 / 96 });
    expect(sum(w)).toBe(w.reservedBytes);
  });

  it('refuses bad input', () => {
    throwsKv(() => kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, seqs([65])), 'too-long');
    throwsKv(() => kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, seqs([5], [70])), 'too-long');
    throwsKv(() => kvWaste({ kind: 'paged', blockSize: 16 }, seqs([5], [4])), 'invalid-argument');
    throwsKv(() => kvWaste({ kind: 'paged', blockSize: 0 }, seqs([5])), 'invalid-size');
    throwsKv(() => kvWaste({ kind: 'token' }, seqs([-1])), 'invalid-size');
    throwsKv(() => kvWaste({ kind: 'token' }, seqs([1]), 0), 'invalid-size');
    throwsKv(() => kvWaste({ kind: 'contiguous', maxSeqLen: 64 }, [{ length: 1, offset: 0 }]), 'invalid-argument');
    const pool = { kind: 'contiguous', maxSeqLen: 64, poolTokens: 200 } as const;
    throwsKv(() => kvWaste(pool, [{ length: 1, offset: 0 }, { length: 1, offset: 32 }]), 'invalid-argument'); // overlap
    throwsKv(() => kvWaste(pool, [{ length: 1, offset: 0 }, { length: 1 }]), 'invalid-argument');
    throwsKv(() => kvWaste(pool, [{ length: 1, offset: 150 }]), 'invalid-argument'); // leaves the pool
  });
});

describe('kvWaste on a ShareGPT-like batch', () => {
  it('contiguous (2048) well under half used, paged (block 16) above 0.96, token-level exactly 1', () => {
    const reqs = shareGptLikeLengths(1000, 0);
    const batch = shareGptLikeBatch(1000, 0);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const meanIn = mean(reqs.map((r) => r.input));
    const meanOut = mean(reqs.map((r) => r.output));
    expect(Math.abs(meanIn / 161 - 1)).toBeLessThan(0.15);
    expect(Math.abs(meanOut / 338 - 1)).toBeLessThan(0.15);
    expect(batch.every((s, i) => s.finalLength === reqs[i].input + reqs[i].output && s.length >= reqs[i].input)).toBe(true);

    const contiguous = kvWaste({ kind: 'contiguous', maxSeqLen: 2048 }, batch);
    const paged = kvWaste({ kind: 'paged', blockSize: 16 }, batch);
    const token = kvWaste({ kind: 'token' }, batch);
    console.log(
      `ShareGPT-like, 1000 requests (seed 0): mean input ${meanIn.toFixed(1)}, output ${meanOut.toFixed(1)}, cached now ${mean(batch.map((s) => s.length)).toFixed(1)} tokens; ` +
        `usedShare contiguous(2048) ${contiguous.usedShare.toFixed(4)}, paged(16) ${paged.usedShare.toFixed(4)}, token ${token.usedShare.toFixed(4)}`,
    );
    expect(contiguous.usedShare).toBeLessThan(0.5);
    expect(paged.usedShare).toBeGreaterThan(0.96);
    expect(token.usedShare).toBe(1);
    for (const w of [contiguous, paged, token]) expect(sum(w)).toBe(w.reservedBytes);
    expect(paged.internalFragmentation).toBeLessThanOrEqual(15 * batch.length);
    expect(shareGptLikeBatch(1000, 0)).toEqual(batch); // seeded: the same batch every run
  });
});

describe('a running ShareGPT-like batch', () => {
  it('finds each request in proportion to its output length, so it holds longer requests than the stream', () => {
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const stream = shareGptLikeLengths(20_000, 3);
    const running = shareGptLikeBatch(20_000, 3, { sample: 'running' });
    // Length-biased sampling: a final length's mean becomes E[output x final] / E[output] over the stream.
    const outputs = stream.map((r) => r.output);
    const finals = running.map((s) => s.finalLength!);
    const expected = mean(stream.map((r) => r.output * (r.input + r.output))) / mean(outputs);
    expect(Math.abs(mean(finals) / expected - 1)).toBeLessThan(0.05);
    expect(mean(finals)).toBeGreaterThan(1.5 * mean(stream.map((r) => r.input + r.output)));
    // Every member is caught mid-decode, and the batch is seeded.
    expect(running.every((s) => s.length <= s.finalLength! && s.length >= 1)).toBe(true);
    expect(shareGptLikeBatch(20_000, 3, { sample: 'running' })).toEqual(running);
    // The time average the vLLM paper reports for regions of the whole context (Orca (Max)): 20.4%.
    const contiguous = kvWaste({ kind: 'contiguous', maxSeqLen: 2048 }, shareGptLikeBatch(1000, 0, { sample: 'running' }));
    expect(contiguous.usedShare).toBeGreaterThan(0.2);
    expect(contiguous.usedShare).toBeLessThan(0.3);
  });

  it('a context with no room for output after the prompts is a clear error, not an endless draw', () => {
    expect(() => shareGptLikeBatch(3, 0, { maxSeqLen: 4, meanInput: 1000, sample: 'running' })).toThrow(/no request of the stream has output tokens.*\(invalid-argument\)/);
  });
});
