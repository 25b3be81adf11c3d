/** The numpy-written tiny Llama checkpoints (test/fixtures/generate_llama.py) read by the safetensors, config and tokenizer readers. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../engine/io/safetensors.ts';
import { loadTokenizer } from '../../../engine/io/tokenizer.ts';
import { loadLlamaConfig } from '../../../engine/model/hf_config.ts';
import { HF_NAMES, hfShapes } from '../../../engine/model/config.ts';
import { widen } from '../../../engine/tensor/storage.ts';

const FIXTURES = resolve(import.meta.dirname, '../../fixtures');

interface Expected {
  seed: number;
  tied: boolean;
  tensor_sums: Record<string, number>;
  sequences: { text: string; ids: number[]; logits: number[][] }[];
}

const load = (name: string) => {
  const dir = join(FIXTURES, name);
  return { dir, expected: JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected };
};

const sum = (a: Float32Array) => a.reduce((s, v) => s + v, 0);

describe.each([
  ['llama_tiny', false, () => 'fp32'],
  ['llama_tiny_sharded', true, (n: string) => (n === HF_NAMES.embedding || n.startsWith('model.layers.0.') ? 'fp16' : 'bf16')],
])('%s', (folder, tied, dtypeOf) => {
  const { dir, expected } = load(folder);

  it('config.json parses to the generator\'s shape', () => {
    const cfg = loadLlamaConfig(dir);
    expect(cfg).toEqual({
      vocabSize: 64, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, intermediateSize: 64,
      rmsNormEps: 1e-5, ropeTheta: 10000, maxPositions: 64, tieWordEmbeddings: tied, bosTokenId: 1, eosTokenId: 2,
    });
    expect(expected.tied).toBe(tied);
  });

  it('holds exactly the tensors hfShapes(cfg) names, with those shapes and dtypes', () => {
    const cfg = loadLlamaConfig(dir);
    const ckpt = openCheckpoint(dir);
    try {
      const want = hfShapes(cfg);
      expect(ckpt.tensors.map((t) => t.name)).toEqual([...want.keys()].sort());
      for (const t of ckpt.tensors) {
        expect(t.shape, t.name).toEqual(want.get(t.name));
        expect(t.dtype, t.name).toBe(dtypeOf(t.name));
      }
      expect(ckpt.has(HF_NAMES.lmHead)).toBe(!tied);
      const itemsize = tied ? 2 : 4;
      const numel = [...want.values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
      expect(ckpt.totalBytes).toBe(numel * itemsize);
    } finally {
      ckpt.close();
    }
  });

  it('decodes every tensor to the values numpy stored (float64 sums)', () => {
    const ckpt = openCheckpoint(dir);
    try {
      expect(Object.keys(expected.tensor_sums).sort()).toEqual(ckpt.tensors.map((t) => t.name));
      for (const t of ckpt.tensors) {
        const got = sum(widen(t.dtype, ckpt.read(t.name).data));
        // The values are decoded exactly; only the order of the float64 additions differs from numpy's pairwise sum.
        expect(got, t.name).toBeCloseTo(expected.tensor_sums[t.name], 6);
      }
    } finally {
      ckpt.close();
    }
  });

  it('tokenizes the expected texts to the expected ids and back', () => {
    const tok = loadTokenizer(dir);
    expect(tok.vocabSize).toBe(64);
    expect(tok.bosId).toBe(1);
    expect(tok.eosId).toBe(2);
    for (const s of expected.sequences) {
      expect(tok.encode(s.text), s.text).toEqual(s.ids);
      expect(tok.decode(s.ids)).toBe(s.text);
      expect(s.logits.length).toBe(s.ids.length);
      expect(s.logits.every((row) => row.length === 64 && row.every(Number.isFinite))).toBe(true);
    }
  });
});

describe('the fixture tokenizer beyond its twelve words', () => {
  const tok = loadTokenizer(join(FIXTURES, 'llama_tiny'));
  const id = (piece: string) => {
    const ids = tok.encode(piece);
    expect(ids).toHaveLength(1);
    return ids[0];
  };

  it('falls back to letters for an unknown word and to <unk> outside its alphabet', () => {
    const ids = tok.encode('the zebra');
    expect(ids[0]).toBe(id('the'));
    expect(tok.decode(ids)).toBe('the zebra');
    expect(ids).toHaveLength(1 + 1 + 5);
    expect(tok.encode('the Cat')).toContain(0);
  });

  it('adds no <s> on encode, and keeps special tokens as text on decode', () => {
    expect(tok.encode('a cat')[0]).not.toBe(1);
    expect(tok.decode([1, ...tok.encode('a cat'), 2])).toBe('<s> a cat</s>');
  });
});
