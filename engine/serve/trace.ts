/**
 * Request traces for a serving loop: Poisson arrivals with ShareGPT- and Alpaca-like lengths (vLLM, Kwon et al.,
 * SOSP 2023, section 6.1) and a shared-prefix few-shot workload (section 6.4). JSONL files are in trace_file.ts,
 * statistics in trace_stats.ts.
 */
import { ServelabError } from '../errors.ts';
import { logNormalLength } from '../kv/sharegpt.ts';
import { mobyDick } from '../train/corpus.ts';
import { Rng } from '../train/rng.ts';

/** One request as a serving loop receives it. */
export interface TraceRequest {
  id: string;
  /** When the request arrives, in milliseconds from the start of the trace. */
  arrivalMs: number;
  /** Token ids; for the built-in byte-level model, bytes 0..255 (256 is BOS, 257 EOS). */
  prompt: number[];
  /** Tokens to generate per sample (the drawn output length: the request stops there, not at EOS). */
  maxTokens: number;
  /** Parallel samples of one prompt, sharing its KV blocks (section 6.3); default 1. */
  n?: number;
}

export type TraceErrorReason =
  /** An option out of range: rate <= 0, a negative count, context < 2, both or neither of count and durationS. */
  | 'invalid-option'
  /** The text cannot hold the prompts or prefixes asked for. */
  | 'text-too-short'
  /** A trace file that cannot be read. */
  | 'unreadable'
  /** saveTrace was given a request that loadTrace would refuse. */
  | 'invalid-request';

export class TraceError extends ServelabError {
  override name = 'TraceError';
  constructor(
    readonly op: string,
    readonly reason: TraceErrorReason,
    detail: string,
  ) {
    super(`${op}: ${detail} (${reason})`);
  }
}

/**
 * The vLLM paper's datasets (section 6.1, Fig. 11), lengths in OPT tokens, for models with a 2048-token context.
 * ShareGPT (conversations users shared from ChatGPT): mean input 161.31, mean output 337.99, long-tailed, 8.4x
 * longer inputs and 5.8x longer outputs than Alpaca "with higher variance". Alpaca (instructions and answers made
 * with GPT-3.5): mean input 19.31, mean output 58.45, short. Both are drawn here as log-normals of these means with
 * sigma 1, a modelling choice rather than a fit: at sigma 1 the p99 is about 6x the mean (10x the median).
 */
export const DATASETS = {
  sharegpt: { meanInput: 161.31, meanOutput: 337.99 },
  alpaca: { meanInput: 19.31, meanOutput: 58.45 },
} as const;
export type Dataset = keyof typeof DATASETS;

/** The context of the paper's OPT models, which its lengths are measured against. */
export const PAPER_CONTEXT = 2048;

/**
 * A dataset's means for a model with `context` tokens: both datasets are scaled by the same factor, by default
 * context / 2048, so each keeps its share of the context and Alpaca stays 8.4x shorter in input and 5.8x in output
 * than ShareGPT, as in the paper, where that gap is why Alpaca batches more requests. At the built-in model's 256:
 * ShareGPT 20.16 in, 42.25 out; Alpaca 2.41 in, 7.31 out (rounding and the floor of 1 raise short means).
 */
export function scaledMeans(dataset: Dataset, context: number, scale = context / PAPER_CONTEXT): { meanInput: number; meanOutput: number; scale: number } {
  const d = DATASETS[dataset];
  return { meanInput: d.meanInput * scale, meanOutput: d.meanOutput * scale, scale };
}

/** No trace is built with more requests than this: a typo in rate or durationS should fail, not fill the heap. */
export const MAX_TRACE_REQUESTS = 1_000_000;

export interface PoissonTraceOptions {
  /** Requests per second. Infinity: every request arrives at 0 (an offline batch; needs count). */
  rate: number;
  /** The first `count` arrivals; give this or durationS. */
  count?: number;
  /** Every arrival in [0, durationS) seconds; give this or count. */
  durationS?: number;
  dataset: Dataset;
  /** The model's context: each request's input + output fits in it. */
  context: number;
  seed: number;
  /** Prompts are slices of these bytes; default the held-out part of Moby-Dick, text the built-in model never trained on. */
  text?: Uint8Array;
  /** Scale of the paper's lengths; default context / 2048. */
  scale?: number;
  /** Standard deviation of log(length); default 1. */
  sigma?: number;
  /** Parallel samples per request; default 1. */
  n?: number;
}

