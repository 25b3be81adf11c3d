/**
 * Tree-based speculative decoding (SpecInfer): whatever the draft proposes, the tokens are exactly greedy decoding's
 * (generate() with temperature 0 on a static cache); acceptance is counted per step; the verified tree's KV bytes are
 * the nodes stored once, read from the cache during the step, against each branch stored on its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILTIN_DIR,
  compareWithGreedy,
  createDevice,
  generate,
  growTree,
  loadModel,
  loadTruncatedModel,
  ModelDraft,
  mobyDick,
  NgramDraft,
  speculativeGenerate,
  SpeculativeError,
  topTokens,
  treeKvBytes,
  treeSize,
  truncatedModel,
  verifyGreedy,
  type Device,
  type Draft,
  LlamaModel,
  type SpeculativeResult,
} from '../../../engine/index.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { randomWeights, TINY_LLAMA } from './tiny_config.ts';

const CFG = TINY_LLAMA;
// bytes per token slot: 2 (k, v) x 2 layers x 2 kv heads x 8 dims x 4 bytes
const BPT = 2 * 2 * 2 * 8 * 4;
const PROMPT = [3, 17, 42, 5, 63, 0, 28, 9, 11, 50];

let dev: Device;
let model: LlamaModel;
let oneLayer: LlamaModel;
beforeAll(async () => {
  dev = await createDevice('cpu');
  const w = randomWeights(CFG, 7);
  model = await LlamaModel.fromWeights(dev, CFG, (n) => w.get(n)!);
  oneLayer = await truncatedModel(dev, CFG, (n) => w.get(n)!, 1);
});
afterAll(async () => {
  model.dispose();
  oneLayer.dispose();
  await dev.dispose();
});

async function greedy(m: LlamaModel, prompt: readonly number[], n: number): Promise<number[]> {
  return (await generate(m, prompt, { maxTokens: n, temperature: 0 })).tokens;
}

/** What every run must satisfy: the steps' tokens are the output after the prefill's, the stats add up. */
function checkBookkeeping(r: SpeculativeResult, expansion: readonly number[]): void {
  expect(r.log.flatMap((s) => s.tokens)).toEqual(r.tokens.slice(1));
  expect(r.steps).toBe(r.log.length);
  expect(r.acceptedPerStep).toEqual(r.log.map((s) => s.accepted));
  expect(r.acceptedHistogram.length).toBe(expansion.length + 1);
  expect(r.acceptedHistogram.reduce((a, b) => a + b, 0)).toBe(r.steps);
  expect(r.meanAccepted).toBeCloseTo(r.acceptedPerStep.reduce((a, b) => a + b, 0) / r.steps, 12);
  for (const s of r.log) {
    expect(s.accepted).toBeLessThanOrEqual(Math.min(s.draftNodes, expansion.length));
    // The verified tree is the pending token plus the draft's nodes, each in one slot, measured during the step.
    expect(s.kv.nodes).toBe(1 + s.draftNodes);
    expect(s.kv.treeBytes).toBe(s.kv.nodes * BPT);
    expect(s.kv.branchBytes).toBeGreaterThanOrEqual(s.kv.treeBytes);
  }
}

