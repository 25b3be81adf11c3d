/**
 * loadModel and LlamaModel.fromWeights on bad input: each case asserts the error's type, that its message names the
 * file and the field or tensor at fault, and that the device holds exactly the bytes it held before (nothing half
 * loaded). The broken checkpoints are tmp copies of test/fixtures/llama_tiny, cut or with a rewritten header.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDevice, OutOfMemoryError, ServelabError, type Device } from '../../../engine/index.ts';
import { CheckpointError, loadModel, modelBytes, saveModel } from '../../../engine/model/checkpoint.ts';
import { ConfigError, loadLlamaConfig } from '../../../engine/model/hf_config.ts';
import { SafetensorsError } from '../../../engine/io/safetensors.ts';
import { TokenizerError } from '../../../engine/io/tokenizer.ts';
import { hfShapes } from '../../../engine/model/config.ts';
import { LlamaModel } from '../../../engine/model/llama.ts';
import { Rng } from '../../../engine/train/rng.ts';

const FIXTURE = new URL('../../fixtures/llama_tiny/', import.meta.url).pathname;
const SHARDED = new URL('../../fixtures/llama_tiny_sharded/', import.meta.url).pathname;
const Q0 = 'model.layers.0.self_attn.q_proj.weight';

let root: string;
let n = 0;
let dev: Device;
beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'servelab-load-errors-'));
  dev = await createDevice('cpu');
});
afterAll(async () => {
  rmSync(root, { recursive: true, force: true });
  await dev.dispose();
});

/** A fresh copy of a fixture folder. */
function copy(src = FIXTURE): string {
  const dir = join(root, `ckpt${n++}`);
  cpSync(src, dir, { recursive: true });
  return dir;
}

interface Header {
  [name: string]: { dtype: string; shape: number[]; data_offsets: [number, number] };
}

/** Splits a safetensors file into its header (parsed) and data bytes. */
function readSafetensors(file: string): { header: Header; data: Buffer } {
  const b = readFileSync(file);
  const len = Number(b.readBigUInt64LE(0));
  return { header: JSON.parse(b.subarray(8, 8 + len).toString('utf8')), data: b.subarray(8 + len) };
}

/** Writes a header (as given, no checks) and data back as a safetensors file. */
function writeSafetensors(file: string, header: object, data: Buffer, headerLength?: number): void {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLength ?? json.length));
  writeFileSync(file, Buffer.concat([len, json, data]));
}

/** Expects loadModel(dir) to reject with `type`, a message matching every pattern, and no bytes left on the device. */
async function expectRefused(dir: string, type: new (...args: never[]) => Error, patterns: (string | RegExp)[], opts: { device?: Device } = {}): Promise<Error> {
  const d = opts.device ?? dev;
  const live = d.memory.live;
  const count = d.memory.count;
  const err = await loadModel(dir, { device: d }).then(
    () => null,
    (e: Error) => e,
  );
  expect(err, 'loadModel resolved').toBeInstanceOf(type);
  for (const p of patterns) expect(err!.message).toMatch(typeof p === 'string' ? new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : p);
  expect(d.memory.live).toBe(live);
  expect(d.memory.count).toBe(count);
  return err!;
}

describe('loadModel refuses a folder that is not a checkpoint', () => {
  it('a missing folder: ConfigError naming its config.json', async () => {
    const dir = join(root, 'no-such-folder');
    await expectRefused(dir, ConfigError, [join(dir, 'config.json'), 'no such file']);
  });

  it('a folder without config.json: ConfigError naming the file', async () => {
    const dir = copy();
    unlinkSync(join(dir, 'config.json'));
    await expectRefused(dir, ConfigError, [join(dir, 'config.json'), 'no such file']);
  });

  it('config.json that is not JSON: ConfigError naming the file', async () => {
    const dir = copy();
    writeFileSync(join(dir, 'config.json'), '{"hidden_size": 32,');
    await expectRefused(dir, ConfigError, [join(dir, 'config.json'), 'is not JSON']);
  });

  it('config.json without hidden_size: ConfigError naming the file and the field', async () => {
    const dir = copy();
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    delete cfg.hidden_size;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const e = (await expectRefused(dir, ConfigError, [join(dir, 'config.json'), 'hidden_size', 'got nothing'])) as ConfigError;
    expect(e.field).toBe('hidden_size');
  });

  it('num_hidden_layers as a string: ConfigError naming the field and the value', async () => {
    const dir = copy();
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.num_hidden_layers = '2';
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const e = (await expectRefused(dir, ConfigError, [join(dir, 'config.json'), 'num_hidden_layers must be a positive integer, got "2"'])) as ConfigError;
    expect(e.field).toBe('num_hidden_layers');
  });

  it('no model.safetensors: SafetensorsError naming the folder and both file names', async () => {
    const dir = copy();
    unlinkSync(join(dir, 'model.safetensors'));
    await expectRefused(dir, SafetensorsError, [dir, 'model.safetensors', 'model.safetensors.index.json']);
  });

  it('an index naming a shard that is not there: SafetensorsError naming the index, the shard and a tensor', async () => {
    const dir = copy(SHARDED);
    unlinkSync(join(dir, 'model-00002-of-00002.safetensors'));
    await expectRefused(dir, SafetensorsError, [join(dir, 'model.safetensors.index.json'), 'model-00002-of-00002.safetensors', /tensor "model\.[a-z0-9_.]+"/]);
  });
});

