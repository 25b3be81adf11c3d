/** Text <-> token ids through a Hugging Face tokenizer.json, run by @huggingface/tokenizers (pure JS). */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ServelabError } from '../errors.ts';

/** A tokenizer.json or tokenizer_config.json that cannot be used, or ids the vocabulary does not have. */
export class TokenizerError extends ServelabError {
  override name = 'TokenizerError';
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/**
 * What serving needs of a tokenizer. encode adds no special tokens: the caller decides where bosId goes (a
 * continuation of a cached prefix must not get a second BOS), and decode keeps special tokens as their text.
 */
export interface Tokenizer {
  /** One past the largest id, added tokens included. */
  vocabSize: number;
  bosId?: number;
  eosId?: number;
  encode(text: string): number[];
  decode(ids: number[]): string;
}

// Names used when tokenizer_config.json does not say which tokens begin and end a sequence.
const BOS_NAMES = ['<s>', '<|begin_of_text|>', '<|bos|>', '<bos>', '<|startoftext|>'];
const EOS_NAMES = ['</s>', '<|end_of_text|>', '<|eos|>', '<eos>', '<|endoftext|>'];

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TokenizerError(file, code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerError(file, `is not JSON: ${(e as Error).message}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** tokenizer_config.json spells a special token as a string or as an AddedToken object {content, ...}. */
function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

/**
 * Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json. Unless the config asks for it,
 * clean_up_tokenization_spaces is off: it rewrites " ." as "." on decode, so decode(encode(t)) would not give t back.
 */
export function loadTokenizer(dir: string): Tokenizer {
  const file = join(dir, 'tokenizer.json');
  const json = readJson(file);
  if (!isObject(json) || !isObject(json.model)) throw new TokenizerError(file, 'must be a JSON object with a "model" object');
  const configFile = join(dir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJson(configFile) : {};
  if (!isObject(config)) throw new TokenizerError(configFile, 'must be a JSON object');

  // The library reads these keys unconditionally; a tokenizer.json written by the Rust crate always has them.
  const full = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...json };
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(full, { clean_up_tokenization_spaces: false, ...config });
  } catch (e) {
    throw new TokenizerError(file, `refused by @huggingface/tokenizers: ${(e as Error).message}`);
  }
  let vocabSize = 0;
  for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

  const special = (key: string, names: string[]): number | undefined => {
    const named = tokenName(config[key]);
    if (named !== undefined) {
      const id = hf.token_to_id(named);
      if (id === undefined) throw new TokenizerError(configFile, `${key} ${JSON.stringify(named)} is not in the vocabulary of ${file}`);
      return id;
    }
    for (const n of names) {
      const id = hf.token_to_id(n);
      if (id !== undefined) return id;
    }
    return undefined;
  };
  const bosId = special('bos_token', BOS_NAMES);
  const eosId = special('eos_token', EOS_NAMES);

  const tok: Tokenizer = {
    vocabSize,
    encode: (text) => hf.encode(text, { add_special_tokens: false }).ids,
    decode(ids) {
      // The library throws on [] and decodes an unknown id as the string "undefined".
      if (ids.length === 0) return '';
      const bad = ids.findIndex((i) => !Number.isInteger(i) || i < 0 || i >= vocabSize || hf.id_to_token(i) === undefined);
      if (bad >= 0) throw new TokenizerError(file, `cannot decode id ${ids[bad]} at position ${bad}: not in the vocabulary (size ${vocabSize})`);
      return hf.decode(ids);
    },
  };
  if (bosId !== undefined) tok.bosId = bosId;
  if (eosId !== undefined) tok.eosId = eosId;
  return tok;
}