/**
 * Stream j of a seed: mulberry32's state advances by 0x6D2B79F5 a draw, so seed s + m * 0x6D2B79F5 (mod 2^32) is s's
 * own stream from draw m on. With m = j * 2^30, streams 0, 1, 2 (arrivals, lengths, offsets) are disjoint stretches
 * of one sequence, each 2^30 draws long, and the arrivals of a seed are the same whatever the lengths are.
 */
function stream(seed: number, j: number): Rng {
  return new Rng(((seed | 0) + Math.imul(j * 2 ** 30, 0x6d2b79f5)) | 0);
}

function check(op: string, ok: boolean, detail: string): void {
  if (!ok) throw new TraceError(op, 'invalid-option', detail);
}

export const isCount = (x: number | undefined, min: number) => Number.isSafeInteger(x) && (x as number) >= min;

/**
 * Arrival times in ms of a Poisson process: gaps are exponential, -ln(1 - u) / rate seconds, so the number of
 * arrivals in any window of T seconds is Poisson(rate * T). The first arrival comes after one gap, not at 0.
 */
function poissonArrivals(op: string, rate: number, count: number | undefined, durationS: number | undefined, seed: number): number[] {
  check(op, rate > 0, `rate must be > 0 requests per second, got ${rate}`);
  check(op, Number.isSafeInteger(seed), `seed must be an integer, got ${seed}`);
  check(op, (count === undefined) !== (durationS === undefined), 'give exactly one of count and durationS');
  if (count !== undefined) {
    check(op, isCount(count, 0) && count <= MAX_TRACE_REQUESTS, `count must be an integer in [0, ${MAX_TRACE_REQUESTS}], got ${count}`);
  } else {
    check(op, Number.isFinite(durationS) && (durationS as number) >= 0, `durationS must be a finite number >= 0, got ${durationS}`);
    check(op, rate * (durationS as number) <= MAX_TRACE_REQUESTS, `rate * durationS = ${rate * (durationS as number)} requests expected, over ${MAX_TRACE_REQUESTS}`);
  }
  const rng = stream(seed, 0);
  const endMs = durationS === undefined ? Infinity : durationS * 1000;
  const out: number[] = [];
  let t = 0;
  while (out.length < (count ?? Infinity)) {
    t += rate === Infinity ? 0 : (-Math.log(1 - rng.uniform()) * 1000) / rate;
    if (t >= endMs) break;
    out.push(t);
  }
  return out;
}

function defaultText(text: Uint8Array | undefined): Uint8Array {
  return text ?? mobyDick().heldOut;
}

/**
 * An open-loop workload as in the paper's section 6.1: Poisson arrivals, each request's input and output lengths
 * drawn log-normal with the dataset's scaled means, then cut to fit the context: input to at most context - 1,
 * output to at most context - input, so every request prefills one token or more and generates one or more. The
 * prompt is the text's `input` bytes from a uniformly drawn offset. The same options give the same trace.
 */
export function poissonTrace(opts: PoissonTraceOptions): TraceRequest[] {
  const op = 'poissonTrace';
  const { rate, count, durationS, dataset, context, seed, sigma = 1, n = 1 } = opts;
  check(op, Object.hasOwn(DATASETS, dataset), `dataset must be one of ${Object.keys(DATASETS).join(', ')}, got ${dataset}`);
  check(op, isCount(context, 2), `context must be an integer >= 2 (one prompt and one output token), got ${context}`);
  check(op, isCount(n, 1), `n must be a positive integer, got ${n}`);
  check(op, sigma > 0 && Number.isFinite(sigma), `sigma must be a finite number > 0, got ${sigma}`);
  const { meanInput, meanOutput, scale } = scaledMeans(dataset, context, opts.scale);
  check(op, scale > 0 && Number.isFinite(scale), `scale must be a finite number > 0, got ${scale}`);
  const arrivals = poissonArrivals(op, rate, count, durationS, seed);
  const text = defaultText(opts.text);
  if (text.length < context - 1) {
    throw new TraceError(op, 'text-too-short', `prompts run to context - 1 = ${context - 1} bytes, the text has ${text.length}`);
  }
  const lengths = stream(seed, 1);
  const offsets = stream(seed, 2);
  return arrivals.map((arrivalMs, i) => {
    const input = Math.min(logNormalLength(lengths, meanInput, sigma), context - 1);
    const maxTokens = Math.min(logNormalLength(lengths, meanOutput, sigma), context - input);
    const start = offsets.uniformInt(text.length - input + 1);
    const req: TraceRequest = { id: `req-${i}`, arrivalMs, prompt: Array.from(text.subarray(start, start + input)), maxTokens };
    if (n !== 1) req.n = n;
    return req;
  });
}

