/** A ShareGPT-like workload: log-normal prompt and output lengths with the means the vLLM paper reports (161 and 338 tokens). */
import { Rng } from '../train/rng.ts';
import { checkCount, KvCacheError } from './errors.ts';
import type { SeqLength } from './waste.ts';

export interface RequestLengths {
  input: number;
  output: number;
}

export interface ShareGptLikeOptions {
  meanInput?: number;
  meanOutput?: number;
  /** Standard deviation of log(length): 1 gives the long tail of chat traffic (a few requests 5-10x the mean). */
  sigma?: number;
  /** Requests are cut so input + output fits the model's context, as the paper's OPT models (2048). */
  maxSeqLen?: number;
}

/**
 * One length from a seeded stream: exp(N(mu, sigma)) rounded, at least 1, where mu = ln(mean) - sigma^2 / 2 makes the
 * log-normal's mean the requested one (before rounding). Takes one normal from `rng`.
 */
export function logNormalLength(rng: Rng, mean: number, sigma: number): number {
  return Math.max(1, Math.round(Math.exp(rng.normal(Math.log(mean) - (sigma * sigma) / 2, sigma))));
}

/** `n` requests from a seeded stream: input, then output, each a logNormalLength, then the context cut. */
export function shareGptLikeLengths(n: number, seed: number, opts: ShareGptLikeOptions = {}): RequestLengths[] {
  checkCount('shareGptLikeLengths', 'n', n, 0);
  const { meanInput = 161, meanOutput = 338, sigma = 1, maxSeqLen = 2048 } = opts;
  checkCount('shareGptLikeLengths', 'maxSeqLen', maxSeqLen, 1);
  const rng = new Rng(seed);
  const draw = (mean: number) => logNormalLength(rng, mean, sigma);
  return Array.from({ length: n }, () => {
    const input = Math.min(draw(meanInput), maxSeqLen);
    const output = Math.min(draw(meanOutput), maxSeqLen - input);
    return { input, output };
  });
}

export interface ShareGptLikeBatchOptions extends ShareGptLikeOptions {
  /**
   * 'requests' (default): the first n requests of the stream, each caught at a uniform point of its output.
   * 'running': the batch a server holds at a random moment of a long run. A request stays in that batch for as many
   * iterations as it has output tokens, so it is found there with probability proportional to its output length (the
   * inspection paradox: long requests are over-represented in any snapshot); what a time average over a serving run,
   * as the vLLM paper's Fig. 2, sees.
   */
  sample?: 'requests' | 'running';
}

/**
 * A batch caught mid-decode: each request has produced a uniform 0..output of its tokens, so `length` = input +
 * produced and `finalLength` = input + output (what the accounting needs to split reservation).
 */
export function shareGptLikeBatch(n: number, seed: number, opts: ShareGptLikeBatchOptions = {}): SeqLength[] {
  const reqs = opts.sample === 'running' ? runningRequests(n, seed, opts) : shareGptLikeLengths(n, seed, opts);
  const rng = new Rng(seed ^ 0x5eed);
  return reqs.map(({ input, output }) => ({ length: input + rng.uniformInt(output + 1), finalLength: input + output }));
}

/** n requests drawn with probability proportional to their output length: each of the stream's kept with output / maxSeqLen. */
function runningRequests(n: number, seed: number, opts: ShareGptLikeOptions): RequestLengths[] {
  checkCount('shareGptLikeBatch', 'n', n, 0);
  const maxSeqLen = opts.maxSeqLen ?? 2048;
  const keep = new Rng(seed ^ 0x7a11);
  const out: RequestLengths[] = [];
  // Chunks of the stream, each seeded from the last, until n are kept (about maxSeqLen / mean output draws each).
  for (let chunk = 0; out.length < n; chunk++) {
    if (chunk === 64 && out.length === 0) {
      throw new KvCacheError('shareGptLikeBatch', 'invalid-argument', `no request of the stream has output tokens to be running with (maxSeqLen ${maxSeqLen} leaves none after the prompts)`);
    }
    for (const r of shareGptLikeLengths(Math.max(64, 4 * n), (seed + chunk * 0x9e3779b1) >>> 0, opts)) {
      if (keep.uniform() * maxSeqLen < r.output) out.push(r);
      if (out.length === n) break;
    }
  }
  return out;
}
