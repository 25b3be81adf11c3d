/**
 * Draft models for speculative decoding: small, cheap predictors that propose a token tree for the target model to
 * verify (SpecInfer, Miao et al., ASPLOS 2024). A tree grows level by level from SpecInfer's expansion config
 * <k1, ..., kd>: every node at depth i gets its draft's k_{i+1} most likely next tokens as children. Two drafts: a byte
 * n-gram of the corpus, and the target's own first layers with its final norm and head (early exit: LayerSkip,
 * Elhoushi et al. 2024; Draft & Verify, Zhang et al. 2024).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ServelabError } from '../errors.ts';
import type { Device } from '../device/device.ts';
import { bf16ArrayToFp32 } from '../dtype/bf16.ts';
import { fp16ArrayToFp32 } from '../dtype/fp16.ts';
import { openCheckpoint } from '../io/safetensors.ts';
import { loadTokenizer } from '../io/tokenizer.ts';
import type { PoolKvCache } from '../kv/pool_cache.ts';
import { fitNgram, NUM_BYTES, type NgramModel, type NgramOrder } from '../train/trigram.ts';
import type { LoadOptions } from './checkpoint.ts';
import type { LlamaConfig } from './config.ts';
import { loadLlamaConfig } from './hf_config.ts';
import { LlamaModel, type ModelOptions, type WeightSource } from './llama.ts';

/** A token tree after a context: parents[i] is the index of token i's parent, or -1 for a child of the context's last token. */
export interface TokenTree {
  /** Token ids in topological order (every parent before its children). */
  tokens: number[];
  parents: number[];
}

/** What a draft is asked for. */
export interface TreeRequest {
  /** SpecInfer's expansion config: a node at depth i gets up to expansion[i] children (its draft's top candidates). */
  expansion: readonly number[];
  /** Nodes at most; the tree is grown breadth first, so a capped tree is the first maxNodes nodes of the full one. */
  maxNodes: number;
}

/** A draft model: proposes the token tree that one verification step of the target checks. */
export interface Draft {
  readonly name: string;
  /** A tree continuing `context` (prompt and every token generated so far), grown as `req` says. */
  propose(context: readonly number[], req: TreeRequest): Promise<TokenTree>;
  /** Frees what the draft holds on the device (its KV cache; a model it owns). */
  dispose(): void;
}

/** Nodes of the full tree an expansion config grows: k1 + k1 k2 + ... + k1 ... kd. */
export function treeSize(expansion: readonly number[]): number {
  let level = 1;
  let total = 0;
  for (const k of expansion) total += level *= k;
  return total;
}

/**
 * The `k` largest entries of `row` among indices below `limit`, largest first; ties go to the lower index, as the
 * greedy pick of sampleToken does, so top-1 is exactly the argmax.
 */
export function topTokens(row: ArrayLike<number>, k: number, limit = row.length): number[] {
  const top: number[] = [];
  if (k < 1) return top;
  for (let v = 0; v < limit; v++) {
    if (top.length === k && !(row[v] > row[top[k - 1]])) continue;
    let i = top.length;
    while (i > 0 && row[v] > row[top[i - 1]]) i--;
    top.splice(i, 0, v);
    if (top.length > k) top.pop();
  }
  return top;
}

/**
 * Grows a tree breadth first. `rank(frontier, tree, k)` gives, for each frontier node (-1: the context's last token),
 * its candidate next tokens best first, at most k; the tree takes them in order until maxNodes.
 */
export async function growTree(
  req: TreeRequest,
  rank: (frontier: readonly number[], tree: TokenTree, k: number) => Promise<readonly (readonly number[])[]> | readonly (readonly number[])[],
): Promise<TokenTree> {
  const tree: TokenTree = { tokens: [], parents: [] };
  let frontier = [-1];
  for (const k of req.expansion) {
    if (frontier.length === 0 || tree.tokens.length >= req.maxNodes) break;
    const ranked = await rank(frontier, tree, k);
    const next: number[] = [];
    frontier.forEach((f, i) => {
      for (const t of ranked[i].slice(0, k)) {
        if (tree.tokens.length >= req.maxNodes) return;
        next.push(tree.tokens.length);
        tree.tokens.push(t);
        tree.parents.push(f);
      }
    });
    frontier = next;
  }
  return tree;
}

/** The tokens from the tree's root down to node i, i included. */
export function pathTokens(tree: TokenTree, i: number): number[] {
  const out: number[] = [];
  for (let a = i; a >= 0; a = tree.parents[a]) out.push(tree.tokens[a]);
  return out.reverse();
}

/**
 * A byte n-gram draft over the corpus: a node's children are the bytes that most often follow its last n - 1 bytes
 * in the training text; when that context was seen with fewer continuations than asked for, shorter contexts fill the
 * remaining places (backing off down to the unigram). Never proposes a byte it has not seen follow some context.
 */
export class NgramDraft implements Draft {
  readonly name: string;

  /** `models`: n-grams of orders 1, 2, ... (ascending, as fitNgram makes them); `vocabSize`: the target's (proposals stay below it). */
  constructor(
    readonly models: readonly NgramModel[],
    readonly vocabSize: number = NUM_BYTES,
  ) {
    if (models.length === 0 || models.some((m, i) => m.order !== i + 1)) throw new ServelabError(`NgramDraft: give the n-grams of orders 1..n in order, got orders [${models.map((m) => m.order).join(', ')}]`);
    this.name = `${models.length}-gram`;
  }

  /** Fits orders 1..order on `bytes` (the training split of the corpus, say). */
  static fit(bytes: Uint8Array, order: NgramOrder = 3, vocabSize: number = NUM_BYTES): NgramDraft {
    return new NgramDraft(Array.from({ length: order }, (_, i) => fitNgram(bytes, (i + 1) as NgramOrder)), vocabSize);
  }

