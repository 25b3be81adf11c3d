/**
 * An OpenAI-compatible completions server over the serving engine's online loop (vLLM's `vllm serve`): POST
 * /v1/completions (a JSON object, or server-sent events with `stream`), GET /v1/models and GET /health, on node:http.
 * Every request is one `ServingEngine.submit`; the engine batches whatever is in flight at each iteration, so
 * concurrent clients share the model exactly as a trace's requests do. Errors have OpenAI's shape
 * `{ error: { message, type, param, code } }`, and one bad request never stops the others.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { ServelabError } from '../../engine/errors.ts';
import type { Tokenizer } from '../../engine/io/tokenizer.ts';
import type { RequestRecord, ServingEngine } from '../../engine/serve/index.ts';

/** A request the server answers with an error status and an OpenAI-style body. */
export class HttpError extends ServelabError {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    readonly type = status >= 500 ? 'server_error' : 'invalid_request_error',
  ) {
    super(message);
  }
}

export interface CompletionServerOptions {
  host: string;
  /** 0 picks a free port; `url` says which. */
  port: number;
  /** The id /v1/models lists and requests may name. */
  modelName: string;
  /** The temperature the engine samples at: a request may ask for it, or leave it out, and for nothing else. */
  temperature: number;
  /** Called once per finished completion request (an access log line). */
  onRequest?: (line: string) => void;
}

export interface CompletionServer {
  url: string;
  /** Settles when the server has stopped; rejects if the engine's loop failed. */
  done: Promise<void>;
  /** Stops taking requests, ends those in flight (503, or an error event on a stream) and closes every connection. */
  close(): Promise<void>;
}

/** OpenAI's default for a request without max_tokens. */
const DEFAULT_MAX_TOKENS = 16;
/** A prompt of the longest context fits many times in this; anything larger is not a completion request. */
const MAX_BODY_BYTES = 1 << 20;

interface Completion {
  prompt: number[];
  maxTokens: number;
  stream: boolean;
  includeUsage: boolean;
}

/**
 * Text out of a growing list of tokens, in pieces that are whole characters: the output is decoded whole each time
 * (a byte-level or BPE piece may end inside a UTF-8 sequence), and a tail that decodes to U+FFFD is held back until
 * the next token completes it or the request ends. The end-of-sequence token is never text.
 */
export class TextStream {
  private readonly tokens: number[] = [];
  private emitted = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly eos: number | undefined,
  ) {}

  push(token: number): string {
    if (token === this.eos) return '';
    this.tokens.push(token);
    const text = this.tokenizer.decode(this.tokens);
    const ready = text.endsWith('\uFFFD') ? text.lastIndexOf('\uFFFD') : text.length;
    if (ready <= this.emitted) return '';
    const piece = text.slice(this.emitted, ready);
    this.emitted = ready;
    return piece;
  }

  /** What is left at the end, an incomplete character included (as U+FFFD, as generate() gives it). */
  flush(): string {
    const text = this.text();
    const piece = text.slice(this.emitted);
    this.emitted = text.length;
    return piece;
  }

  /** All the text so far. */
  text(): string {
    return this.tokenizer.decode(this.tokens);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The body of POST /v1/completions, checked field by field; what the engine cannot do is refused, never ignored. */
function parseCompletion(body: unknown, opts: CompletionServerOptions, tokenizer: Tokenizer): Completion {
  if (!isObject(body)) throw new HttpError(400, 'invalid_body', 'the body must be a JSON object');
  if (body.model !== undefined && body.model !== opts.modelName) {
    throw new HttpError(404, 'model_not_found', `the model ${JSON.stringify(body.model)} does not exist; this server has ${JSON.stringify(opts.modelName)}`, 'model');
  }
  const p = body.prompt;
  let prompt: number[];
  if (p === undefined) throw new HttpError(400, 'missing_prompt', 'prompt is required: a string or an array of token ids', 'prompt');
  if (typeof p === 'string') prompt = tokenizer.encode(p);
  else if (Array.isArray(p) && p.every((t) => Number.isSafeInteger(t))) prompt = p as number[];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || Array.isArray(x))) throw new HttpError(400, 'invalid_prompt', 'one prompt per request: send the prompts of a batch as concurrent requests', 'prompt');
  else throw new HttpError(400, 'invalid_prompt', 'prompt must be a string or an array of integer token ids', 'prompt');
  if (prompt.length === 0) throw new HttpError(400, 'invalid_prompt', 'the prompt is empty', 'prompt');
  const maxTokens = body.max_tokens ?? DEFAULT_MAX_TOKENS;
  if (!Number.isSafeInteger(maxTokens) || (maxTokens as number) < 1) throw new HttpError(400, 'invalid_max_tokens', `max_tokens must be a positive integer, got ${JSON.stringify(body.max_tokens)}`, 'max_tokens');
  if (body.temperature !== undefined && body.temperature !== null && body.temperature !== opts.temperature) {
    const how = opts.temperature === 0 ? 'greedy decoding (temperature 0)' : `temperature ${opts.temperature}`;
    throw new HttpError(400, 'unsupported_temperature', `temperature ${JSON.stringify(body.temperature)} is not supported: every request of this server uses ${how}, set for the whole engine by \`servelab serve --temperature T\`; leave temperature out or send ${opts.temperature}`, 'temperature');
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw new HttpError(400, 'invalid_stream', 'stream must be true or false', 'stream');
  // Parameters the engine has no way to honour: refused, since a silently ignored one gives the client wrong output.
  const unsupported: [string, (v: unknown) => boolean][] = [
    ['n', (v) => v === 1],
    ['best_of', (v) => v === 1],
    ['echo', (v) => v === false],
    ['logprobs', (v) => v === 0],
    ['stop', (v) => (Array.isArray(v) && v.length === 0) || v === ''],
    ['suffix', (v) => v === ''],
    ['top_p', (v) => v === 1],
    ['presence_penalty', (v) => v === 0],
    ['frequency_penalty', (v) => v === 0],
    ['logit_bias', (v) => isObject(v) && Object.keys(v).length === 0],
  ];
  for (const [name, isDefault] of unsupported) {
    const v = body[name];
    if (v !== undefined && v !== null && !isDefault(v)) throw new HttpError(400, 'unsupported_parameter', `${name} is not supported by this server (got ${JSON.stringify(v)})`, name);
  }
  const so = body.stream_options;
  const includeUsage = isObject(so) && so.include_usage === true;
  return { prompt, maxTokens: maxTokens as number, stream: body.stream === true, includeUsage };
}

