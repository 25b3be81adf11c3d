/**
 * The float64 reference decoder against numpy's forward pass of the same checkpoints (test/fixtures/generate_llama.py):
 * llama_tiny (fp32, untied head) and llama_tiny_sharded (tied head, fp16 and bf16 shards decoded to their exact
 * values). numpy writes logits to 7 significant digits, so agreement is to 1e-5 relative (1e-9 absolute near 0).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../engine/io/safetensors.ts';
import { loadLlamaConfig } from '../../../engine/model/hf_config.ts';
import { referenceLogits } from '../../../engine/model/reference.ts';
import { widen } from '../../../engine/tensor/storage.ts';

interface Expected {
  tied: boolean;
  sequences: { text: string; ids: number[]; logits: number[][] }[];
}

for (const name of ['llama_tiny', 'llama_tiny_sharded']) {
  describe(`referenceLogits on ${name}`, () => {
    const dir = new URL(`../../fixtures/${name}/`, import.meta.url).pathname;
    const cfg = loadLlamaConfig(dir);
    const expected: Expected = JSON.parse(readFileSync(`${dir}expected.json`, 'utf8'));
    const ckpt = openCheckpoint(dir);
    const weights = new Map(ckpt.tensors.map((t) => [t.name, widen(t.dtype, ckpt.read(t.name).data)]));
    ckpt.close();

    it('reads the head the config names', () => {
      expect(cfg.tieWordEmbeddings).toBe(expected.tied);
      expect(weights.has('lm_head.weight')).toBe(!expected.tied);
    });

    for (const seq of expected.sequences) {
      it(`matches numpy's logits for "${seq.text}"`, () => {
        const got = referenceLogits(cfg, weights, seq.ids);
        const want = seq.logits.flat();
        expect(got.length).toBe(seq.ids.length * cfg.vocabSize);
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) - 1e-5 * Math.abs(want[i]));
        expect(worst).toBeLessThanOrEqual(1e-9);
      });
    }
  });
}
