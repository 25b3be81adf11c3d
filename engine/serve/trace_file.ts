/**
 * Request traces as JSONL files, one request a line: loadTrace reads one, reporting each unusable line by its number
 * and loading the rest, and saveTrace writes requests that loadTrace reads back unchanged. The requests are those of
 * trace.ts (vLLM, Kwon et al., SOSP 2023, section 6).
 */
import { readFileSync } from 'node:fs';
import { isCount, TraceError, type TraceRequest } from './trace.ts';

/** A line loadTrace could not use: 1-based line number and why. */
export interface TraceLineError {
  line: number;
  reason: string;
}

const isTokenId = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) < 2 ** 32;

/** The request on one JSONL line, or why there is none. */
function parseLine(text: string, line: number): TraceRequest | string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return 'not a JSON object';
  const r = o as Record<string, unknown>;
  let prompt: number[];
  if (typeof r.prompt === 'string') prompt = Array.from(new TextEncoder().encode(r.prompt));
  else if (Array.isArray(r.prompt)) {
    const bad = r.prompt.findIndex((t) => !isTokenId(t));
    if (bad >= 0) return `prompt[${bad}] = ${JSON.stringify(r.prompt[bad])} is not a token id (an integer in [0, 2^32))`;
    prompt = r.prompt as number[];
  } else return r.prompt === undefined ? 'prompt is missing' : 'prompt must be a string or an array of token ids';
  if (prompt.length === 0) return 'prompt is empty';
  if (!isCount(r.max_tokens as number, 1)) return `max_tokens must be a positive integer, got ${JSON.stringify(r.max_tokens)}`;
  const arrivalMs = r.arrival_ms === undefined ? 0 : r.arrival_ms;
  if (typeof arrivalMs !== 'number' || !Number.isFinite(arrivalMs) || arrivalMs < 0) return `arrival_ms must be a finite number >= 0, got ${JSON.stringify(r.arrival_ms)}`;
  if (r.n !== undefined && !isCount(r.n as number, 1)) return `n must be a positive integer, got ${JSON.stringify(r.n)}`;
  if (r.id !== undefined && typeof r.id !== 'string') return `id must be a string, got ${JSON.stringify(r.id)}`;
  const req: TraceRequest = { id: r.id ?? `line-${line}`, arrivalMs, prompt, maxTokens: r.max_tokens as number };
  if (r.n !== undefined && r.n !== 1) req.n = r.n as number;
  return req;
}

/**
 * A trace from JSONL, one request a line: {"arrival_ms"?, "prompt": string | token ids, "max_tokens", "n"?, "id"?}.
 * A string prompt becomes its UTF-8 bytes; a missing arrival_ms is 0 (an offline batch), a missing id `line-<N>`.
 * `source` is the text itself when it is empty, holds a newline or starts with `{`, else a file's path (or a URL).
 * Blank lines are skipped and unknown keys ignored. A line that is not a usable request, or repeats an earlier id,
 * goes to `errors` with its line number and the rest still load; requests come sorted by arrival (a stable sort).
 */
export function loadTrace(source: string | URL): { requests: TraceRequest[]; errors: TraceLineError[] } {
  let text: string;
  if (typeof source === 'string' && (source === '' || source.includes('\n') || source.trimStart().startsWith('{'))) text = source;
  else {
    try {
      text = readFileSync(source, 'utf8');
    } catch (e) {
      throw new TraceError('loadTrace', 'unreadable', `cannot read ${String(source)}: ${(e as Error).message}`);
    }
  }
  const requests: TraceRequest[] = [];
  const errors: TraceLineError[] = [];
  const firstLine = new Map<string, number>();
  text.split(/\r?\n/).forEach((s, i) => {
    const line = i + 1;
    if (s.trim() === '') return;
    const r = parseLine(s, line);
    if (typeof r === 'string') return void errors.push({ line, reason: r });
    const seen = firstLine.get(r.id);
    if (seen !== undefined) return void errors.push({ line, reason: `id ${JSON.stringify(r.id)} repeats line ${seen}` });
    firstLine.set(r.id, line);
    requests.push(r);
  });
  requests.sort((a, b) => a.arrivalMs - b.arrivalMs);
  return { requests, errors };
}

/**
 * JSONL that loadTrace reads back to the same requests. A prompt whose bytes are valid UTF-8 (every id below 256)
 * is written as its text, readable and exact; any other prompt as its array of ids.
 */
export function saveTrace(requests: readonly TraceRequest[]): string {
  const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const ids = new Set<string>();
  return requests
    .map((r) => {
      if (ids.has(r.id)) throw new TraceError('saveTrace', 'invalid-request', `id ${JSON.stringify(r.id)} appears twice`);
      ids.add(r.id);
      const o: Record<string, unknown> = { id: r.id, arrival_ms: r.arrivalMs, prompt: r.prompt, max_tokens: r.maxTokens };
      if (r.n !== undefined && r.n !== 1) o.n = r.n;
      const back = parseLine(JSON.stringify(o), 0);
      if (typeof back === 'string') throw new TraceError('saveTrace', 'invalid-request', `request ${JSON.stringify(r.id)}: ${back}`);
      if (r.prompt.every((t) => t < 256)) {
        try {
          o.prompt = utf8.decode(Uint8Array.from(r.prompt));
        } catch {
          // Not valid UTF-8 (a slice that cuts a character): the ids stay as they are.
        }
      }
      return JSON.stringify(o) + '\n';
    })
    .join('');
}
