/**
 * `servelab generate` and `servelab eval` run as a user runs them, against a tiny random checkpoint folder: greedy
 * tokens and held-out loss checked against the float64 reference model, the trigram against its own scorer.
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { referenceLogits } from '../../engine/model/reference.ts';
import { mobyDick } from '../../engine/train/corpus.ts';
import { crossEntropy, fitTrigram } from '../../engine/train/trigram.ts';
import { writeTinyModel } from './tiny_model.ts';

const env = { ...process.env, SERVELAB_DEVICE: 'cpu' };
const servelab = (...args: string[]) => spawnSync('node', ['bin/servelab.js', ...args], { encoding: 'utf8', env });

let tiny: ReturnType<typeof writeTinyModel>;
beforeAll(() => {
  tiny = writeTinyModel();
});
afterAll(() => rmSync(tiny.dir, { recursive: true, force: true }));

/** Log-sum-exp minus the label's logit, per row of logits [S, V]. */
function rowLosses(logits: Float64Array, V: number, labels: ArrayLike<number>): number[] {
  return Array.from(labels, (label, s) => {
    const row = logits.subarray(s * V, (s + 1) * V);
    const max = Math.max(...row);
    return Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0)) + max - row[label];
  });
}

describe('servelab generate', () => {
  it('streams the prompt and its continuation to stdout, then the counts, timings and stop reason to stderr', () => {
    const r = servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--max-tokens', '20');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^7 prompt tokens, 20 new tokens; prefill \d+\.\d ms, decode \d+\.\d tokens\/s \(fp32\); stopped: length\n$/);
    const j = JSON.parse(servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--max-tokens', '20', '--json').stdout);
    expect(r.stdout).toBe(`Call me${j.text}\n`);
  });

  it('--json: one object; --max-tokens 5 gives 5 tokens, the reference model\'s greedy ones', () => {
    const r = servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--max-tokens', '5', '--json');
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ prompt: 'Call me', promptTokens: 7, newTokens: 5, stopReason: 'length', format: 'fp32', maxTokens: 5, temperature: 0 });
    expect(j.tokens).toHaveLength(5);
    for (const k of ['loadMs', 'prefillMs', 'decodeMs', 'tokensPerSec']) expect(Number.isFinite(j[k]) && j[k] >= 0, k).toBe(true);
    const ids = [...new TextEncoder().encode('Call me')];
    const V = tiny.cfg.vocabSize;
    const want: number[] = [];
    for (let i = 0; i < 5; i++) {
      const z = referenceLogits(tiny.cfg, tiny.weights, ids).subarray((ids.length - 1) * V);
      const next = z.indexOf(Math.max(...z));
      want.push(next);
      ids.push(next);
    }
    expect(j.tokens).toEqual(want);
  });

  it('sampling options change the text and are reproducible by seed', () => {
    const run = (seed: string) => JSON.parse(servelab('generate', '-p', 'Call me', '--model', tiny.dir, '--max-tokens', '12', '--temperature', '1', '--top-k', '40', '--top-p', '0.9', '--seed', seed, '--json').stdout).tokens;
    expect(run('1')).toEqual(run('1'));
    expect(run('1')).not.toEqual(run('2'));
  });

  it('a bad format, option, missing model or over-long prompt is a clear error with exit code 2', () => {
    const f = servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--format', 'q3');
    expect(f.status).toBe(2);
    expect(f.stderr).toBe('servelab generate: unknown format "q3"; the formats are: fp32, fp16, bf16, int8-tensor, int8, llm.int8, int4, nf4, fp4\n');
    expect(f.stdout).toBe('');
    const p = servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--top-p', '1.5');
    expect([p.status, p.stderr]).toEqual([2, 'servelab generate: --top-p must be a number in (0, 1], got "1.5"\n']);
    const m = servelab('generate', '--prompt', 'Call me', '--model', `${tiny.dir}/nothing-here`);
    expect(m.status).toBe(2);
    expect(m.stderr).toMatch(/^servelab generate: no model in .*nothing-here: expected a checkpoint folder .*`servelab train --preset builtin --out DIR`/);
    const long = servelab('generate', '--prompt', 'x'.repeat(600), '--model', tiny.dir);
    expect(long.status).toBe(2);
    expect(long.stderr).toBe("servelab generate: the prompt is 600 tokens and the model's context 512, which leaves no room for a new token; shorten it to at most 511\n");
    expect(long.stdout).toBe('');
    const k = servelab('generate', '--prompt', 'Call me', '--model', tiny.dir, '--max-tokens', '2.5');
    expect([k.status, k.stderr]).toEqual([2, 'servelab generate: --max-tokens must be an integer >= 1, got "2.5"\n']);
    const none = servelab('generate', '--model', tiny.dir);
    expect([none.status, none.stderr]).toEqual([2, 'servelab generate: --prompt TEXT is required: the text to continue\n']);
  });

  it('Ctrl-C stops at the next token, keeps the text and exits normally', async () => {
    const child = spawn('node', ['bin/servelab.js', 'generate', '--prompt', 'Call me', '--model', tiny.dir, '--max-tokens', '500'], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout === '') child.kill('SIGINT'); // the prompt's echo: generation has begun
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((done) => child.on('close', done));
    expect(code, stderr).toBe(0);
    const m = stderr.match(/^7 prompt tokens, (\d+) new tokens; .* stopped: interrupted\n$/);
    expect(m, stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThan(500);
    expect(stdout.startsWith('Call me')).toBe(true);
  });
});

