/**
 * forwardFlops and decodeFlops against counts worked by hand for the tiny Llama (hidden 32, 2 layers, 4 query heads
 * of 8 sharing 2 KV heads, MLP 64, vocab 64), and the projections of real presets against their parameter counts
 * (presets.ts counts them independently): exact integers, no tolerance.
 *
 * By hand, one tiny layer's linears hold q 32x32 + k 32x16 + v 32x16 + o 32x32 + gate, up, down 3 x 32x64 = 9216
 * weights, so a token's projections cost 2 x 2 layers x 9216 = 36864 FLOPs; one attended position costs
 * 2 (q.k and p.v) x 2 FLOPs x 2 layers x 4 heads x 8 dims = 256; the head 2 x 32 x 64 = 4096 per row.
 */
import { describe, expect, it } from 'vitest';
import { TINY_LLAMA } from './tiny_config.ts';
import { decodeFlops, forwardFlops } from '../../../engine/model/flops.ts';
import { LLAMA_2_7B, LLAMA_3_8B, TINYLLAMA_1_1B, parameterCount } from '../../../engine/model/presets.ts';
import { ServelabError } from '../../../engine/errors.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';

const PER_TOKEN = 36864;
const PER_POSITION = 256;
const HEAD_ROW = 4096;

describe('forwardFlops', () => {
  it('a 3-token prefill: 3 tokens of projections, 1 + 2 + 3 attended positions, one head row', () => {
    expect(forwardFlops(TINY_LLAMA, { newTokens: 3 })).toEqual({
      projections: 3 * PER_TOKEN, attention: 6 * PER_POSITION, head: HEAD_ROW, total: 110592 + 1536 + 4096,
    });
    expect(forwardFlops(TINY_LLAMA, { newTokens: 3 }).total).toBe(116224);
  });

  it('a decode step after 5 cached tokens: one token of projections attending to 6 positions', () => {
    expect(forwardFlops(TINY_LLAMA, { newTokens: 1, pastTokens: 5 })).toEqual({ projections: 36864, attention: 1536, head: 4096, total: 42496 });
  });

  it("a chunk of 2 after 4 cached: attends to 5 then 6 positions; logits 'all' puts both rows through the head", () => {
    const f = forwardFlops(TINY_LLAMA, { newTokens: 2, pastTokens: 4, logits: 'all' });
    expect(f).toEqual({ projections: 2 * PER_TOKEN, attention: 11 * PER_POSITION, head: 2 * HEAD_ROW, total: 73728 + 2816 + 8192 });
  });

  it('projections per token are 2 x the weights of the decoder layers (parameterCount less embedding, head and norms)', () => {
    for (const cfg of [LLAMA_2_7B, LLAMA_3_8B, TINYLLAMA_1_1B, TINY_LLAMA] as LlamaConfig[]) {
      const H = cfg.hiddenSize;
      const heads = (cfg.tieWordEmbeddings ? 1 : 2) * cfg.vocabSize * H;
      const norms = (2 * cfg.numLayers + 1) * H;
      expect(forwardFlops(cfg, { newTokens: 1 }).projections).toBe(2 * (parameterCount(cfg) - heads - norms));
    }
  });

  it('Llama-2-7B: about 2 x 6.5e9 FLOPs a token; attention over 4096 positions adds 2 x 2 x 32 x 4096 x 4096', () => {
    const f = forwardFlops(LLAMA_2_7B, { newTokens: 1, pastTokens: 4095 });
    expect(f.projections).toBe(2 * 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008));
    expect(f.attention).toBe(2 * 2 * 32 * 4096 * 4096);
    expect(f.head).toBe(2 * 4096 * 32000);
  });

  it('rejects counts that are not integers in range', () => {
    for (const shape of [{ newTokens: 0 }, { newTokens: 1.5 }, { newTokens: 1, pastTokens: -1 }, { newTokens: NaN }]) {
      expect(() => forwardFlops(TINY_LLAMA, shape)).toThrow(ServelabError);
    }
    expect(() => forwardFlops(TINY_LLAMA, { newTokens: 0 })).toThrow('forwardFlops: newTokens must be an integer >= 1, got 0');
    expect(() => forwardFlops(TINY_LLAMA, { newTokens: 1, logits: 'first' as 'last' })).toThrow(/logits must be 'last' or 'all'/);
  });
});

