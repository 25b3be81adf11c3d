/**
 * `servelab serve --http` as a client sees it, over real HTTP on 127.0.0.1: concurrent streaming and non-streaming
 * completions, each the text greedy generate() gives its prompt alone on the same built-in model; malformed requests
 * answered with a 4xx and an OpenAI-style error while the server keeps serving; SIGINT ending the requests in flight
 * and the process. And the streamed text holds back an incomplete UTF-8 character until its last byte comes.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, type Device } from '../../engine/index.ts';
import { BUILTIN_DIR } from '../../engine/model/builtin.ts';
import { loadModel } from '../../engine/model/checkpoint.ts';
import { generate } from '../../engine/model/generate.ts';
import type { LlamaModel } from '../../engine/model/llama.ts';
import { loadTokenizer } from '../../engine/io/tokenizer.ts';
import { TextStream } from '../../kernel/serve/http.ts';

let child: ChildProcessWithoutNullStreams;
let stderr = '';
let url = '';
let exited: Promise<number | null>;
let dev: Device;
let model: LlamaModel;

beforeAll(async () => {
  child = spawn('node', ['bin/servelab.js', 'serve', '--http', '127.0.0.1:0', '--max-seqs', '8'], { env: { ...process.env, SERVELAB_DEVICE: 'cpu' } });
  exited = new Promise((done) => child.on('close', done));
  url = await new Promise<string>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      const m = stderr.match(/listening on (http:\/\/127\.0\.0\.1:\d+) /);
      if (m) resolve(m[1]);
    });
    void exited.then((code) => reject(new Error(`the server exited (${code}) before listening:\n${stderr}`)));
  });
  dev = await createDevice('cpu');
  model = await loadModel(BUILTIN_DIR, { device: dev });
});

afterAll(async () => {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  model?.dispose();
  await dev?.dispose();
});

/** A response body, read field by field as a client reads it. */
type Json = any;

async function post(body: unknown): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

/** The data of each server-sent event of a streamed completion. */
async function stream(body: Record<string, unknown>): Promise<{ status: number; type: string | null; events: string[] }> {
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
  const text = await res.text();
  const events = text.split('\n\n').filter((e) => e !== '').map((e) => {
    expect(e.startsWith('data: '), e).toBe(true);
    return e.slice('data: '.length);
  });
  return { status: res.status, type: res.headers.get('content-type'), events };
}

const greedy = async (prompt: string | number[], maxTokens: number) => generate(model, prompt, { maxTokens, temperature: 0 });