export interface SharedPrefixTraceOptions {
  /** Requests per second; Infinity: all at 0. */
  rate: number;
  count: number;
  /** Length of each shared prefix (the paper's one-shot WMT16 prefix is 80 tokens, its five-shot one 341). */
  prefixTokens: number;
  /** Length of each request's own part after the prefix; 0 makes every request of a prefix identical. */
  suffixTokens: number;
  outputTokens: number;
  /** How many distinct prefixes the requests pick from, uniformly; default 4. */
  numPrefixes?: number;
  /** Parallel samples per request; default 1. */
  n?: number;
  seed: number;
  /** Default: the held-out part of Moby-Dick. */
  text?: Uint8Array;
  /** When given, prefix + suffix + output must fit in it. */
  context?: number;
}

/**
 * A few-shot workload (section 6.4): each request is one of `numPrefixes` long prefixes (the instruction and
 * examples) followed by a short suffix of its own. Prefix k is a slice from the k-th of numPrefixes equal parts of
 * the text, so prefixes never overlap; the id `p<k>-<i>` names the prefix. Arrivals are those of a poissonTrace
 * with the same rate and seed.
 */
export function sharedPrefixTrace(opts: SharedPrefixTraceOptions): TraceRequest[] {
  const op = 'sharedPrefixTrace';
  const { rate, count, prefixTokens, suffixTokens, outputTokens, numPrefixes = 4, n = 1, seed, context } = opts;
  check(op, isCount(prefixTokens, 1), `prefixTokens must be a positive integer, got ${prefixTokens}`);
  check(op, isCount(suffixTokens, 0), `suffixTokens must be a non-negative integer, got ${suffixTokens}`);
  check(op, isCount(outputTokens, 1), `outputTokens must be a positive integer, got ${outputTokens}`);
  check(op, isCount(numPrefixes, 1), `numPrefixes must be a positive integer, got ${numPrefixes}`);
  check(op, isCount(n, 1), `n must be a positive integer, got ${n}`);
  if (context !== undefined) {
    check(op, isCount(context, 2), `context must be an integer >= 2, got ${context}`);
    const total = prefixTokens + suffixTokens + outputTokens;
    check(op, total <= context, `prefix + suffix + output = ${total} tokens do not fit the context of ${context}`);
  }
  const arrivals = poissonArrivals(op, rate, count, undefined, seed);
  const text = defaultText(opts.text);
  const part = Math.floor(text.length / numPrefixes);
  if (part < prefixTokens || text.length < suffixTokens) {
    throw new TraceError(op, 'text-too-short', `${numPrefixes} disjoint prefixes of ${prefixTokens} bytes and suffixes of ${suffixTokens} need more than the text's ${text.length}`);
  }
  const picks = stream(seed, 1);
  const offsets = stream(seed, 2);
  const prefixes = Array.from({ length: numPrefixes }, (_, k) => {
    const start = k * part + offsets.uniformInt(part - prefixTokens + 1);
    return Array.from(text.subarray(start, start + prefixTokens));
  });
  return arrivals.map((arrivalMs, i) => {
    const k = picks.uniformInt(numPrefixes);
    const start = offsets.uniformInt(text.length - suffixTokens + 1);
    const prompt = prefixes[k].concat(Array.from(text.subarray(start, start + suffixTokens)));
    const req: TraceRequest = { id: `p${k}-${i}`, arrivalMs, prompt, maxTokens: outputTokens };
    if (n !== 1) req.n = n;
    return req;
  });
}
