/** A ShareGPT-like workload: log-normal prompt and output lengths with the means the vLLM paper reports (161 and 338 tokens). */
import { Rng } from '../train/rng.ts';
import { checkCount } from './errors.ts';
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

/**
 * A running batch caught mid-decode: each request has produced a uniform 0..output of its tokens, so
 * `length` = input + produced and `finalLength` = input + output (what the accounting needs to split reservation).
 */
export function shareGptLikeBatch(n: number, seed: number, opts: ShareGptLikeOptions = {}): SeqLength[] {
  const reqs = shareGptLikeLengths(n, seed, opts);
  const rng = new Rng(seed ^ 0x5eed);
  return reqs.map(({ input, output }) => ({ length: input + rng.uniformInt(output + 1), finalLength: input + output }));
}