describe('loadModel refuses a broken model.safetensors before reading any weight', () => {
  it('the file cut in half: SafetensorsError naming the file and a tensor past the end', async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    const b = readFileSync(file);
    writeFileSync(file, b.subarray(0, b.length >> 1));
    await expectRefused(dir, SafetensorsError, [file, /tensor "model\.[a-z0-9_.]+": data_offsets end \d+ is past the end of the data/]);
  });

  it('cut inside its 8-byte length: SafetensorsError naming the file', async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, readFileSync(file).subarray(0, 5));
    await expectRefused(dir, SafetensorsError, [file, 'is 5 bytes long']);
  });

  it('a header length past the end of the file: SafetensorsError naming the file', async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    const { header, data } = readSafetensors(file);
    writeSafetensors(file, header, data, 1_000_000);
    await expectRefused(dir, SafetensorsError, [file, 'header length 1000000 runs past the end of the file']);
  });

  it("a tensor's data_offsets past the end of the data: SafetensorsError naming the file and the tensor", async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    const { header, data } = readSafetensors(file);
    const [begin, end] = header[Q0].data_offsets;
    header[Q0].data_offsets = [begin + data.length, end + data.length];
    writeSafetensors(file, header, data);
    await expectRefused(dir, SafetensorsError, [file, `tensor "${Q0}"`, 'past the end of the data']);
  });

  it("a tensor of the wrong shape for config.json: CheckpointError naming the file, the tensor and both shapes", async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    const { header, data } = readSafetensors(file);
    header[Q0].shape = [16, 64]; // the same bytes as [32, 32], so the file itself is valid
    writeSafetensors(file, header, data);
    await expectRefused(dir, CheckpointError, [file, Q0, 'is [16, 64], config.json implies [32, 32]']);
  });

  it('a config.json with more layers than the checkpoint: CheckpointError naming the missing tensor', async () => {
    const dir = copy();
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    cfg.num_hidden_layers = 3;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    await expectRefused(dir, CheckpointError, [join(dir, 'model.safetensors'), 'tensor model.layers.2.', 'is missing', '3 layers']);
  });

  it('a tokenizer.json that does not parse: TokenizerError naming the file', async () => {
    const dir = copy();
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": {"type": "BPE"');
    await expectRefused(dir, TokenizerError, [join(dir, 'tokenizer.json'), 'is not JSON']);
  });
});

