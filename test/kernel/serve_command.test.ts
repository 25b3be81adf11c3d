/**
 * `servelab serve` run as a user runs it, on the built-in model: a short Poisson trace's metrics as JSON (the very trace
 * poissonTrace draws, every request completed, throughput equal to its tokens over the run's time), the readable
 * table, a trace file whose bad lines are reported by number while the rest run, bad options named, and Ctrl-C
 * printing the metrics of what ran.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILTIN_DIR } from '../../engine/model/builtin.ts';
import { poissonTrace } from '../../engine/serve/trace.ts';

const env = { ...process.env, SERVELAB_DEVICE: 'cpu' };
const servelab = (...args: string[]) => spawnSync('node', ['bin/servelab.js', 'serve', ...args], { encoding: 'utf8', env });
const CONTEXT = JSON.parse(readFileSync(join(BUILTIN_DIR, 'config.json'), 'utf8')).max_position_embeddings as number;

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'servelab-serve-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** p50 <= p99, both finite and >= 0. */
function expectPercentiles(p: { p50: number; p99: number }, what: string): void {
  expect(Number.isFinite(p.p50) && Number.isFinite(p.p99), what).toBe(true);
  expect(p.p50, what).toBeGreaterThanOrEqual(0);
  expect(p.p50, what).toBeLessThanOrEqual(p.p99);
}

