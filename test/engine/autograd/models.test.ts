/**
 * Whole-model gradients: a two-layer MLP and a one-block pre-norm transformer (RMSNorm, GQA causal attention, SwiGLU,
 * residuals), and a tiny language model around that block (embedding, LM head, cross-entropy), checked against central
 * differences on the reference backend; and the same backward graphs run on cpu against the reference.
 *
 * Tolerances: the gradient checks use gradCheck's defaults (engine/autograd/gradcheck.ts). cpu vs reference: fp32
 * kernels that sum in other orders (and fuse, and vectorize exp) differ by a few ulps of each term; over the few dozen
 * terms of these sums that is |got - want| <= 1e-4 * max|want| + 1e-6 per tensor, the largest element setting the scale
 * since a gradient element near zero is the difference of larger terms.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backward, createDevice, Graph, type Device, type Tensor, type Value } from '../../../engine/index.ts';
import { gradCheck, type CheckInput } from '../../../engine/autograd/gradcheck.ts';
import { rng, uniform } from '../../../bench/random.ts';
import { BLOCK_PARAMS, initParams, inputs, meanSquaredError, mlp, MLP_PARAMS, transformerBlock, type BlockConfig, type ParamSpec } from './models.ts';

const numel = (s: readonly number[]) => s.reduce((p, d) => p * d, 1);
const data = (seed: number, shape: number[], wrt = false): CheckInput => ({ shape, values: uniform(rng(seed), numel(shape), -1, 1), wrt });
const params = (specs: ParamSpec[], seed: number): CheckInput[] => initParams(specs, seed).map((values, i) => ({ name: specs[i].name, shape: specs[i].shape, values }));

const CFG: BlockConfig = { dModel: 16, heads: 4, kvHeads: 2, ffn: 24 };
const [B, S] = [2, 4];

function blockLoss(g: Graph, [x, target, ...p]: Value[]) {
  return meanSquaredError(g, transformerBlock(g, x, p, CFG), target);
}

const VOCAB = 7;
const TOKENS: CheckInput = { dtype: 'int32', shape: [B, S], values: [3, 0, 6, 3, 1, 1, 5, 2] };
const LABELS: CheckInput = { dtype: 'int32', shape: [B, S], values: [0, 6, 3, 2, 1, 5, 2, 4] };
const LM_PARAMS: ParamSpec[] = [{ name: 'embedding', shape: [VOCAB, CFG.dModel], scale: 1 }, ...BLOCK_PARAMS(CFG), { name: 'lmHead', shape: [CFG.dModel, VOCAB] }];

/** Next-token cross-entropy of one block between an embedding table and an LM head. */
function tinyLm(g: Graph, [tokens, labels, embedding, ...p]: Value[]) {
  const y = transformerBlock(g, g.op('Gather', [embedding, tokens])[0], p.slice(0, -1), CFG);
  return g.op('SoftmaxCrossEntropyLoss', [g.op('MatMul', [y, p.at(-1)!])[0], labels])[0];
}

/** The largest |got - want| over a tensor, against 1e-4 of its largest |want| plus 1e-6; a line when outside. */
function disagreement(name: string, got: Tensor, want: Tensor): string | null {
  const a = got.toFloat32();
  const b = want.toFloat32();
  let err = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  const allowed = 1e-4 * scale + 1e-6;
  return got.shape.join() === want.shape.join() && err <= allowed ? null : `${name}: max error ${err.toExponential(2)}, allowed ${allowed.toExponential(2)}`;
}

