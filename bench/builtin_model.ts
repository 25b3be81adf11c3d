/**
 * The built-in model for the benchmarks: the committed checkpoint (models/builtin), or, where none is committed, a
 * model of its shape with seeded random weights, so that timing and memory sections still run.
 */
import { existsSync } from 'node:fs';
import type { Device } from '../engine/index.ts';
import { BUILTIN_CONFIG, BUILTIN_DIR } from '../engine/model/builtin.ts';
import { loadModel } from '../engine/model/checkpoint.ts';
import { hfShapes } from '../engine/model/config.ts';
import { LlamaModel } from '../engine/model/llama.ts';
import { rng, uniform } from './random.ts';

export async function openModel(dev: Device): Promise<{ model: LlamaModel; committed: boolean }> {
  if (existsSync(`${BUILTIN_DIR}/model.safetensors`)) return { model: await loadModel(BUILTIN_DIR, { device: dev }), committed: true };
  const r = rng(7);
  const shapes = hfShapes(BUILTIN_CONFIG);
  const model = await LlamaModel.fromWeights(dev, BUILTIN_CONFIG, (name) => Float32Array.from(uniform(r, shapes.get(name)!.reduce((a, b) => a * b, 1), -0.05, 0.05)));
  return { model, committed: false };
}