describe('decodeFlops', () => {
  it('with a cache: the 3-token prompt once, then one token against 3, 4, 5 cached', () => {
    const d = decodeFlops(TINY_LLAMA, { promptTokens: 3, steps: 4, cache: true });
    expect(d.steps.map((s) => [s.step, s.newTokens, s.pastTokens, s.seqLen, s.total])).toEqual([
      [0, 3, 0, 3, 116224],
      [1, 1, 3, 4, PER_TOKEN + 4 * PER_POSITION + HEAD_ROW],
      [2, 1, 4, 5, PER_TOKEN + 5 * PER_POSITION + HEAD_ROW],
      [3, 1, 5, 6, PER_TOKEN + 6 * PER_POSITION + HEAD_ROW],
    ]);
    expect(d.total).toBe(116224 + 41984 + 42240 + 42496);
  });

  it('without one: the whole sequence of 3, 4, 5, 6 tokens every step', () => {
    const d = decodeFlops(TINY_LLAMA, { promptTokens: 3, steps: 4, cache: false });
    expect(d.steps.map((s) => [s.newTokens, s.pastTokens, s.seqLen, s.total])).toEqual([
      [3, 0, 3, 116224],
      [4, 0, 4, 4 * PER_TOKEN + 10 * PER_POSITION + HEAD_ROW],
      [5, 0, 5, 5 * PER_TOKEN + 15 * PER_POSITION + HEAD_ROW],
      [6, 0, 6, 6 * PER_TOKEN + 21 * PER_POSITION + HEAD_ROW],
    ]);
    expect(d.total).toBe(116224 + 154112 + 192256 + 230656);
  });

  it('recompute grows quadratically (constant second difference, from attention), the cached step linearly', () => {
    const steps = (cache: boolean) => decodeFlops(TINY_LLAMA, { promptTokens: 8, steps: 40, cache }).steps.slice(1).map((s) => s.total);
    const second = (v: number[]) => v.slice(2).map((x, i) => x - 2 * v[i + 1] + v[i]);
    const first = (v: number[]) => v.slice(1).map((x, i) => x - v[i]);
    expect(new Set(second(steps(false)))).toEqual(new Set([PER_POSITION]));
    // Step i runs 8 + i tokens: one token and 9 + i attended positions more than the step before.
    expect(first(steps(false))).toEqual(Array.from({ length: 38 }, (_, i) => PER_TOKEN + (10 + i) * PER_POSITION));
    expect(new Set(first(steps(true)))).toEqual(new Set([PER_POSITION]));
    // Step 0 is the same prefill either way.
    expect(decodeFlops(TINY_LLAMA, { promptTokens: 8, steps: 1, cache: true })).toEqual(decodeFlops(TINY_LLAMA, { promptTokens: 8, steps: 1, cache: false }));
  });

  it('rejects a prompt or a step count below 1 and a cache flag that is not a boolean', () => {
    expect(() => decodeFlops(TINY_LLAMA, { promptTokens: 0, steps: 1, cache: true })).toThrow('decodeFlops: promptTokens must be an integer >= 1, got 0');
    expect(() => decodeFlops(TINY_LLAMA, { promptTokens: 1, steps: 0, cache: true })).toThrow('decodeFlops: steps must be an integer >= 1, got 0');
    expect(() => decodeFlops(TINY_LLAMA, { promptTokens: 1, steps: 1 } as never)).toThrow(/cache must be true or false/);
  });
});