describe('whole-model gradients', () => {
  let ref: Device;
  let cpu: Device;
  beforeAll(async () => {
    ref = await createDevice('reference');
    cpu = await createDevice('cpu');
  });
  afterAll(async () => {
    await ref.dispose();
    await cpu.dispose();
  });

  it('two-layer MLP (MatMul, Add, Gelu, MatMul, mean squared error) against central differences', async () => {
    const specs = MLP_PARAMS(3, 8, 2);
    const r = await gradCheck((g, [x, t, ...p]) => meanSquaredError(g, mlp(g, x, p), t), [data(1, [6, 3]), data(2, [6, 2]), ...params(specs, 3)], { device: ref });
    expect(r.checked).toBe(3 * 8 + 8 + 8 * 2 + 2);
    expect(r.ok, r.describe()).toBe(true);
  });

  it('one transformer block (RMSNorm, GQA causal attention, SwiGLU, residuals) against central differences', async () => {
    // x is checked too: its gradient crosses both residual branches.
    const ins = [data(4, [B, S, CFG.dModel], true), data(5, [B, S, CFG.dModel]), ...params(BLOCK_PARAMS(CFG), 6)];
    const r = await gradCheck(blockLoss, ins, { device: ref, maxElements: 12 });
    expect(r.checked).toBe(12 + 2 * 12 + 7 * 12);
    expect(r.ok, r.describe()).toBe(true);
  });

  it('a tiny language model (embedding Gather, the block, LM head, cross-entropy) against central differences', async () => {
    const r = await gradCheck(tinyLm, [TOKENS, LABELS, ...params(LM_PARAMS, 12)], { device: ref, maxElements: 8 });
    expect(r.checked).toBe(LM_PARAMS.length * 8);
    expect(r.ok, r.describe()).toBe(true);
  });

  it('the same backward graphs on cpu agree with the reference (loss and every gradient): block, tiny LM', async () => {
    const x = { dtype: 'fp32' as const, shape: [B, S, CFG.dModel] };
    const models = [
      { name: 'block', build: blockLoss, data: [{ ...x, values: data(7, x.shape).values }, { ...x, values: data(8, x.shape).values }], specs: BLOCK_PARAMS(CFG), wrtData: true },
      { name: 'tiny LM', build: tinyLm, data: [TOKENS, LABELS], specs: LM_PARAMS, wrtData: false },
    ];
    for (const m of models) {
      const g = new Graph(m.name);
      const { data: d, params: p } = inputs(g, m.data.map((c, i) => ({ name: `data${i}`, shape: c.shape, dtype: c.dtype })), m.specs);
      const bw = backward(g, m.build(g, [...d, ...p]), m.wrtData ? [d[0], ...p] : p).graph;
      const values = [...m.data.map((c) => c.values), ...initParams(m.specs, 9)];
      const run = (dev: Device) => dev.run(bw, values.map((v, i) => dev.tensor(v, g.inputs[i].shape as number[], g.inputs[i].dtype)));
      const got = await run(cpu);
      const want = await run(ref);
      const names = ['loss', ...(m.wrtData ? ['dx'] : []), ...m.specs.map((s) => `d${s.name}`)];
      expect(got.map((t, i) => disagreement(`${m.name} ${names[i]}`, t, want[i])).filter(Boolean)).toEqual([]);
      expect(Math.abs(want[0].toFloat32()[0])).toBeGreaterThan(0.1);
    }
  });

  it('a block over symbolic [batch, seq] gives the static graph gradients at two sizes, on one session', async () => {
    const specs = BLOCK_PARAMS(CFG);
    const build = (shape: (number | string)[]) => {
      const g = new Graph('block');
      const { data: d, params: p } = inputs(g, [{ name: 'x', shape }, { name: 'target', shape }], specs);
      return backward(g, blockLoss(g, [...d, ...p]), [d[0], ...p]).graph;
    };
    const symbolic = build(['batch', 'seq', CFG.dModel]);
    const before = cpu.stats().sessionsCreated;
    for (const [b, s] of [[1, 3], [3, 5]]) {
      const shape = [b, s, CFG.dModel];
      const values = [data(10 + b, shape).values, data(20 + s, shape).values, ...initParams(specs, 11)];
      const feeds = (dev: Device) => values.map((v, i) => dev.tensor(v, i < 2 ? shape : specs[i - 2].shape));
      const got = await cpu.run(symbolic, feeds(cpu));
      const want = await ref.run(build(shape), feeds(ref));
      expect(got.map((t, i) => disagreement(`output ${i} at [${shape}]`, t, want[i])).filter(Boolean)).toEqual([]);
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
  });
});