describe('speculative output is greedy output (tiny random model)', () => {
  // A 10-token prompt and 55 new tokens fill the 64-position context: the last steps' trees are cut to fit.
  const N = CFG.maxPositions - PROMPT.length + 1;
  let want: number[];
  beforeAll(async () => {
    want = await greedy(model, PROMPT, N);
    expect(want.length).toBe(N);
  });

  it.each([[[2, 2, 1]], [[1, 1, 1, 1]], [[3, 1, 2]]])('draft: the target truncated to 1 layer, expansion %j', async (expansion) => {
    const draft = new ModelDraft(oneLayer);
    try {
      const r = await speculativeGenerate(model, draft, PROMPT, { maxNewTokens: N, expansion });
      expect(r.tokens).toEqual(want);
      expect(r.stopReason).toBe('length');
      checkBookkeeping(r, expansion);
      // The model draft always offers its full top-k, so every tree before the context's end is full.
      const full = r.log.filter((s) => s.draftNodes === treeSize(expansion));
      expect(full.length).toBeGreaterThan(r.steps / 2);
      for (const s of full) expect([s.kv.nodes, s.kv.leaves]).toEqual([1 + treeSize(expansion), expansion.reduce((a, b) => a * b, 1)]);
      expect(r.steps).toBeLessThan(N - 1);
    } finally {
      draft.dispose();
    }
  });

  it('draft: a 3-gram of a text, which proposes only what it has seen (trees of any shape)', async () => {
    // The text: the model's own continuation of another prompt, then random tokens; both sides of acceptance occur.
    const rng = new Rng(3);
    const text = [...(await greedy(model, [1, 2, 3], 40)), ...Array.from({ length: 200 }, () => Math.floor(rng.uniform() * CFG.vocabSize))];
    const draft = NgramDraft.fit(Uint8Array.from(text), 3, CFG.vocabSize);
    const r = await speculativeGenerate(model, draft, PROMPT, { maxNewTokens: N, expansion: [2, 2, 2] });
    expect(r.tokens).toEqual(want);
    checkBookkeeping(r, [2, 2, 2]);
    expect(new Set(r.log.map((s) => s.draftNodes)).size).toBeGreaterThan(1);
  });

  it('a draft that is the target itself gets every node of a chain accepted: 4 + 1 tokens a step', async () => {
    const draft = new ModelDraft(model);
    try {
      const steps: number[] = [];
      const r = await speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 21, expansion: [1, 1, 1, 1], onStep: (s) => steps.push(s.step) });
      expect(r.tokens).toEqual(want.slice(0, 21));
      expect(steps).toEqual([0, 1, 2, 3]);
      expect(r.acceptedPerStep).toEqual([4, 4, 4, 4]);
      expect(r.acceptedHistogram).toEqual([0, 0, 0, 0, 4]);
      expect([r.meanAccepted, r.meanTokensPerStep]).toEqual([4, 5]);
      // A chain has one branch: the tree costs what the branch does.
      for (const s of r.log) expect(s.kv).toEqual({ nodes: 5, leaves: 1, bytesPerToken: BPT, treeBytes: 5 * BPT, branchBytes: 5 * BPT });
      checkBookkeeping(r, [1, 1, 1, 1]);
    } finally {
      draft.dispose();
    }
  });

  it('stops at the target\'s EOS token as generate() does (EOS not emitted)', async () => {
    const w = randomWeights(CFG, 7);
    const eosModel = await LlamaModel.fromWeights(dev, { ...CFG, eosTokenId: want[6] }, (n) => w.get(n)!);
    const draft = new ModelDraft(oneLayer);
    try {
      const g = await generate(eosModel, PROMPT, { maxTokens: N, temperature: 0 });
      const r = await speculativeGenerate(eosModel, draft, PROMPT, { maxNewTokens: N, expansion: [2, 2, 1] });
      expect([g.stopReason, r.stopReason]).toEqual(['eos', 'eos']);
      expect(r.tokens).toEqual(g.tokens);
      expect(r.tokens.length).toBe(want.indexOf(want[6]));
    } finally {
      draft.dispose();
      eosModel.dispose();
    }
  });
});

