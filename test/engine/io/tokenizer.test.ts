/** loadTokenizer on the byte-level tokenizer.json: encode must be the UTF-8 bytes, decode its exact inverse. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TokenizerError, loadTokenizer } from '../../../engine/io/tokenizer.ts';
import {
  BYTE_BOS_ID, BYTE_EOS_ID, BYTE_VOCAB_SIZE, byteToUnicode, byteTokenizerConfig, byteTokenizerJson,
} from '../../../engine/io/byte_tokenizer.ts';

const dir = mkdtempSync(join(tmpdir(), 'tokenizer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function folder(tokenizer: unknown, config?: unknown): string {
  const d = mkdtempSync(join(dir, 'tok-'));
  writeFileSync(join(d, 'tokenizer.json'), typeof tokenizer === 'string' ? tokenizer : JSON.stringify(tokenizer));
  if (config !== undefined) writeFileSync(join(d, 'tokenizer_config.json'), JSON.stringify(config));
  return d;
}

const TEXTS = [
  'Hello, world!',
  'a . b , c ? d',
  'café naïve Ærøskøbing',
  'emoji 🦙🚀 and 👩‍💻 (a ZWJ sequence)',
  'line one\nline two\r\n\ttabbed',
  '    four leading spaces, two  inside,   three trailing   ',
  "it's the model's (don't split) 1234567 digits",
  ' ',
  '\u0000\u007f\u00ad control bytes',
  '中文 日本語 한국어',
];

describe('byte-level tokenizer.json through @huggingface/tokenizers', () => {
  const withConfig = loadTokenizer(folder(byteTokenizerJson(), byteTokenizerConfig()));
  const bare = loadTokenizer(folder(byteTokenizerJson()));

  it('maps every byte to a distinct printable character (GPT-2 bytes_to_unicode)', () => {
    const chars = byteToUnicode();
    expect(new Set(chars).size).toBe(256);
    expect(chars[0x41]).toBe('A');
    expect(chars[0x20]).toBe('Ġ');
    expect(chars[0x0a]).toBe('Ċ');
    expect(chars[0xad]).toBe('Ń');
  });

  for (const tok of [withConfig, bare]) {
    it(`encode is the UTF-8 bytes and decode inverts it (${tok === bare ? 'no ' : ''}tokenizer_config.json)`, () => {
      expect(tok.vocabSize).toBe(BYTE_VOCAB_SIZE);
      expect(tok.bosId).toBe(BYTE_BOS_ID);
      expect(tok.eosId).toBe(BYTE_EOS_ID);
      for (const t of TEXTS) {
        const ids = tok.encode(t);
        expect(ids, JSON.stringify(t)).toEqual([...Buffer.from(t, 'utf8')]);
        expect(tok.decode(ids)).toBe(t);
      }
    });
  }

  it('decodes every single byte and the special tokens', () => {
    const all = Array.from({ length: 256 }, (_, b) => b);
    expect([...Buffer.from(withConfig.decode(all.slice(0, 128)), 'utf8')]).toEqual(all.slice(0, 128));
    expect(withConfig.decode([BYTE_BOS_ID, 104, 105, BYTE_EOS_ID])).toBe('<|bos|>hi<|eos|>');
    expect(withConfig.encode('<|bos|>hi')).toEqual([BYTE_BOS_ID, 104, 105]);
    expect(withConfig.decode([])).toBe('');
    expect(withConfig.encode('')).toEqual([]);
  });

  it('refuses ids outside the vocabulary, naming the file', () => {
    expect(() => withConfig.decode([104, 258])).toThrow(/tokenizer\.json: cannot decode id 258 at position 1/);
    expect(() => withConfig.decode([-1])).toThrow(TokenizerError);
  });
});

describe('loadTokenizer refuses', () => {
  it('a missing or non-JSON tokenizer.json, naming it', () => {
    expect(() => loadTokenizer(mkdtempSync(join(dir, 'none-')))).toThrow(/tokenizer\.json: no such file/);
    expect(() => loadTokenizer(folder('{"model": '))).toThrow(/tokenizer\.json: is not JSON/);
    expect(() => loadTokenizer(folder('[]'))).toThrow(/tokenizer\.json: must be a JSON object with a "model" object/);
  });

  it('a tokenizer.json the library refuses, naming it', () => {
    const bad = { ...byteTokenizerJson(), pre_tokenizer: { type: 'NoSuchPreTokenizer' } };
    expect(() => loadTokenizer(folder(bad))).toThrow(/tokenizer\.json: refused by @huggingface\/tokenizers: .*NoSuchPreTokenizer/);
    const noVocab = { model: { type: 'Mystery' } };
    expect(() => loadTokenizer(folder(noVocab))).toThrow(TokenizerError);
  });

  it('a tokenizer_config.json naming a bos token the vocabulary lacks', () => {
    expect(() => loadTokenizer(folder(byteTokenizerJson(), { bos_token: '<s>' }))).toThrow(/tokenizer_config\.json: bos_token "<s>" is not in the vocabulary/);
  });
});
