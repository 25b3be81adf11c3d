/**
 * Tree-based speculative decoding (SpecInfer, Miao et al., ASPLOS 2024): a draft proposes a token tree, the target
 * model verifies every node in ONE forward pass with tree attention (each node sees the cached prefix and its
 * ancestors), and greedy verification keeps the longest root-to-leaf path the target agrees with, plus one token of
 * the target's own. The output is exactly greedy decoding's; the tree's keys and values are stored once, shared along
 * the tree, instead of once per branch.
 */
import { ServelabError } from '../errors.ts';
import { currentSignal } from '../abort.ts';
import { Rng } from '../train/rng.ts';
import { generate, sampleToken, type Generation } from './generate.ts';
import { treeSize, type Draft, type TokenTree } from './draft.ts';
import type { LlamaModel } from './llama.ts';

export type SpeculativeErrorReason =
  /** A prompt, count, expansion config or slot count that is not usable. */
  | 'invalid-argument'
  /** Prompt and new tokens past the model's context. */
  | 'too-long'
  /** The full tree does not fit after the prompt, in the model's context or in the cache's slots. */
  | 'tree-too-large'
  /** The cache's slots cannot hold the prompt and the new tokens. */
  | 'cache-too-small'
  /** The draft proposed a tree the step cannot verify (a token out of the vocabulary, a bad parent, too many nodes). */
  | 'bad-draft';

/** A speculative run that cannot start, or a draft that proposed something the target cannot verify. */
export class SpeculativeError extends ServelabError {
  override name = 'SpeculativeError';
  constructor(
    readonly reason: SpeculativeErrorReason,
    detail: string,
  ) {
    super(`speculativeGenerate: ${detail} (${reason})`);
  }
}

export interface SpeculativeOptions {
  /** New tokens to generate (fewer when the target emits its EOS token). */
  maxNewTokens: number;
  /** SpecInfer's expansion config <k1, ..., kd> of the draft's tree; default [2, 2, 1]. */
  expansion?: readonly number[];
  /** Token slots of the target's KV cache; default the most the run can hold at once. */
  numSlots?: number;
  /** Called after each verification step, for a live chart. */
  onStep?: (s: SpeculativeStep) => void;
  /** Stops at the next step, keeping the tokens so far (default: the running cell's interrupt). */
  signal?: AbortSignal;
}

/** KV bytes of one verified tree. */
export interface TreeKv {
  /** Tokens in the tree. */
  nodes: number;
  /** Root-to-leaf branches. */
  leaves: number;
  bytesPerToken: number;
  /** The tree stored once: nodes x bytesPerToken (SpecInfer's tree attention). */
  treeBytes: number;
  /** Each branch stored on its own, as sequence-based verification does: sum over leaves of path length x bytesPerToken. */
  branchBytes: number;
}

/** Greedy verification of a draft tree. */
export interface Verification {
  /** Accepted draft nodes, root first (indices into the tree). */
  path: number[];
  /** The target's token after the last accepted node: emitted too, and fed in the next step. */
  bonus: number;
}

export interface SpeculativeStep {
  step: number;
  /** Draft nodes verified (the target's pending token, the tree's root, not counted). */
  draftNodes: number;
  /** Draft tokens accepted. */
  accepted: number;
  /** Tokens the step emitted: the accepted ones and the bonus (cut at maxNewTokens or EOS). */
  tokens: number[];
  draftMs: number;
  verifyMs: number;
  /** The verified tree (pending token + draft nodes): treeBytes read from cache.memory() during the step. */
  kv: TreeKv;
}

export interface SpeculativeResult {
  /** New token ids: exactly greedy decoding's. */
  tokens: number[];
  promptTokens: number;
  stopReason: 'length' | 'eos' | 'interrupted';
  /** Verification steps (target forward passes after the prefill). */
  steps: number;
  /** Draft tokens accepted at each step. */
  acceptedPerStep: number[];
  meanAccepted: number;
  /** histogram[a]: steps that accepted a draft tokens. */
  acceptedHistogram: number[];
  /** Tokens emitted per verification step: accepted + 1, less what maxNewTokens or EOS cut from the last step. */
  meanTokensPerStep: number;
  prefillMs: number;
  draftMs: number;
  verifyMs: number;
  /** Wall time of the whole run, prefill included. */
  totalMs: number;
  /** New tokens per second after the prefill (the prefill's token excluded), as generate() counts them. */
  tokensPerSec: number;
  /** KV bytes of the verified trees, summed over the steps, and of the largest tree. */
  kv: { bytesPerToken: number; treeBytes: number; branchBytes: number; largest: TreeKv | null };
  log: SpeculativeStep[];
}

