/** A byte-level vocabulary as a Hugging Face tokenizer.json: token b is byte b (GPT-2's byte-to-unicode alphabet, no merges). */

export const BYTE_BOS_ID = 256;
export const BYTE_EOS_ID = 257;
export const BYTE_VOCAB_SIZE = 258;

/**
 * GPT-2's bytes_to_unicode (Radford et al. 2019, encoder.py): printable bytes stand for themselves, the other 68
 * (controls, space, 0x7f-0xa0, 0xad) are moved to U+0100.. so every byte is a visible character a vocabulary can key on.
 */
export function byteToUnicode(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(printable(b) ? b : next++);
  return out;
}

const special = (id: number, content: string) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});

/**
 * tokenizer.json for ids 0..255 = bytes and <|bos|>, <|eos|> = 256, 257. BPE with an empty merge list never joins
 * two bytes, and the ByteLevel pre-tokenizer without its GPT-2 regex (use_regex false) hands the whole text to the
 * model in one piece, so encode(text) is exactly text's UTF-8 bytes.
 */
export function byteTokenizerJson(): Record<string, unknown> {
  const chars = byteToUnicode();
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(BYTE_BOS_ID, '<|bos|>'), special(BYTE_EOS_ID, '<|eos|>')],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(chars.map((c, b) => [c, b])),
      merges: [],
    },
  };
}

/** The tokenizer_config.json that goes beside it: which tokens begin and end a sequence, and no decode clean-up. */
export function byteTokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<|bos|>',
    eos_token: '<|eos|>',
    clean_up_tokenization_spaces: false,
    add_bos_token: false,
    add_eos_token: false,
  };
}