  /** The k likeliest next tokens after `history`, longest seen context first. */
  next(history: readonly number[], k: number): number[] {
    const out: number[] = [];
    for (let o = this.models.length; o >= 1 && out.length < k; o--) {
      const m = this.models[o - 1];
      const ctxLen = o - 1;
      if (history.length < ctxLen) continue;
      let ctx = 0;
      let bytes = true;
      for (let j = history.length - ctxLen; j < history.length; j++) {
        bytes &&= history[j] < NUM_BYTES;
        ctx = ctx * NUM_BYTES + history[j];
      }
      if (!bytes || m.contextCounts[ctx] === 0) continue;
      const row = m.counts.subarray(ctx * NUM_BYTES, (ctx + 1) * NUM_BYTES);
      for (const t of topTokens(row, k + out.length, Math.min(NUM_BYTES, this.vocabSize))) {
        if (out.length < k && row[t] > 0 && !out.includes(t)) out.push(t);
      }
    }
    return out;
  }

  async propose(context: readonly number[], req: TreeRequest): Promise<TokenTree> {
    const tail = context.slice(-(this.models.length - 1) || context.length);
    return growTree(req, (frontier, tree, k) => frontier.map((f) => this.next([...tail, ...(f < 0 ? [] : pathTokens(tree, f))], k)));
  }

  dispose(): void {}
}

/**
 * Any LlamaModel as a draft (a truncated copy of the target, a smaller model of the same vocabulary, or the target
 * itself). It keeps the context in a token-layout KV cache of its own and catches up with the tokens the target
 * accepted. Level 1 of a tree comes from the context's last logits; each deeper level is one tree step over the nodes
 * grown so far (the cache takes one tree per step, so shallower levels are computed again), whose slots are then freed.
 */
export class ModelDraft implements Draft {
  readonly name: string;
  private cache: PoolKvCache | null = null;
  /** Tokens whose keys and values the draft's cache holds, and the logits after the last of them. */
  private cached: number[] = [];
  private lastLogits: Float32Array | null = null;

  constructor(
    readonly model: LlamaModel,
    private readonly opts: { name?: string; ownsModel?: boolean } = {},
  ) {
    this.name = opts.name ?? `${model.cfg.numLayers}-layer model`;
  }

  async propose(context: readonly number[], req: TreeRequest): Promise<TokenTree> {
    if (context.length === 0) throw new ServelabError(`${this.name} draft: the context is empty`);
    const V = this.model.cfg.vocabSize;
    const first = await this.sync(context);
    const cache = this.cache!;
    return growTree(req, async (frontier, tree, k) => {
      if (frontier.length === 1 && frontier[0] === -1) return [topTokens(first, k)];
      const r = await this.model.forward(cache, [{ seq: 0, tokens: tree.tokens, parents: tree.parents }]);
      cache.acceptTree(0, []);
      const logits = r.logits.toFloat32();
      r.logits.dispose();
      return frontier.map((f) => topTokens(logits.subarray(f * V, (f + 1) * V), k));
    });
  }

  /** Brings the cache to `context` (feeding what it lacks, or starting over when it holds another text); returns the last logits. */
  private async sync(context: readonly number[]): Promise<Float32Array> {
    this.cache ??= await this.model.createCache({ layout: 'token', numSlots: this.model.cfg.maxPositions });
    const same = this.cached.length <= context.length && this.cached.every((t, i) => t === context[i]);
    if (!same) {
      if (this.cache.has(0)) this.cache.free(0);
      this.cached = [];
      this.lastLogits = null;
    }
    if (this.cached.length === context.length && this.lastLogits) return this.lastLogits;
    const r = await this.model.forward(this.cache, [{ seq: 0, tokens: context.slice(this.cached.length) }]);
    this.lastLogits = r.logits.toFloat32();
    r.logits.dispose();
    this.cached = [...context];
    return this.lastLogits;
  }

  dispose(): void {
    this.cache?.dispose();
    this.cache = null;
    this.cached = [];
    this.lastLogits = null;
    if (this.opts.ownsModel) this.model.dispose();
  }
}

/** The first `numLayers` decoder layers of a model given by its weights, with its embedding, final norm and head. */
export async function truncatedModel(dev: Device, cfg: LlamaConfig, source: WeightSource, numLayers: number, opts: ModelOptions = {}): Promise<LlamaModel> {
  if (!Number.isInteger(numLayers) || numLayers < 1 || numLayers > cfg.numLayers) {
    throw new ServelabError(`truncatedModel: numLayers must be an integer in [1, ${cfg.numLayers}], got ${numLayers}`);
  }
  return LlamaModel.fromWeights(dev, { ...cfg, numLayers }, source, opts);
}

/** loadModel's folder, truncated to its first `numLayers` layers (only their weights are read). */
export async function loadTruncatedModel(dir: string, numLayers: number, opts: LoadOptions): Promise<LlamaModel> {
  const cfg = loadLlamaConfig(dir);
  const ck = openCheckpoint(dir);
  try {
    const source: WeightSource = (name) => {
      const t = ck.read(name);
      if (t.dtype === 'fp32') return t.data as Float32Array;
      return t.dtype === 'fp16' ? fp16ArrayToFp32(t.data as Uint16Array) : bf16ArrayToFp32(t.data as Uint16Array);
    };
    const model = await truncatedModel(opts.device, cfg, source, numLayers, opts);
    if (existsSync(join(dir, 'tokenizer.json'))) model.tokenizer = loadTokenizer(dir);
    return model;
  } finally {
    ck.close();
  }
}