describe('acceptance and KV bookkeeping on hand-made trees', () => {
  //        ctx
  //       /   \
  //     0:5   1:7
  //    /   \     \
  //  2:9   3:3   4:4
  const tree = { tokens: [5, 7, 9, 3, 4], parents: [-1, -1, 0, 0, 1] };

  it('verifyGreedy walks from the context\'s end, accepting the child equal to the target\'s choice at its parent', () => {
    const next = (m: Record<number, number>) => (i: number) => m[i];
    expect(verifyGreedy(tree, next({ [-1]: 7, 1: 4, 4: 12 }))).toEqual({ path: [1, 4], bonus: 12 });
    expect(verifyGreedy(tree, next({ [-1]: 5, 0: 3, 3: 60 }))).toEqual({ path: [0, 3], bonus: 60 });
    expect(verifyGreedy(tree, next({ [-1]: 5, 0: 4 }))).toEqual({ path: [0], bonus: 4 }); // 4 is node 1's child, not node 0's
    expect(verifyGreedy(tree, next({ [-1]: 8 }))).toEqual({ path: [], bonus: 8 });
    expect(verifyGreedy({ tokens: [], parents: [] }, next({ [-1]: 1 }))).toEqual({ path: [], bonus: 1 });
  });

  it('treeKvBytes: 6 nodes stored once against 3 branches of 3 tokens each', async () => {
    // The verified tree: the pending token as root, then the draft tree above (parents shifted by one).
    const parents = [-1, ...tree.parents.map((p) => p + 1)];
    expect(treeKvBytes(parents, BPT)).toEqual({ nodes: 6, leaves: 3, bytesPerToken: BPT, treeBytes: 6 * BPT, branchBytes: 9 * BPT });
    // SpecInfer's <2, 2, 1> under a root: 1 + 2 + 4 + 4 nodes, 4 branches of 4.
    const full = await growTree({ expansion: [2, 2, 1], maxNodes: 100 }, (f, _t, k) => f.map(() => [1, 2, 3].slice(0, k)));
    expect(treeKvBytes([-1, ...full.parents.map((p) => p + 1)], 100)).toEqual({ nodes: 11, leaves: 4, bytesPerToken: 100, treeBytes: 1100, branchBytes: 1600 });
    expect(() => treeKvBytes([0], BPT)).toThrow(SpeculativeError);
  });

  it('growTree grows breadth first, so maxNodes keeps a prefix; topTokens breaks ties by the lower index', async () => {
    const full = await growTree({ expansion: [2, 2], maxNodes: 100 }, (f, _t, k) => f.map((x) => [x + 10, x + 20].slice(0, k)));
    expect(full).toEqual({ tokens: [9, 19, 10, 20, 11, 21], parents: [-1, -1, 0, 0, 1, 1] });
    const cut = await growTree({ expansion: [2, 2], maxNodes: 3 }, (f, _t, k) => f.map((x) => [x + 10, x + 20].slice(0, k)));
    expect(cut).toEqual({ tokens: [9, 19, 10], parents: [-1, -1, 0] });
    expect(treeSize([3, 2, 2, 1, 1])).toBe(3 + 6 + 12 + 12 + 12);
    expect(topTokens([1, 5, 5, 2, 5], 2)).toEqual([1, 2]);
    expect(topTokens([1, 5, 5, 2, 7], 3)).toEqual([4, 1, 2]);
    expect(topTokens([1, 5, 5, 2, 7], 3, 4)).toEqual([1, 2, 3]);
  });

  it('the n-gram draft backs off to shorter contexts for the places the longest one cannot fill', () => {
    const d = NgramDraft.fit(Uint8Array.from([1, 2, 3, 1, 2, 3, 1, 2, 4, 5, 2, 6, 2, 6, 7, 7, 7]), 3, 8);
    expect(d.next([1, 2], 3)).toEqual([3, 4, 6]); // after (1, 2): 3 twice, 4 once; then after 2: 6 twice
    expect(d.next([1, 2], 4)).toEqual([3, 4, 6, 2]); // then the unigram's most frequent
    expect(d.next([9, 9], 2)).toEqual([2, 1]); // unseen contexts: the unigram's top two (1 and 7 tie: the lower)
  });
});