describe('servelab serve (a trace)', () => {
  it('--rate 20 --duration 1 --json: the metrics of the whole trace poissonTrace draws, as one JSON object', () => {
    const r = servelab('--rate', '20', '--duration', '1', '--json', '--price-per-hour', '2');
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    const trace = poissonTrace({ rate: 20, durationS: 1, dataset: 'sharegpt', context: CONTEXT, seed: 0 });
    expect(trace.length).toBeGreaterThan(5);
    expect(j).toMatchObject({ requests: trace.length, completed: trace.length, rejected: 0, interrupted: false, preemptions: 0, layout: 'paged', batching: 'continuous', format: 'fp32' });
    for (const k of ['requests', 'completed', 'throughputTokS', 'requestsPerS', 'ttftMs', 'tpotMs', 'e2eMs', 'kv', 'preemptions']) expect(j, k).toHaveProperty(k);
    // Every request runs to its drawn length, so the throughput is those tokens over the run's time.
    const tokens = trace.reduce((s, q) => s + q.maxTokens, 0);
    expect(j.throughputTokS).toBeGreaterThan(0);
    expect(j.throughputTokS * j.durationS).toBeCloseTo(tokens, -1);
    expect(j.requestsPerS * j.durationS).toBeCloseTo(trace.length, 1);
    expect(j.costPer1MTokens).toBeCloseTo((2 / (j.throughputTokS * 3600)) * 1e6, 3);
    expectPercentiles(j.ttftMs, 'ttft');
    expectPercentiles(j.tpotMs, 'tpot');
    expectPercentiles(j.e2eMs, 'e2e');
    // Each request's end-to-end latency is at least its TTFT, so every order statistic is too.
    expect(j.e2eMs.p50).toBeGreaterThanOrEqual(j.ttftMs.p50);
    expect(j.e2eMs.p99).toBeGreaterThanOrEqual(j.ttftMs.p99);
    expect(j.kv.peakUsedBytes).toBeGreaterThan(0);
    expect(j.kv.peakUsedBytes).toBeLessThanOrEqual(j.kv.peakReservedBytes);
    expect(j.kv.peakReservedBytes).toBeLessThanOrEqual(j.kv.poolBytes);
    expect(j.kv.poolBytes).toBeLessThanOrEqual(8 * 2 ** 20);
    expect(r.stderr).toMatch(new RegExp(`^serving ${trace.length} requests \\(sharegpt-like lengths, 20 requests/s for 1 s, seed 0\\)`));
    expect(r.stderr).toMatch(new RegExp(`\\[#{20}\\] ${trace.length}/${trace.length} requests +\\d+ decode tokens/s +0 running +0 waiting +KV 0 B used of`));
  });

  it('without --json: a table of TTFT, TPOT and end-to-end percentiles, then throughput, memory and preemptions', () => {
    const r = servelab('--rate', '10', '--duration', '0.5', '--dataset', 'alpaca', '--layout', 'token', '--batching', 'static', '--budget', '2');
    expect(r.status, r.stderr).toBe(0);
    const n = poissonTrace({ rate: 10, durationS: 0.5, dataset: 'alpaca', context: CONTEXT, seed: 0 }).length;
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^${n} of ${n} requests completed in \\d+\\.\\d\\d s \\(token KV, static batching, recompute preemption, fp32\\)$`));
    expect(lines[2]).toMatch(/^ +p50 +p99 +mean$/);
    expect(lines.slice(3, 6).map((l) => l.split(/ {2,}/)[0])).toEqual(['TTFT (ms)', 'TPOT (ms)', 'end to end (ms)']);
    for (const l of lines.slice(3, 6)) expect(l).toMatch(/(\d+\.\d|-) +(\d+\.\d|-) +(\d+\.\d|-)$/);
    expect(r.stdout).toMatch(/\nthroughput +\d+\.\d output tokens\/s, \d+\.\d\d requests\/s\n/);
    expect(r.stdout).toMatch(/\nKV memory +peak .* holding tokens, .* reserved, of a 2\.0 MiB pool\n/);
    expect(r.stdout).toMatch(/\npreemptions +\d+/);
  });

  it('--trace FILE: bad lines are reported by line number, an impossible request is rejected with its reason, the rest run', () => {
    const file = join(tmp, 'trace.jsonl');
    const lines = [
      JSON.stringify({ id: 'a', arrival_ms: 0, prompt: 'Call me Ishmael.', max_tokens: 8 }),
      '{"prompt": "not closed"',
      JSON.stringify({ arrival_ms: 5, prompt: [73, 116, 32, 119, 97, 115], max_tokens: 6 }),
      JSON.stringify({ prompt: 'zero', max_tokens: 0 }),
      JSON.stringify({ id: 'pair', arrival_ms: 10, prompt: 'The whale', max_tokens: 5, n: 2 }),
      '',
      JSON.stringify({ id: 'long', arrival_ms: 12, prompt: 'x'.repeat(CONTEXT), max_tokens: 4 }),
    ];
    writeFileSync(file, lines.join('\n') + '\n');
    const r = servelab('--trace', file, '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`${file}:2: not JSON: `);
    expect(r.stderr).toContain(`${file}:4: max_tokens must be a positive integer, got 0; line skipped\n`);
    expect(r.stderr).not.toMatch(/:(1|3|5|6|7): /);
    expect(r.stderr).toContain(`request long rejected: ${CONTEXT} prompt tokens + 4 to generate exceed the longest sequence the cache takes (${CONTEXT})\n`);
    const j = JSON.parse(r.stdout);
    // a, line-3, pair#0, pair#1 run; long is rejected.
    expect(j).toMatchObject({ requests: 5, completed: 4, rejected: 1, interrupted: false, trace: { file } });
    expect(j.throughputTokS * j.durationS).toBeCloseTo(8 + 6 + 5 + 5, 0);
  });

  it('a bad option is an error naming it, exit code 2, before any model is loaded', () => {
    // One of each kind of check (a choice, a number, a missing option, options that exclude each other, a file, an
    // address, an unknown flag): every flag goes through the same helpers.
    const cases: [string[], string | RegExp][] = [
      [['--rate', '20', '--duration', '1', '--layout', 'ring'], 'servelab serve: --layout must be one of paged, contiguous, token, got "ring"\n'],
      [['--rate', '0', '--duration', '1'], 'servelab serve: --rate must be a number > 0, got "0"\n'],
      [['--rate', '5'], 'servelab serve: --duration S is required: give --rate and --duration (a Poisson trace), --trace FILE or --http HOST:PORT\n'],
      [['--rate', '5', '--duration', '1', '--budget', '0'], 'servelab serve: --budget must be a number > 0, got "0"\n'],
      [['--rate', '5', '--duration', '1', '--layout', 'token', '--block-size', '8'], "servelab serve: --block-size is the paged layout's; --layout token has none\n"],
      [['--trace', 'x.jsonl', '--rate', '5'], 'servelab serve: --rate builds a Poisson trace; --trace replays a file: give one or the other\n'],
      [['--trace', join(tmp, 'missing.jsonl')], /^servelab serve: loadTrace: cannot read .*missing\.jsonl/],
      [['--http', 'localhost'], 'servelab serve: --http must be HOST:PORT (port 0 to 65535; 0 picks a free one), got "localhost"\n'],
      [['--http', '127.0.0.1:0', '--json'], 'servelab serve: --json is for a trace run; --http serves requests as they come\n'],
      [['--rate', '5', '--duration', '1', '--bogus'], /^servelab serve: Unknown option '--bogus'[\s\S]*usage: servelab serve --rate R --duration S/],
    ];
    for (const [args, message] of cases) {
      const r = servelab(...args);
      expect(r.status, args.join(' ')).toBe(2);
      if (typeof message === 'string') expect(r.stderr, args.join(' ')).toBe(message);
      else expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('Ctrl-C stops the run at the next iteration and prints the metrics of what ran', async () => {
    const child = spawn('node', ['bin/servelab.js', 'serve', '--rate', '50', '--duration', '30', '--json'], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      // The first progress line: the run has begun.
      if (!stderr.includes('requests  ') && (stderr + d).includes('requests  ')) child.kill('SIGINT');
      stderr += d;
    });
    const code = await new Promise<number | null>((done) => child.on('close', done));
    expect(code, stderr).toBe(0);
    const j = JSON.parse(stdout);
    expect(j.interrupted).toBe(true);
    // Only the requests that had arrived are counted: far fewer than the 1500 or so of 30 s at 50 per second.
    expect(j.requests).toBeGreaterThan(0);
    expect(j.requests).toBeLessThan(500);
    expect(j.completed).toBeLessThan(j.requests);
    expect(j.durationS).toBeLessThan(10);
  });
});
