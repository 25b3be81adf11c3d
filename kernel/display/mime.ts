/**
 * Any value to a Jupyter MIME bundle. A value may describe itself with a method under `Symbol.for('servelab.mime')`
 * (or Deno's `Symbol.for('Jupyter.display')`, the same contract) returning `{ mimetype: data }`.
 */
import { inspect } from 'node:util';
import type { MimeBundle } from './sink.ts';
import { groupDigits } from './format.ts';
import { isTensorLike, tensorBundle } from './tensor_view.ts';

/** servelab's convention: `[MIME]() { return { 'text/plain': ..., 'text/html': ... } }`. */
export const MIME: unique symbol = Symbol.for('servelab.mime');
/** Deno's kernel convention; honoured too so that objects written for Deno display here unchanged. */
export const JUPYTER_DISPLAY: unique symbol = Symbol.for('Jupyter.display');

export interface Displayable {
  [MIME](): MimeBundle;
}

/**
 * Sizes past which an output is cut. A frontend given tens of megabytes of text freezes, and the saved
 * notebook keeps every byte; the notice says how much was cut so that nobody mistakes the rest for all of it.
 */
export const displayLimits = {
  /** UTF-8 bytes of text/plain kept. */
  textPlainBytes: 1_000_000,
  /** A plain object's application/json is left out (text/plain still shows it) past this many bytes of JSON. */
  jsonBytes: 1_000_000,
};

const INSPECT = { colors: false, depth: 4, maxArrayLength: 100, maxStringLength: 10_000, breakLength: 100 } as const;

export function toMimeBundle(x: unknown): MimeBundle {
  return truncateText(rawBundle(x));
}

function rawBundle(x: unknown): MimeBundle {
  const own = ownBundle(x);
  if (own) return own;
  if (typeof x === 'string') return { 'text/plain': x };
  if (isTensorLike(x)) return tensorBundle(x);
  const text = inspect(x, INSPECT);
  if (isPlainContainer(x)) {
    const json = jsonCopy(x);
    if (json !== undefined) return { 'text/plain': text, 'application/json': json };
  }
  return { 'text/plain': text };
}

function ownBundle(x: unknown): MimeBundle | null {
  if ((typeof x !== 'object' && typeof x !== 'function') || x === null) return null;
  const o = x as Record<symbol, unknown>;
  const method = typeof o[MIME] === 'function' ? o[MIME] : typeof o[JUPYTER_DISPLAY] === 'function' ? o[JUPYTER_DISPLAY] : null;
  if (!method) return null;
  const b = (method as () => unknown).call(x);
  if (typeof b !== 'object' || b === null || Array.isArray(b) || b instanceof Promise) {
    throw new TypeError(`a display method must return a MIME bundle object ({ 'text/plain': ... }), got ${inspect(b, { depth: 0 })}`);
  }
  const bundle = { ...(b as MimeBundle) };
  // Every frontend can show text/plain, and some (a terminal, nbconvert to text) show nothing else.
  if (!('text/plain' in bundle)) bundle['text/plain'] = inspect(x, { ...INSPECT, depth: 1 });
  return bundle;
}

function isPlainContainer(x: unknown): x is object {
  if (Array.isArray(x)) return true;
  if (typeof x !== 'object' || x === null) return false;
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/**
 * A JSON copy when the value survives JSON unchanged (plain objects and arrays of strings, finite numbers,
 * booleans and null, no cycles); undefined when it would not, or when it is too large to be worth a tree view.
 */
function jsonCopy(x: object): unknown {
  const seen = new Set<object>();
  let nodes = 0;
  const safe = (v: unknown, depth: number): boolean => {
    if (++nodes > 200_000 || depth > 100) return false;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return true;
    if (typeof v === 'number') return Number.isFinite(v);
    if (!isPlainContainer(v) || seen.has(v)) return false;
    seen.add(v);
    const ok = Array.isArray(v)
      ? v.length === Object.keys(v).length && v.every((e) => safe(e, depth + 1))
      : Object.values(v).every((e) => safe(e, depth + 1));
    seen.delete(v);
    return ok;
  };
  if (!safe(x, 0)) return undefined;
  const s = JSON.stringify(x);
  return Buffer.byteLength(s) > displayLimits.jsonBytes ? undefined : JSON.parse(s);
}

/** Cuts text/plain past displayLimits.textPlainBytes (on a character boundary) and says how much was cut. */
export function truncateText(bundle: MimeBundle, limit = displayLimits.textPlainBytes): MimeBundle {
  const text = bundle['text/plain'];
  if (typeof text !== 'string' || text.length <= limit / 4) return bundle;
  const total = Buffer.byteLength(text);
  if (total <= limit) return bundle;
  const kept = Buffer.from(text).subarray(0, limit).toString('utf8').replace(/\uFFFD$/, '');
  const keptBytes = Buffer.byteLength(kept);
  const notice =
    `\n... [output truncated: ${groupDigits(total - keptBytes)} of ${groupDigits(total)} bytes not shown; ` +
    `the limit is ${groupDigits(limit)} bytes (displayLimits.textPlainBytes)]`;
  return { ...bundle, 'text/plain': kept + notice };
}