describe('bad input gives clear errors', () => {
  const reason = async (p: Promise<unknown>) => {
    const e = await p.catch((x) => x);
    expect(e).toBeInstanceOf(SpeculativeError);
    return (e as SpeculativeError).reason;
  };
  let draft: ModelDraft;
  beforeAll(() => (draft = new ModelDraft(oneLayer)));
  afterAll(() => draft.dispose());

  it('an empty prompt, a bad maxNewTokens or expansion', async () => {
    expect(await reason(speculativeGenerate(model, draft, [], { maxNewTokens: 4 }))).toBe('invalid-argument');
    expect(await reason(speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 0 }))).toBe('invalid-argument');
    expect(await reason(speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 4, expansion: [] }))).toBe('invalid-argument');
    expect(await reason(speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 4, expansion: [2, 0] }))).toBe('invalid-argument');
    expect(await reason(speculativeGenerate(model, draft, 'text', { maxNewTokens: 4 }))).toBe('invalid-argument');
  });

  it('maxNewTokens past the context', async () => {
    const e = await speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 56 }).catch((x) => x);
    expect((e as SpeculativeError).reason).toBe('too-long');
    expect((e as Error).message).toMatch(/at most 55 new tokens/);
  });

  it('a tree too large for the context or for the cache', async () => {
    // <8, 8>: 72 nodes, past the 64-position context.
    const e = await speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 4, expansion: [8, 8] }).catch((x) => x);
    expect((e as SpeculativeError).reason).toBe('tree-too-large');
    expect((e as Error).message).toMatch(/<8, 8> has 72 nodes/);
    // <2, 2, 1>: 10 nodes; 10 + 1 + 10 slots needed, 20 given.
    expect(await reason(speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 4, numSlots: 20 }))).toBe('tree-too-large');
    // Room for the tree but not for the output.
    expect(await reason(speculativeGenerate(model, draft, PROMPT, { maxNewTokens: 30, numSlots: 30 }))).toBe('cache-too-small');
  });

  it('a draft that proposes what cannot be verified', async () => {
    const bad = (tokens: number[], parents: number[]): Draft => ({ name: 'bad', propose: async () => ({ tokens, parents }), dispose() {} });
    expect(await reason(speculativeGenerate(model, bad([64], [-1]), PROMPT, { maxNewTokens: 4 }))).toBe('bad-draft');
    expect(await reason(speculativeGenerate(model, bad([1, 2], [1, -1]), PROMPT, { maxNewTokens: 4 }))).toBe('bad-draft');
    expect(await reason(speculativeGenerate(model, bad(Array(20).fill(1), Array(20).fill(-1)), PROMPT, { maxNewTokens: 4 }))).toBe('bad-draft');
  });
});

describe('the built-in model', () => {
  let big: LlamaModel;
  let train: Uint8Array;
  beforeAll(async () => {
    big = await loadModel(BUILTIN_DIR, { device: dev });
    train = mobyDick().train;
  });
  afterAll(() => big.dispose());

  it('a 3-gram of Moby-Dick and the first 2 layers as drafts: greedy\'s text, with the numbers a run reports', async () => {
    const prompt = 'Call me Ishmael. Some years ago';
    const want = await greedy(big, big.tokenizer!.encode(prompt), 40);
    const ngram = NgramDraft.fit(train, 3, big.cfg.vocabSize);
    const r = await compareWithGreedy(big, ngram, prompt, { maxNewTokens: 40, expansion: [2, 2, 1], warmup: false });
    expect(r.greedy.tokens).toEqual(want);
    expect(r.speculative.tokens).toEqual(want);
    expect(r.identical).toBe(true);
    expect(r.speculative.meanAccepted).toBeGreaterThan(0.5);
    expect(r.speedup).toBeGreaterThan(0);
    const bpt = 2 * 4 * 2 * 64 * 4;
    expect(r.speculative.kv.bytesPerToken).toBe(bpt);
    expect(r.speculative.kv.largest).toEqual({ nodes: 11, leaves: 4, bytesPerToken: bpt, treeBytes: 11 * bpt, branchBytes: 16 * bpt });
    const small = await loadTruncatedModel(BUILTIN_DIR, 2, { device: dev });
    expect(small.cfg.numLayers).toBe(2);
    const draft = new ModelDraft(small, { ownsModel: true });
    try {
      const s = await speculativeGenerate(big, draft, prompt, { maxNewTokens: 40, expansion: [2, 1] });
      expect(s.tokens).toEqual(want);
    } finally {
      draft.dispose();
    }
    expect(small.disposed).toBe(true);
  });
});