describe('servelab eval', () => {
  it('--format fp32,int8 --json: loss against the reference model, agreement with fp32, weight bytes and the trigram', () => {
    const r = servelab('eval', '--format', 'int8,fp32', '--model', tiny.dir, '--json', '--context', '64', '--bytes', '1025');
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ bytes: 1025, context: 64 });
    expect(j.formats.map((f: { format: string }) => f.format)).toEqual(['fp32', 'int8']);
    const [fp32, int8] = j.formats;
    for (const row of j.formats) {
      for (const k of ['nats', 'perplexity', 'bitsPerByte', 'weightBytes', 'seconds']) expect(Number.isFinite(row[k]), `${row.format} ${k}`).toBe(true);
      expect(row.tokens).toBe(16 * 64);
      expect(row.perplexity).toBeCloseTo(Math.exp(row.nats), 6);
      expect(row.bitsPerByte).toBeCloseTo(row.nats / Math.LN2, 6);
    }
    expect(fp32.agreement).toBe(1);
    expect(int8.agreement).toBeGreaterThan(0.5);
    expect(int8.agreement).toBeLessThanOrEqual(1);
    expect(int8.weightBytes).toBeLessThan(fp32.weightBytes);

    // The float64 reference on the same 16 windows of 64 bytes; fp32 on the engine agrees to 1e-4 nats.
    const held = mobyDick().heldOut;
    const losses: number[] = [];
    for (let w = 0; w < 16; w++) {
      const win = held.subarray(w * 64, w * 64 + 65);
      losses.push(...rowLosses(referenceLogits(tiny.cfg, tiny.weights, [...win.subarray(0, 64)]), tiny.cfg.vocabSize, win.subarray(1)));
    }
    expect(Math.abs(fp32.nats - losses.reduce((a, b) => a + b, 0) / losses.length)).toBeLessThan(1e-4);

    const tri = crossEntropy(fitTrigram(mobyDick().train), held.subarray(0, 1025));
    expect(j.trigram).toEqual({ nats: tri.nats, bitsPerByte: tri.bitsPerByte, perplexity: tri.perplexity, bytes: 1025, smoothing: 'add-one' });
  });

  it('prints an aligned table with a row per format and the trigram, and names the bytes scored', () => {
    const r = servelab('eval', '--format', 'bf16', '--model', tiny.dir, '--context', '64', '--bytes', '257');
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/the first 257 of \d+ held-out bytes \(--bytes\) of Moby-Dick, 256 positions scored in windows of 64/);
    expect(lines[1]).toMatch(/^format +weights +nats\/byte +bits\/byte +perplexity +agrees with fp32 +seconds$/);
    expect(lines.slice(3).map((l) => l.split(/ {2,}/)[0])).toEqual(['fp32', 'bf16', 'byte trigram']);
    // Aligned: every number column ends where its header does.
    const end = lines[1].indexOf('nats/byte') + 'nats/byte'.length;
    for (const l of lines.slice(3)) expect(l.slice(end - 6, end)).toMatch(/^\d\.\d{4}$/);
    expect(lines[3]).toMatch(/100\.00%/);
    expect(r.stderr).toMatch(/fp32 .* nats\/byte in/);
  });

  it('a bad format or a missing model is a clear error with exit code 2', () => {
    const f = servelab('eval', '--format', 'fp32,nf3', '--model', tiny.dir);
    expect([f.status, f.stderr]).toEqual([2, 'servelab eval: unknown format "nf3"; the formats are: fp32, fp16, bf16, int8-tensor, int8, llm.int8, int4, nf4, fp4\n']);
    const m = servelab('eval', '--model', `${tiny.dir}/nothing-here`);
    expect(m.status).toBe(2);
    expect(m.stderr).toMatch(/no model in .*nothing-here/);
    const c = servelab('eval', '--model', tiny.dir, '--context', '1024');
    expect([c.status, c.stderr]).toEqual([2, "servelab eval: --context 1024 is past the model's context of 512\n"]);
  });
});

describe('--help', () => {
  it('generate and eval describe every option they take', () => {
    const flags = {
      generate: ['--prompt', '--max-tokens', '--temperature', '--top-k', '--top-p', '--seed', '--stop', '--format', '--model', '--json'],
      eval: ['--format', '--model', '--context', '--bytes', '--json'],
    };
    for (const [cmd, fs] of Object.entries(flags)) {
      const r = servelab(cmd, '--help');
      expect(r.status).toBe(0);
      expect(r.stdout.startsWith(`usage: servelab ${cmd}`)).toBe(true);
      for (const f of fs) expect(r.stdout, `${cmd} --help names ${f}`).toContain(f);
    }
    expect(servelab('--help').stdout).toMatch(/train[\s\S]*generate[\s\S]*eval[\s\S]*device/);
  });
});