const GREEDY = { temperature: 0, topK: 0, topP: 1 } as const;
/** The default expansion config: two candidates at each of the first two levels, one at the third (10 nodes). */
export const DEFAULT_EXPANSION: readonly number[] = [2, 2, 1];

/**
 * KV bytes of a token tree (`parents` as in TokenTree): stored once per node, against each root-to-leaf branch stored
 * separately.
 */
export function treeKvBytes(parents: readonly number[], bytesPerToken: number): TreeKv {
  const depth: number[] = [];
  const hasChild = new Uint8Array(parents.length);
  parents.forEach((p, i) => {
    if (!Number.isInteger(p) || p < -1 || p >= i) throw new SpeculativeError('invalid-argument', `treeKvBytes: parents[${i}] = ${p} is not -1 or an earlier node`);
    depth[i] = p < 0 ? 1 : depth[p] + 1;
    if (p >= 0) hasChild[p] = 1;
  });
  let leaves = 0;
  let branchTokens = 0;
  parents.forEach((_, i) => {
    if (hasChild[i]) return;
    leaves++;
    branchTokens += depth[i];
  });
  return { nodes: parents.length, leaves, bytesPerToken, treeBytes: parents.length * bytesPerToken, branchBytes: branchTokens * bytesPerToken };
}

/**
 * Greedy verification (SpecInfer's VerifyGreedy): from the context's end, accept the child whose token is the
 * target's greedy choice at its parent (`targetNext(-1)` after the context, `targetNext(i)` after node i), until no
 * child matches; the target's choice there is the bonus token.
 */
export function verifyGreedy(tree: TokenTree, targetNext: (node: number) => number): Verification {
  const path: number[] = [];
  let at = -1;
  for (;;) {
    const want = targetNext(at);
    const child = tree.parents.findIndex((p, i) => p === at && tree.tokens[i] === want);
    if (child < 0) return { path, bonus: want };
    path.push(child);
    at = child;
  }
}