describe('servelab serve --http', () => {
  it('GET /health and GET /v1/models answer', async () => {
    const h = await fetch(`${url}/health`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: 'ok', running: 0, waiting: 0, swapped: 0 });
    const m = (await (await fetch(`${url}/v1/models`)).json()) as Json;
    expect(m).toMatchObject({ object: 'list', data: [{ id: 'builtin', object: 'model', owned_by: 'servelab', max_model_len: 256 }] });
  });

  it('four concurrent clients, two streaming, each get the greedy text of their prompt alone', async () => {
    const asks = [
      { prompt: 'Call me Ishmael. Some years ago', max_tokens: 16, stream: true },
      { prompt: 'It was the best of times', max_tokens: 12, stream: false },
      { prompt: 'Café au lait — the whale', max_tokens: 10, stream: true },
      { prompt: [...new TextEncoder().encode('The sea was')], max_tokens: 14, stream: false },
    ];
    const answers = await Promise.all(asks.map((a) => (a.stream ? stream(a) : post(a))));
    for (const [i, a] of asks.entries()) {
      const want = await greedy(a.prompt, a.max_tokens);
      const promptTokens = typeof a.prompt === 'string' ? new TextEncoder().encode(a.prompt).length : a.prompt.length;
      const finish = want.stopReason === 'eos' ? 'stop' : 'length';
      if (a.stream) {
        const s = answers[i] as Awaited<ReturnType<typeof stream>>;
        expect(s.status).toBe(200);
        expect(s.type).toBe('text/event-stream');
        expect(s.events.at(-1)).toBe('[DONE]');
        const chunks = s.events.slice(0, -1).map((e) => JSON.parse(e));
        const ids = new Set(chunks.map((c) => c.id));
        expect(ids.size).toBe(1);
        expect([...ids][0]).toMatch(/^cmpl-[0-9a-f]{32}$/);
        for (const c of chunks) expect(c).toMatchObject({ object: 'text_completion', model: 'builtin', choices: [{ index: 0 }] });
        // A chunk per piece of text as it decodes, the last one with the finish reason.
        expect(chunks.length).toBeGreaterThan(1);
        expect(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null && c.choices[0].text !== '')).toBe(true);
        expect(chunks.at(-1).choices[0].finish_reason).toBe(finish);
        expect(chunks.map((c) => c.choices[0].text).join(''), `prompt ${i}`).toBe(want.text);
      } else {
        const r = answers[i] as Awaited<ReturnType<typeof post>>;
        expect(r.status).toBe(200);
        expect(r.json).toMatchObject({ object: 'text_completion', model: 'builtin', choices: [{ index: 0, finish_reason: finish }] });
        expect(r.json.choices[0].text, `prompt ${i}`).toBe(want.text);
        expect(r.json.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: a.max_tokens, total_tokens: promptTokens + a.max_tokens });
        expect(Number.isInteger(r.json.created)).toBe(true);
      }
    }
    expect(stderr).toMatch(/cmpl-[0-9a-f]{32} length: 11 prompt \+ 14 new tokens, first token \d+ ms, total \d+ ms\n/);
  });

  it('stream_options.include_usage adds a usage chunk before [DONE]', async () => {
    const s = await stream({ prompt: 'Whale', max_tokens: 8, stream_options: { include_usage: true } });
    const last = JSON.parse(s.events.at(-2)!);
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
  });

  it('malformed requests get a 4xx with an OpenAI-style error, and the server keeps serving', async () => {
    const bad: [unknown, number, string, string | null, RegExp][] = [
      ['{"prompt": "Call me", ', 400, 'invalid_json', null, /^the body is not JSON: /],
      [[1, 2], 400, 'invalid_body', null, /^the body must be a JSON object$/],
      [{ max_tokens: 8 }, 400, 'missing_prompt', 'prompt', /^prompt is required/],
      [{ prompt: '', max_tokens: 8 }, 400, 'invalid_prompt', 'prompt', /^the prompt is empty$/],
      [{ prompt: ['a', 'b'], max_tokens: 8 }, 400, 'invalid_prompt', 'prompt', /one prompt per request/],
      [{ prompt: [1, 300], max_tokens: 8 }, 400, 'invalid_prompt', 'prompt', /^prompt\[1\] = 300 is not a token id of this model \[0, 258\)$/],
      [{ prompt: 'Call me', max_tokens: 0 }, 400, 'invalid_max_tokens', 'max_tokens', /^max_tokens must be a positive integer, got 0$/],
      [{ prompt: 'Call me', max_tokens: 2.5 }, 400, 'invalid_max_tokens', 'max_tokens', /got 2\.5$/],
      [{ prompt: 'Call me', max_tokens: '8' }, 400, 'invalid_max_tokens', 'max_tokens', /got "8"$/],
      [{ prompt: 'x'.repeat(300), max_tokens: 4 }, 400, 'context_length_exceeded', 'prompt', /^the request can never run here: 300 prompt tokens \+ 4 to generate exceed the longest sequence the cache takes \(256\)$/],
      [{ prompt: 'Call me', max_tokens: 250 }, 400, 'context_length_exceeded', 'prompt', /7 prompt tokens \+ 250 to generate exceed/],
      [{ prompt: 'Call me', max_tokens: 8, temperature: 0.7 }, 400, 'unsupported_temperature', 'temperature', /^temperature 0\.7 is not supported: .*greedy decoding \(temperature 0\).*--temperature T/],
      [{ prompt: 'Call me', max_tokens: 8, n: 2 }, 400, 'unsupported_parameter', 'n', /^n is not supported/],
      [{ prompt: 'Call me', max_tokens: 8, model: 'gpt-4' }, 404, 'model_not_found', 'model', /"gpt-4" does not exist; this server has "builtin"/],
    ];
    for (const [body, status, code, param, message] of bad) {
      const r = await post(body);
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.json.error).toMatchObject({ type: 'invalid_request_error', code, param });
      expect(r.json.error.message).toMatch(message);
      // The same over a stream: refused before any event, with a status.
      if (typeof body === 'object' && !Array.isArray(body)) {
        const s = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
        expect(s.status, `streamed ${JSON.stringify(body)}`).toBe(status);
        expect(((await s.json()) as Json).error.code).toBe(code);
      }
    }
    const route = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: '{}' });
    expect([route.status, ((await route.json()) as Json).error.code]).toEqual([404, 'not_found']);
    const method = await fetch(`${url}/v1/completions`);
    expect([method.status, method.headers.get('allow')]).toEqual([405, 'POST']);

    const ok = await post({ prompt: 'Call me', max_tokens: 8, temperature: 0, model: 'builtin' });
    expect(ok.status).toBe(200);
    expect(ok.json.choices[0].text).toBe((await greedy('Call me', 8)).text);
  });

  it('a client that disconnects mid-stream stops costing the engine: its request leaves the batch, and the server serves on', async () => {
    const ctrl = new AbortController();
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'It was the best', max_tokens: 240, stream: true }), signal: ctrl.signal });
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toMatch(/^data: \{/);
    ctrl.abort();
    const health = async () => (await (await fetch(`${url}/health`)).json()) as { running: number; waiting: number };
    let h = await health();
    for (let i = 0; i < 200 && h.running + h.waiting > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      h = await health();
    }
    expect(h).toMatchObject({ running: 0, waiting: 0 });
    expect(stderr).toMatch(/cancelled: the client went away after \d+ of 240 tokens/);
    const ok = await post({ prompt: 'Call me', max_tokens: 8 });
    expect(ok.json.choices[0].text).toBe((await greedy('Call me', 8)).text);
  });

  it('SIGINT ends the requests in flight (a 503, an error event closing the stream) and the server', async () => {
    const waiting = post({ prompt: 'Call me', max_tokens: 240 });
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'It was', max_tokens: 240, stream: true }) });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toMatch(/^data: \{/);
    // Both requests are in the engine before the signal.
    const health = async () => (await (await fetch(`${url}/health`)).json()) as { running: number; waiting: number };
    for (let h = await health(); h.running + h.waiting < 2; h = await health());
    child.kill('SIGINT');
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    const events = rest.split('\n\n').filter((e) => e !== '');
    expect(events.at(-1)).toMatch(/^data: \{"error":\{"message":"the server stopped after \d+ of 240 tokens of this request","type":"server_error","param":null,"code":"server_shutting_down"\}\}$/);
    expect(rest).not.toContain('[DONE]');
    const w = await waiting;
    expect(w.status).toBe(503);
    expect(w.json.error).toMatchObject({ type: 'server_error', code: 'server_shutting_down' });
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/servelab serve: stopping\n/);
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });
});

describe('TextStream', () => {
  it('gives whole characters as their last byte arrives, never half of one, and never the end-of-sequence token', () => {
    const tok = loadTokenizer(BUILTIN_DIR);
    const text = 'a é € 😀!';
    const s = new TextStream(tok, tok.eosId);
    const pieces = [...new TextEncoder().encode(text)].map((b) => s.push(b));
    expect(pieces.join('')).toBe(text);
    expect(pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
    // '😀' is four bytes: nothing until the fourth.
    const at = pieces.indexOf('😀');
    expect(pieces.slice(at - 3, at)).toEqual(['', '', '']);
    expect(s.push(tok.eosId!)).toBe('');
    expect([s.flush(), s.text()]).toEqual(['', text]);
    // A character cut off at the end comes out as U+FFFD, as generate() gives it.
    const cut = new TextStream(tok, tok.eosId);
    expect([cut.push(0x41), cut.push(0xe2), cut.push(0x82), cut.flush()]).toEqual(['A', '', '', '\uFFFD']);
  });
});