describe('loadModel within a device budget', () => {
  const cfg = loadLlamaConfig(FIXTURE);
  const need = modelBytes(cfg, 'fp32');

  it('one byte short of the checkpoint: OutOfMemoryError before any allocation, naming device and bytes', async () => {
    const small = await createDevice('cpu', { budget: need - 1 });
    try {
      const e = (await expectRefused(FIXTURE, OutOfMemoryError, [small.name, `(${need} B)`, '(weights)'], { device: small })) as OutOfMemoryError;
      expect(e.requestedBytes).toBe(need);
      expect(small.memory.peak).toBe(0); // nothing was ever allocated, so no weight was read onto the device
    } finally {
      await small.dispose();
    }
  });

  it('exactly the checkpoint: passes the estimate, fails part way on a transient copy, and frees everything', async () => {
    // Each linear is read as an fp32 [in, out] source and copied into its format: at the head, the last linear, the
    // source and the copy are live together, 8 KiB over the total once the head is kept.
    const exact = await createDevice('cpu', { budget: need });
    try {
      const e = await expectRefused(FIXTURE, OutOfMemoryError, [exact.name, '(weights)'], { device: exact });
      expect(exact.memory.peak).toBeGreaterThan(need / 2); // it failed part way, not at the estimate
      expect(e.message).not.toMatch(`requested ${need}`);
      expect(exact.memory.live).toBe(0);
    } finally {
      await exact.dispose();
    }
    // With room for one more linear's source, the same checkpoint loads, and holds exactly the estimate.
    const enough = await createDevice('cpu', { budget: need + 4 * cfg.vocabSize * cfg.hiddenSize });
    try {
      const m = await loadModel(FIXTURE, { device: enough });
      expect(enough.memory.live).toBe(need);
      m.dispose();
      expect(enough.memory.live).toBe(0);
    } finally {
      await enough.dispose();
    }
  });

  it('a NaN weight in layer 1 fails int4 quantization part way: everything loaded before is freed', async () => {
    const dir = copy();
    const file = join(dir, 'model.safetensors');
    const { header, data } = readSafetensors(file);
    const name = 'model.layers.1.mlp.down_proj.weight';
    data.writeFloatLE(Number.NaN, header[name].data_offsets[0] + 4 * 5);
    writeSafetensors(file, header, data);
    const live = dev.memory.live;
    const count = dev.memory.count;
    const err = await loadModel(dir, { device: dev, format: 'int4' }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/is NaN; quantization needs finite values/);
    expect(err!.message).toMatch('[64, 32]'); // down_proj read as [in, out]
    expect(dev.memory.live).toBe(live);
    expect(dev.memory.count).toBe(count);
  });
});

describe('LlamaModel.fromWeights when the weight source fails part way', () => {
  const cfg = loadLlamaConfig(FIXTURE);
  const r = new Rng(5);
  const weights = new Map([...hfShapes(cfg)].map(([name, shape]) => [name, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r.normal(0, 0.2))]));
  const FAIL_AT = 'model.layers.1.mlp.up_proj.weight';
  let asked: string[];
  beforeEach(() => {
    asked = [];
  });

  for (const [how, format] of [['throws', 'fp32'], ['rejects', 'int8'], ['throws', 'llm.int8']] as const) {
    it(`a source that ${how} at ${FAIL_AT} (${format}): its error comes through and every tensor made is disposed`, async () => {
      // A full build first: quantizing compiles sessions and a scalar constant that the device keeps for reuse.
      (await LlamaModel.fromWeights(dev, cfg, (name) => weights.get(name)!, { format })).dispose();
      const live = dev.memory.live;
      const count = dev.memory.count;
      const boom = new Error(`disk read failed at ${FAIL_AT}`);
      const source = (name: string) => {
        asked.push(name);
        if (name !== FAIL_AT) return weights.get(name)!;
        if (how === 'throws') throw boom;
        return Promise.reject(boom);
      };
      await expect(LlamaModel.fromWeights(dev, cfg, source, { format })).rejects.toBe(boom);
      // Part way: the first layer and most of the second were built before the failure.
      expect(asked.length).toBeGreaterThan(10);
      expect(asked.at(-1)).toBe(FAIL_AT);
      expect(dev.memory.live).toBe(live);
      expect(dev.memory.count).toBe(count);
      expect(dev.memory.snapshot().byTag.weights).toBe(0);
    });
  }

  it('the same source without the failure builds a model (the control), and dispose frees it all', async () => {
    const live = dev.memory.live;
    const m = await LlamaModel.fromWeights(dev, cfg, (name) => weights.get(name)!);
    expect(dev.memory.live - live).toBe(modelBytes(cfg, 'fp32'));
    m.dispose();
    expect(dev.memory.live).toBe(live);
  });

  it('a weight of the wrong length from the source is refused and nothing is left', async () => {
    const live = dev.memory.live;
    const source = (name: string) => (name === FAIL_AT ? new Float32Array(7) : weights.get(name)!);
    // up_proj is [out 64, in 32]; it is refused as it is put on the device, transposed to [in, out].
    await expect(LlamaModel.fromWeights(dev, cfg, source)).rejects.toThrow(ServelabError);
    await expect(LlamaModel.fromWeights(dev, cfg, source)).rejects.toThrow(/^weight model\.layers\.1\.mlp\.up_proj\.weight: 7 values do not fill shape \[32, 64\] \(2048 elements\)$/);
    expect(dev.memory.live).toBe(live);
  });

  it('saveModel then loadModel of the same weights round-trips (fp32), so the failures above are the only cause', async () => {
    const dir = join(root, 'roundtrip');
    saveModel(dir, cfg, weights, { dtype: 'fp32' });
    const m = await loadModel(dir, { device: dev });
    expect(m.cfg).toEqual(cfg);
    m.dispose();
  });
});
