/** Size formulas against published figures: parameter counts of the model cards, the vLLM paper's KV bytes per token. */
import { describe, expect, it } from 'vitest';
import {
  LLAMA_2_13B, LLAMA_2_7B, LLAMA_3_8B, OPT_13B, PRESETS, TINYLLAMA_1_1B, kvBytesPerToken, parameterCount, weightBytes,
  type WeightFormat,
} from '../../../engine/model/presets.ts';
import { hfShapes, type LlamaConfig } from '../../../engine/model/config.ts';

const LLAMAS: [string, LlamaConfig][] = [
  ['Llama-2-7B', LLAMA_2_7B], ['Llama-2-13B', LLAMA_2_13B], ['Llama-3-8B', LLAMA_3_8B], ['TinyLlama-1.1B', TINYLLAMA_1_1B],
];

const sumOfShapes = (c: LlamaConfig) => [...hfShapes(c).values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);

describe('parameterCount', () => {
  it('matches the published counts exactly', () => {
    // safetensors headers of the Hub checkpoints; Llama-2-7B's is the 6,738,415,616 of its model card.
    expect(parameterCount(LLAMA_2_7B)).toBe(6_738_415_616);
    expect(parameterCount(LLAMA_2_13B)).toBe(13_015_864_320);
    expect(parameterCount(LLAMA_3_8B)).toBe(8_030_261_248);
    expect(parameterCount(TINYLLAMA_1_1B)).toBe(1_100_048_384);
  });

  for (const [name, c] of LLAMAS) {
    it(`${name}: equals the sum of the checkpoint's tensor shapes`, () => {
      expect(parameterCount(c)).toBe(sumOfShapes(c));
      expect(parameterCount({ ...c, tieWordEmbeddings: true })).toBe(sumOfShapes({ ...c, tieWordEmbeddings: true }));
      expect(parameterCount(c) - parameterCount({ ...c, tieWordEmbeddings: true })).toBe(c.vocabSize * c.hiddenSize);
    });
  }

  it('counts OPT-13B with biases, LayerNorms, learned positions and a tied head', () => {
    // facebook/opt-13b: 12,853,473,280 parameters in its checkpoint (positions table 2050 x 5120).
    expect(parameterCount(OPT_13B)).toBe(12_853_473_280);
  });

  it('lists every preset by name', () => {
    expect(Object.keys(PRESETS)).toEqual(['Llama-2-7B', 'Llama-2-13B', 'Llama-3-8B', 'TinyLlama-1.1B', 'OPT-13B']);
  });
});

describe('kvBytesPerToken', () => {
  it('is 800 KiB a token in fp16 for OPT-13B, as in the vLLM paper (section 3), and for LLaMA-13B', () => {
    // Kwon et al. 2023: 2 (key and value) x 5120 (hidden) x 40 (layers) x 2 (bytes) = 800 KB.
    expect(kvBytesPerToken(OPT_13B, 2)).toBe(819_200);
    expect(kvBytesPerToken(LLAMA_2_13B, 2)).toBe(819_200);
  });

  it('shrinks with grouped-query attention', () => {
    expect(kvBytesPerToken(LLAMA_2_7B, 2)).toBe(524_288);
    expect(kvBytesPerToken(LLAMA_3_8B, 2)).toBe(131_072);
    expect(kvBytesPerToken(TINYLLAMA_1_1B, 2)).toBe(2 * 22 * 4 * 64 * 2);
    expect(kvBytesPerToken(LLAMA_3_8B, 1)).toBe(65_536);
  });
});

describe('weightBytes', () => {
  const P = parameterCount(LLAMA_2_7B);
  // Hand count for Llama-2-7B: 32 layers of 4 attention [4096, 4096] and 3 MLP [11008, 4096]-sized linears.
  const linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008);
  const rows = 32 * (4 * 4096 + 2 * 11008 + 4096);
  const rest = P - linear;

  it('stores every parameter at 4 or 2 bytes in float formats', () => {
    expect(weightBytes(LLAMA_2_7B, 'fp32')).toBe(4 * P);
    expect(weightBytes(LLAMA_2_7B, 'fp16')).toBe(2 * P);
    expect(weightBytes(LLAMA_2_7B, 'bf16')).toBe(2 * P);
  });

  it('int8: a byte a linear weight, an fp32 scale per output row, the rest fp16', () => {
    expect(weightBytes(LLAMA_2_7B, 'int8')).toBe(linear + 4 * rows + 2 * rest);
  });

  it('int4: half a byte a linear weight, an fp32 scale per 32 inputs (5 bits a weight), the rest fp16', () => {
    const blocks = 32 * (4 * 4096 * 128 + 2 * 11008 * 128 + 4096 * (11008 / 32));
    expect(blocks).toBe(linear / 32);
    expect(weightBytes(LLAMA_2_7B, 'int4')).toBe(linear / 2 + 4 * blocks + 2 * rest);
    expect(weightBytes(LLAMA_2_7B, 'int4', 128)).toBe(linear / 2 + linear / 32 + 2 * rest);
  });

  it('orders the formats by size for every preset', () => {
    const order: WeightFormat[] = ['fp32', 'fp16', 'int8', 'int4'];
    for (const c of Object.values(PRESETS)) {
      const b = order.map((f) => weightBytes(c, f));
      for (let i = 1; i < b.length; i++) expect(b[i]).toBeLessThan(b[i - 1]);
    }
  });

  it('refuses an unknown format', () => {
    expect(() => weightBytes(LLAMA_2_7B, 'fp8' as WeightFormat)).toThrow(/unknown format "fp8"/);
  });
});
