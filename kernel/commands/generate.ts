/**
 * `servelab generate --prompt "Call me"`: continues a prompt with a checkpoint folder (the built-in model by default),
 * streaming the text as it decodes, then the prompt and new token counts, the prefill time, the decode rate and why it
 * stopped. Ctrl-C stops at the next step and keeps what was produced.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createDevice, ServelabError } from '../../engine/index.ts';
import { BUILTIN_DIR } from '../../engine/model/builtin.ts';
import { loadModel } from '../../engine/model/checkpoint.ts';
import { generate } from '../../engine/model/generate.ts';
import type { LlamaModel } from '../../engine/model/llama.ts';
import type { Device } from '../../engine/device/device.ts';
import { LINEAR_FORMATS, type LinearFormat } from '../../engine/nn/linear.ts';

/** A weight format by name; anything else is an error listing the six. */
export function parseFormat(name: string): LinearFormat {
  if (!(LINEAR_FORMATS as readonly string[]).includes(name)) throw new ServelabError(`unknown format ${JSON.stringify(name)}; the formats are: ${LINEAR_FORMATS.join(', ')}`);
  return name as LinearFormat;
}

/** An option's number, checked: `integer`, `min` (inclusive) or `above` (exclusive), and `max` as the option needs. */
export function numberOption(flag: string, text: string | undefined, check: { integer?: boolean; min?: number; above?: number; max?: number } = {}): number | undefined {
  if (text === undefined) return undefined;
  const x = Number(text);
  const { integer, min, above, max } = check;
  const ok = text.trim() !== '' && Number.isFinite(x) && (!integer || Number.isInteger(x)) && (min === undefined || x >= min) && (above === undefined || x > above) && (max === undefined || x <= max);
  if (!ok) {
    const low = min !== undefined ? `[${min}` : above !== undefined ? `(${above}` : null;
    const range = low !== null && max !== undefined ? ` in ${low}, ${max}]` : min !== undefined ? ` >= ${min}` : above !== undefined ? ` > ${above}` : '';
    throw new ServelabError(`${flag} must be ${integer ? 'an integer' : 'a number'}${range}, got ${JSON.stringify(text)}`);
  }
  return x;
}

/**
 * The checkpoint folder `dir` (default: the built-in model) on a fresh device in `format`. A missing folder says
 * how the built-in model is made; the caller disposes both.
 */
export async function openModel(dir: string | undefined, format: LinearFormat): Promise<{ dev: Device; model: LlamaModel; dir: string }> {
  const path = resolve(dir ?? BUILTIN_DIR);
  if (!existsSync(join(path, 'config.json')) || !existsSync(join(path, 'model.safetensors'))) {
    const how = dir === undefined ? 'the built-in model is made by `servelab train --preset builtin` (about half an hour on two cores)' : 'expected a checkpoint folder (config.json, model.safetensors, tokenizer.json); `servelab train --preset builtin --out DIR` makes one';
    throw new ServelabError(`no model in ${path}: ${how}`);
  }
  const dev = await createDevice();
  try {
    return { dev, model: await loadModel(path, { device: dev, format }), dir: path };
  } catch (e) {
    await dev.dispose();
    throw e;
  }
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      prompt: { type: 'string', short: 'p' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      format: { type: 'string' },
      model: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (values.prompt === undefined || values.prompt === '') throw new ServelabError('--prompt TEXT is required: the text to continue');
  const opts = {
    maxTokens: numberOption('--max-tokens', values['max-tokens'], { integer: true, min: 1 }) ?? 200,
    temperature: numberOption('--temperature', values.temperature, { min: 0 }) ?? 0,
    topK: numberOption('--top-k', values['top-k'], { integer: true, min: 0 }) ?? 0,
    topP: numberOption('--top-p', values['top-p'], { above: 0, max: 1 }) ?? 1,
    seed: numberOption('--seed', values.seed, { integer: true, min: 0 }) ?? 0,
    stop: values.stop ?? [],
  };
  const format = parseFormat(values.format ?? 'fp32');
  const json = values.json ?? false;

  const t0 = performance.now();
  const { dev, model, dir } = await openModel(values.model, format);
  const loadMs = performance.now() - t0;
  const interrupt = new AbortController();
  // The first Ctrl-C ends generation at the next step; with the handler gone, a second one ends the process as usual.
  const onSigint = () => interrupt.abort();
  process.once('SIGINT', onSigint);
  try {
    const promptTokens = model.tokenizer?.encode(values.prompt).length ?? 0;
    const ctx = model.cfg.maxPositions;
    if (promptTokens >= ctx) throw new ServelabError(`the prompt is ${promptTokens} tokens and the model's context ${ctx}, which leaves no room for a new token; shorten it to at most ${ctx - 1}`);
    if (!json) process.stdout.write(values.prompt);
    const g = await generate(model, values.prompt, { ...opts, signal: interrupt.signal, onText: json ? undefined : (piece) => process.stdout.write(piece) });
    if (json) {
      const out = { model: dir, format, prompt: values.prompt, text: g.text, promptTokens: g.promptTokens, newTokens: g.tokens.length, tokens: g.tokens, stopReason: g.stopReason, loadMs: round1(loadMs), prefillMs: round1(g.prefillMs), decodeMs: round1(g.decodeMs), tokensPerSec: round1(g.tokensPerSec), ...opts };
      console.log(JSON.stringify(out, null, 2));
    } else {
      process.stdout.write('\n');
      process.stderr.write(`${g.promptTokens} prompt tokens, ${g.tokens.length} new tokens; prefill ${g.prefillMs.toFixed(1)} ms, decode ${g.tokensPerSec.toFixed(1)} tokens/s (${format}); stopped: ${g.stopReason}\n`);
    }
    return 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
    model.dispose();
    await dev.dispose();
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