/** The request body as JSON; a body over MAX_BODY_BYTES or not JSON is a 4xx. */
function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(c);
      // The rest is read and dropped, so that the 413 reaches the client; the connection closes after it.
      req.off('data', onData);
      req.resume();
      reject(new HttpError(413, 'body_too_large', `the body is over ${MAX_BODY_BYTES} bytes`));
    };
    req.on('data', onData);
    req.on('error', reject);
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new HttpError(400, 'invalid_json', `the body is not JSON: ${(e as Error).message}`));
      }
    });
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

const errorBody = (e: HttpError) => ({ error: { message: e.message, type: e.type, param: e.param, code: e.code } });

/** An event of a server-sent event stream; nothing once the client has gone. */
function sendEvent(res: ServerResponse, data: unknown): void {
  if (!res.destroyed && !res.writableEnded) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
}

function startStream(res: ServerResponse): void {
  if (!res.headersSent && !res.destroyed) res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
}

/**
 * Starts the engine's online loop and the HTTP server on it. The caller keeps the engine (and disposes it after
 * `close`); the model must have a tokenizer, which turns prompt text into ids and output ids back into text.
 */
export async function startCompletionServer(engine: ServingEngine, opts: CompletionServerOptions): Promise<CompletionServer> {
  const tokenizer = engine.model.tokenizer;
  if (!tokenizer) throw new ServelabError('the HTTP server needs the model\'s tokenizer (tokenizer.json beside its weights) to turn text into tokens and back');
  const eos = tokenizer.eosId;
  const stop = new AbortController();
  let closing = false;
  let failure: unknown = null;
  const loop = engine.serve(stop.signal);
  const loopDone = loop.catch((e: unknown) => {
    // A failed iteration leaves the engine's state unknown: end what is in flight and take no more requests.
    failure = e;
    closing = true;
    try {
      engine.abortAll();
    } catch {
      // The failure itself is what the caller hears about.
    }
  });

  const created = Math.floor(Date.now() / 1000);
  const models = { object: 'list', data: [{ id: opts.modelName, object: 'model', created, owned_by: 'servelab', max_model_len: engine.cache.maxSeqLen }] };

  async function complete(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const c = parseCompletion(await readJson(req), opts, tokenizer!);
    if (closing) throw new HttpError(503, 'server_shutting_down', 'the server is shutting down');
    const id = `cmpl-${randomUUID().replaceAll('-', '')}`;
    const base = { id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: opts.modelName };
    const chunk = (text: string, finish: string | null) => ({ ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] });
    const V = engine.model.cfg.vocabSize;
    const bad = c.prompt.findIndex((t) => t < 0 || t >= V);
    if (bad >= 0) throw new HttpError(400, 'invalid_prompt', `prompt[${bad}] = ${c.prompt[bad]} is not a token id of this model [0, ${V})`, 'prompt');
    const text = new TextStream(tokenizer!, eos);
    // Headers go out with the first token, not before: a request the engine rejects at once still gets a 4xx.
    const onToken = (token: number) => {
      const piece = text.push(token);
      if (!c.stream) return;
      startStream(res);
      if (piece) sendEvent(res, chunk(piece, null));
    };
    // A client that goes away stops costing the device: its request leaves the batch at the next iteration.
    let finished = false;
    res.on('close', () => finished || engine.cancel(id));
    const record: RequestRecord = await engine.submit({ id, prompt: c.prompt, maxTokens: c.maxTokens }, onToken);
    finished = true;
    if (res.destroyed) {
      opts.onRequest?.(`${id} cancelled: the client went away after ${record.output.length} of ${c.maxTokens} tokens`);
      return;
    }
    const usage = { prompt_tokens: record.promptTokens, completion_tokens: record.output.length, total_tokens: record.promptTokens + record.output.length };
    opts.onRequest?.(`${id} ${record.finishReason}${record.error ? ` (${record.error})` : ''}: ${usage.prompt_tokens} prompt + ${usage.completion_tokens} new tokens${Number.isFinite(record.firstTokenMs) ? `, first token ${(record.firstTokenMs - record.arrivalMs).toFixed(0)} ms, total ${(record.finishMs - record.arrivalMs).toFixed(0)} ms` : ''}`);
    if (record.finishReason === 'rejected') throw new HttpError(400, 'context_length_exceeded', `the request can never run here: ${record.error}`, 'prompt');
    if (record.finishReason === 'aborted') {
      const e = new HttpError(503, 'server_shutting_down', `the server stopped after ${record.output.length} of ${c.maxTokens} tokens of this request`);
      if (!res.headersSent) throw e;
      sendEvent(res, errorBody(e));
      res.end();
      return;
    }
    const finish = record.finishReason === 'eos' ? 'stop' : 'length';
    if (!c.stream) return sendJson(res, 200, { ...base, choices: [{ index: 0, text: text.text(), logprobs: null, finish_reason: finish }], usage });
    startStream(res);
    sendEvent(res, chunk(text.flush(), finish));
    if (c.includeUsage) sendEvent(res, { ...base, choices: [], usage });
    sendEvent(res, '[DONE]');
    res.end();
  }

  const routes: Record<string, Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void> | void>> = {
    '/v1/completions': { POST: complete },
    '/v1/models': { GET: (_req, res) => sendJson(res, 200, models) },
    '/health': {
      GET: (_req, res) => {
        const s = engine.scheduler;
        sendJson(res, closing ? 503 : 200, { status: closing ? 'stopping' : 'ok', running: s.numRunning, waiting: s.numWaiting, swapped: s.numSwapped });
      },
    },
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const route = routes[path];
    const handler = route?.[req.method ?? 'GET'];
    const fail = (e: unknown) => {
      const err = e instanceof HttpError ? e : new HttpError(500, 'internal_error', `${(e as Error)?.name ?? 'Error'}: ${(e as Error)?.message ?? String(e)}`);
      if (!res.headersSent) sendJson(res, err.status, errorBody(err), err.status === 413 ? { connection: 'close' } : {});
      else {
        sendEvent(res, errorBody(err));
        res.end();
      }
    };
    if (!route) return fail(new HttpError(404, 'not_found', `no route ${req.method} ${path}; the routes are POST /v1/completions, GET /v1/models, GET /health`));
    if (!handler) {
      res.setHeader('allow', Object.keys(route).join(', '));
      return fail(new HttpError(405, 'method_not_allowed', `${path} takes ${Object.keys(route).join(', ')}, not ${req.method}`));
    }
    Promise.resolve()
      .then(() => handler(req, res))
      .catch(fail);
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    stop.abort();
    await loopDone;
    throw new ServelabError(`cannot listen on ${opts.host}:${opts.port}: ${(e as Error).message}`);
  }
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      closing = true;
      const listening = new Promise<void>((resolve) => server.close(() => resolve()));
      stop.abort();
      await loopDone;
      // Responses of the aborted requests are written in the promise callbacks just run; then the sockets can go.
      await new Promise((r) => setImmediate(r));
      server.closeIdleConnections();
      const grace = setTimeout(() => server.closeAllConnections(), 1000);
      await listening;
      clearTimeout(grace);
    })());
  const done = loopDone.then(async () => {
    if (failure !== null) {
      await close();
      throw failure;
    }
  });
  return { url: `http://${host}:${addr.port}`, done, close };
}