/** A draft's tree checked against what the step can verify. */
function checkTree(tree: TokenTree, maxNodes: number, vocabSize: number, draft: string): void {
  const n = tree.tokens.length;
  if (tree.parents.length !== n) throw new SpeculativeError('bad-draft', `the ${draft} draft gave ${n} tokens and ${tree.parents.length} parents`);
  if (n > maxNodes) throw new SpeculativeError('bad-draft', `the ${draft} draft gave ${n} nodes; the step has room for ${maxNodes}`);
  tree.parents.forEach((p, i) => {
    if (!Number.isInteger(p) || p < -1 || p >= i) throw new SpeculativeError('bad-draft', `the ${draft} draft's node ${i} has parent ${p}: not -1 or an earlier node`);
    const t = tree.tokens[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw new SpeculativeError('bad-draft', `the ${draft} draft proposed token ${t}, not in the vocabulary [0, ${vocabSize})`);
  });
}

function promptIds(model: LlamaModel, prompt: string | readonly number[]): number[] {
  if (typeof prompt !== 'string') return [...prompt];
  if (!model.tokenizer) throw new SpeculativeError('invalid-argument', 'this model has no tokenizer; pass token ids');
  return model.tokenizer.encode(prompt);
}

/**
 * Continues `prompt` greedily with the target `model`, `draft` proposing a token tree before each verification step.
 * The target's KV cache is token-level (one slot per token): the tree's nodes take one slot each, the accepted path's
 * slots stay as the sequence's next tokens (acceptTree) and the rest are freed. The tree of a step is rooted at the
 * target's pending token (emitted by the step before, not yet cached), so each step's pass yields at least that
 * token's successor.
 */
export async function speculativeGenerate(model: LlamaModel, draft: Draft, prompt: string | readonly number[], opts: SpeculativeOptions): Promise<SpeculativeResult> {
  const ids = promptIds(model, prompt);
  const P = ids.length;
  const ctx = model.cfg.maxPositions;
  const V = model.cfg.vocabSize;
  const n = opts.maxNewTokens;
  const expansion = opts.expansion ?? DEFAULT_EXPANSION;
  if (P === 0) throw new SpeculativeError('invalid-argument', 'the prompt is empty; it needs at least one token');
  if (!Number.isSafeInteger(n) || n < 1) throw new SpeculativeError('invalid-argument', `maxNewTokens must be a positive integer, got ${n}`);
  // The last new token is emitted, never cached, as in generate(): the sequence holds at most P + n - 1 tokens.
  if (P + n - 1 > ctx) throw new SpeculativeError('too-long', `a prompt of ${P} tokens and ${n} new tokens need ${P + n - 1} positions; the model's context is ${ctx} (at most ${ctx - P + 1} new tokens after this prompt)`);
  if (expansion.length === 0 || expansion.some((k) => !Number.isSafeInteger(k) || k < 1)) throw new SpeculativeError('invalid-argument', `expansion must be a non-empty list of positive integers, got [${expansion.join(', ')}]`);
  const nodes = treeSize(expansion);
  const config = `<${expansion.join(', ')}>`;
  if (P + 1 + nodes > ctx) throw new SpeculativeError('tree-too-large', `the tree ${config} has ${nodes} nodes; after a prompt of ${P} tokens and the pending token it needs ${P + 1 + nodes} positions, past the model's context of ${ctx}`);
  const numSlots = opts.numSlots ?? Math.min(ctx, P + n - 1 + nodes);
  if (!Number.isSafeInteger(numSlots) || numSlots < 1) throw new SpeculativeError('invalid-argument', `numSlots must be a positive integer, got ${numSlots}`);
  if (numSlots < P + 1 + nodes) throw new SpeculativeError('tree-too-large', `the tree ${config} has ${nodes} nodes; after a prompt of ${P} tokens and the pending token it needs ${P + 1 + nodes} slots, the cache has ${numSlots}`);
  if (numSlots < P + n - 1) throw new SpeculativeError('cache-too-small', `${n} new tokens after a prompt of ${P} need ${P + n - 1} slots, the cache has ${numSlots}`);

  const signal = opts.signal ?? currentSignal();
  const eos = model.tokenizer?.eosId ?? model.cfg.eosTokenId;
  const rng = new Rng(0); // greedy picks never draw from it
  const out: number[] = [];
  const log: SpeculativeStep[] = [];
  let stopReason: SpeculativeResult['stopReason'] = 'length';
  // Emits one token; false once the run is over (EOS, never emitted, as generate() does; or maxNewTokens).
  const emit = (t: number, into: number[]): boolean => {
    if (t === eos) {
      stopReason = 'eos';
      return false;
    }
    out.push(t);
    into.push(t);
    return out.length < n;
  };
  const cache = await model.createCache({ layout: 'token', numSlots });
  const bpt = cache.bytesPerToken;
  const t0 = performance.now();
  let prefillMs = 0;
  let draftMs = 0;
  let verifyMs = 0;
  try {
    const pre = await model.forward(cache, [{ seq: 0, tokens: ids }]);
    const first = sampleToken(pre.logits.toFloat32(), GREEDY, rng);
    pre.logits.dispose();
    prefillMs = performance.now() - t0;
    let going = emit(first, []);
    while (going) {
      if (signal?.aborted) {
        stopReason = 'interrupted';
        break;
      }
      const L = cache.length(0);
      const free = cache.memory().freeBytes / bpt;
      // Deeper than the tokens still wanted is wasted; near the context's end or a full pool the tree is cut.
      const req = { expansion: expansion.slice(0, n - out.length - 1), maxNodes: Math.max(0, Math.min(ctx - L, free) - 1) };
      const td = performance.now();
      const tree = await draft.propose([...ids, ...out], req);
      checkTree(tree, req.maxNodes, V, draft.name);
      const tv = performance.now();
      draftMs += tv - td;
      const pending = out[out.length - 1];
      const parents = [-1, ...tree.parents.map((p) => p + 1)];
      const before = cache.memory().usedBytes;
      const r = await model.forward(cache, [{ seq: 0, tokens: [pending, ...tree.tokens], parents }]);
      const stored = cache.memory().usedBytes - before;
      const logits = r.logits.toFloat32();
      r.logits.dispose();
      // Row 0 is the pending token's (the context's end); row i + 1 is draft node i's.
      const v = verifyGreedy(tree, (i) => sampleToken(logits.subarray((i + 1) * V, (i + 2) * V), GREEDY, rng));
      cache.acceptTree(0, [0, ...v.path.map((i) => i + 1)]);
      verifyMs += performance.now() - tv;
      const tokens: number[] = [];
      for (const t of [...v.path.map((i) => tree.tokens[i]), v.bonus]) if (!(going = emit(t, tokens))) break;
      const kv = { ...treeKvBytes(parents, bpt), treeBytes: stored };
      const s: SpeculativeStep = { step: log.length, draftNodes: tree.tokens.length, accepted: v.path.length, tokens, draftMs: tv - td, verifyMs: performance.now() - tv, kv };
      log.push(s);
      opts.onStep?.(s);
    }
  } finally {
    cache.dispose();
  }
  const totalMs = performance.now() - t0;
  const acceptedPerStep = log.map((s) => s.accepted);
  const acceptedHistogram = new Array<number>(expansion.length + 1).fill(0);
  for (const a of acceptedPerStep) acceptedHistogram[a]++;
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  const largest = log.reduce<TreeKv | null>((m, s) => (!m || s.kv.nodes > m.nodes ? s.kv : m), null);
  return {
    tokens: out,
    promptTokens: P,
    stopReason,
    steps: log.length,
    acceptedPerStep,
    meanAccepted: mean(acceptedPerStep),
    acceptedHistogram,
    meanTokensPerStep: mean(log.map((s) => s.tokens.length)),
    prefillMs,
    draftMs,
    verifyMs,
    totalMs,
    tokensPerSec: out.length > 1 ? (out.length - 1) / ((totalMs - prefillMs) / 1000) : 0,
    kv: { bytesPerToken: bpt, treeBytes: log.reduce((a, s) => a + s.kv.treeBytes, 0), branchBytes: log.reduce((a, s) => a + s.kv.branchBytes, 0), largest },
    log,
  };
}

export interface SpeedupResult {
  greedy: Generation;
  speculative: SpeculativeResult;
  /** The two runs produced the same tokens (they must). */
  identical: boolean;
  /** speculative.tokensPerSec / greedy.tokensPerSec. */
  speedup: number;
}

/**
 * Plain greedy decoding (generate(), temperature 0) and speculative decoding of the same prompt, one after the
 * other in this process, each after a short warm-up run that builds its step graphs, so neither pays for compiling.
 */
export async function compareWithGreedy(model: LlamaModel, draft: Draft, prompt: string | readonly number[], opts: SpeculativeOptions & { warmup?: boolean }): Promise<SpeedupResult> {
  const ids = promptIds(model, prompt);
  if (opts.warmup ?? true) {
    const short = Math.min(opts.maxNewTokens, (opts.expansion ?? DEFAULT_EXPANSION).length + 2);
    await generate(model, ids, { maxTokens: short, temperature: 0 });
    await speculativeGenerate(model, draft, ids, { ...opts, maxNewTokens: short, onStep: undefined });
  }
  const greedy = await generate(model, ids, { maxTokens: opts.maxNewTokens, temperature: 0, signal: opts.signal });
  const speculative = await speculativeGenerate(model, draft, ids, opts);
  const identical = greedy.tokens.length === speculative.tokens.length && greedy.tokens.every((t, i) => t === speculative.tokens[i]);
  return { greedy, speculative, identical, speedup: greedy.tokensPerSec > 0 ? speculative.tokensPerSec / greedy.tokensPerSec : 0 };
}
