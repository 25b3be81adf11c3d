/**
 * The training model run segment by segment (engine/train/segments.ts) against the one-graph training step
 * (trainingGraph) on cpu, with a tiny Llama (2 layers, width 32, 4 heads sharing 2 kv heads, vocab 40), batch 4 x 16
 * with a few labels ignored (-100).
 *
 * Tolerances (normwise relative error, per parameter; the tied embedding's two gradients summed):
 * - fp32, against trainingGraph: loss 1e-6, gradients 1e-5. Both are fp32 graphs of the same math; they may differ
 *   in summation order (mean vs scale * sum, the embedding's gradient as two parts). Measured: loss 6.5e-8 (the sum
 *   then the scale, against the mean), gradients 0 (bit-identical, tied and untied).
 * - bf16 params, against trainingGraph with castParam('bf16'): 1e-2. Both round each gradient to bf16 (8 bits: a
 *   relative step of 2^-8); the tied embedding's two parts are rounded to bf16 before they are summed. Measured
 *   2.3e-3 (worst param), the loss 0.
 * - two micro-batches summed against the whole batch: 1e-5 (measured 1.8e-7), the loss 1e-6.
 * - scale: doubling it doubles the loss and every gradient exactly (a power of two commutes with fp32 rounding).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, DTypeError, ServelabError, ShapeError, type Device, type Tensor } from '../../../engine/index.ts';
import type { LlamaConfig } from '../../../engine/model/config.ts';
import { castParam, initParams, paramSpecs, trainingGraph } from '../../../engine/train/lm_params.ts';
import { runBackward } from '../../../engine/train/step.ts';
import { Rng } from '../../../engine/train/rng.ts';
import { residentParams, segmentSpecs, SegmentedModel, type ParamPrecision, type SegmentBatch } from '../../../engine/train/segments.ts';
import { relError } from '../../helpers/rel_error.ts';
import { TINY_LLAMA } from '../../helpers/tiny_llama.ts';

const CFG: LlamaConfig = TINY_LLAMA;
const UNTIED: LlamaConfig = { ...CFG, tieWordEmbeddings: false };
const B = 4;
const S = 16;

function makeBatch(seed: number): SegmentBatch {
  const r = new Rng(seed);
  const tokens = Int32Array.from({ length: B * S }, () => r.uniformInt(CFG.vocabSize));
  const labels = Int32Array.from({ length: B * S }, (_, i) => ((i % S) === S - 1 || i % 7 === 3 ? -100 : tokens[i + 1]));
  return { tokens, labels, batch: B, seq: S };
}
const BATCH = makeBatch(5);
const COUNT = BATCH.labels.filter((l) => l !== -100).length;

let dev: Device;
beforeAll(async () => {
  dev = await createDevice('cpu');
});
afterAll(async () => {
  await dev.dispose();
});

/** Params drawn as initParams does, then rounded to `precision`. */
function params(cfg: LlamaConfig, precision: ParamPrecision, seed = 1): Tensor[] {
  const fp32 = initParams(dev, cfg, new Rng(seed));
  if (precision === 'fp32') return fp32;
  const out = fp32.map((t) => dev.tensor(t.toFloat32(), t.shape, precision, { tag: 'weights' }));
  fp32.forEach((t) => t.dispose());
  return out;
}

/** The segmented step with resident params: the loss and each param's gradient summed over its segments. */
async function segmentedStep(model: SegmentedModel, ps: Tensor[], batch: SegmentBatch, scale: number, order: string[] = []) {
  const sums = paramSpecs(model.cfg).map((s) => new Float32Array(s.shape.reduce((a, b) => a * b, 1)));
  const loss = await model.step(batch, scale, residentParams(ps, (seg, grads) => {
    order.push(seg.name);
    grads.forEach((g, k) => {
      expect(g.tag).toBe('grads');
      expect(g.dtype).toBe(model.precision);
      const v = g.toFloat32();
      const sum = sums[seg.params[k]];
      for (let j = 0; j < v.length; j++) sum[j] += v[j];
      g.dispose();
    });
  }));
  return { loss, grads: sums };
}

/** trainingGraph's mean loss and gradients on the same batch. */
async function reference(cfg: LlamaConfig, ps: Tensor[], precision: ParamPrecision) {
  const { graph, tables } = trainingGraph(cfg, dev, precision === 'fp32' ? {} : { supply: castParam(precision) });
  const t = (v: Int32Array, label: string) => dev.tensor(v, [B, S], 'int32', { label });
  const feeds = [t(BATCH.tokens, 'tokens'), t(Int32Array.from({ length: B * S }, (_, i) => i % S), 'positions'), t(BATCH.labels, 'labels')];
  const out = await runBackward(dev, graph, [...feeds, ...ps]);
  const r = { loss: out.loss, grads: out.grads.map((g) => g.toFloat32()) };
  out.dispose();
  for (const x of [...feeds, ...tables]) x.dispose();
  return r;
}

const MEASURED: Record<string, number> = {};
afterAll(() => console.log('segments: measured normwise errors', MEASURED));

describe('segmentSpecs', () => {
  it('embed, one segment per layer, head; the tied embedding in embed and head', () => {
    const segs = segmentSpecs(CFG);
    expect(segs.map((s) => s.name)).toEqual(['embed', 'layer 0', 'layer 1', 'head']);
    expect(segs[0].params).toEqual([0]);
    expect(segs[2].params).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18]);
    expect(segs[3].params).toEqual([19, 0]);
    expect(segmentSpecs(UNTIED)[3].params).toEqual([19, 20]);
    // Every param in some segment; only the tied embedding twice.
    const all = segs.flatMap((s) => s.params).sort((a, b) => a - b);
    expect(all).toEqual([0, ...paramSpecs(CFG).map((_, i) => i)]);
  });
});

describe('SegmentedModel.step', () => {
  for (const [label, cfg, precision, tol] of [
    ['fp32 tied', CFG, 'fp32', 1e-5],
    ['fp32 untied', UNTIED, 'fp32', 1e-5],
    ['bf16 tied', CFG, 'bf16', 1e-2],
  ] as const) {
    it(`${label}: the loss and gradients of trainingGraph (normwise ${tol})`, async () => {
      const ps = params(cfg, precision);
      const want = await reference(cfg, ps, precision);
      const model = new SegmentedModel(dev, cfg, { precision });
      const order: string[] = [];
      const got = await segmentedStep(model, ps, BATCH, 1 / COUNT, order);
      expect(order).toEqual(['head', 'layer 1', 'layer 0', 'embed']);
      const lossErr = Math.abs(got.loss - want.loss) / want.loss;
      expect(lossErr).toBeLessThan(1e-6);
      let worst = 0;
      paramSpecs(cfg).forEach((s, i) => {
        expect(want.grads[i].some((v) => v !== 0), `${s.name} has a gradient`).toBe(true);
        const e = relError(got.grads[i], want.grads[i]);
        expect(e, s.name).toBeLessThan(tol);
        worst = Math.max(worst, e);
      });
      MEASURED[`${label} loss`] = lossErr;
      MEASURED[`${label} grads (worst param)`] = worst;
      model.dispose();
      ps.forEach((p) => p.dispose());
    });
  }

  it('two micro-batches, scaled by the whole batch, sum to the whole batch', async () => {
    const ps = params(CFG, 'fp32');
    const model = new SegmentedModel(dev, CFG);
    const whole = await segmentedStep(model, ps, BATCH, 1 / COUNT);
    const half = (k: number): SegmentBatch => ({ tokens: BATCH.tokens.slice(k * 2 * S, (k + 1) * 2 * S), labels: BATCH.labels.slice(k * 2 * S, (k + 1) * 2 * S), batch: 2, seq: S });
    const parts = [await segmentedStep(model, ps, half(0), 1 / COUNT), await segmentedStep(model, ps, half(1), 1 / COUNT)];
    expect(Math.abs(parts[0].loss + parts[1].loss - whole.loss) / whole.loss).toBeLessThan(1e-6);
    let worst = 0;
    whole.grads.forEach((w, i) => {
      const sum = parts[0].grads[i].map((v, j) => v + parts[1].grads[i][j]);
      worst = Math.max(worst, relError(sum, w));
    });
    expect(worst).toBeLessThan(1e-5);
    MEASURED['micro-batches grads (worst param)'] = worst;
    model.dispose();
    ps.forEach((p) => p.dispose());
  });

  it('scale multiplies the loss and every gradient; the head forward gives the same loss', async () => {
    const ps = params(CFG, 'fp32');
    const model = new SegmentedModel(dev, CFG);
    const one = await segmentedStep(model, ps, BATCH, 1 / COUNT);
    const two = await segmentedStep(model, ps, BATCH, 2 / COUNT);
    expect(two.loss).toBe(2 * one.loss);
    one.grads.forEach((g, i) => expect(two.grads[i]).toEqual(g.map((v) => 2 * v)));
    // Scale 1 is the summed cross entropy: COUNT times the mean.
    const sum = await segmentedStep(model, ps, BATCH, 1);
    expect(Math.abs(sum.loss / COUNT - one.loss) / one.loss).toBeLessThan(1e-6);
    // Forward segment by segment, then the head's forward: the same loss as step's.
    const t = (v: Int32Array) => dev.tensor(v, [B, S], 'int32');
    const [tokens, positions, labels] = [t(BATCH.tokens), t(Int32Array.from({ length: B * S }, (_, i) => i % S)), t(BATCH.labels)];
    let h = await model.forward(0, tokens, [ps[0]]);
    for (const seg of model.segments.slice(1, -1)) {
      const next = await model.forward(model.segments.indexOf(seg), h, seg.params.map((k) => ps[k]), { positions });
      h.dispose();
      h = next;
    }
    const lossT = await model.forward(3, h, [ps[19], ps[0]], { labels, scale: 1 / COUNT });
    expect(Math.abs(lossT.toFloat32()[0] - one.loss) / one.loss).toBeLessThan(1e-6);
    await expect(model.forward(3, h, [ps[19], ps[0]], { labels, scale: NaN })).rejects.toThrow(/scale must be a finite number/);
    for (const x of [lossT, h, tokens, positions, labels, ...ps]) x.dispose();
    model.dispose();
  });
});

describe('bad input', () => {
  it('a wrong param count, shape or dtype, or a missing extra, names the segment and the param', async () => {
    const ps = params(CFG, 'fp32');
    const model = new SegmentedModel(dev, CFG);
    const h = dev.tensor(new Float32Array(B * S * CFG.hiddenSize), [B, S, CFG.hiddenSize]);
    const positions = dev.tensor(new Int32Array(B * S), [B, S], 'int32');
    const layer0 = model.segments[1].params.map((k) => ps[k]);
    await expect(model.forward(1, h, layer0.slice(1), { positions })).rejects.toThrow(ShapeError);
    await expect(model.forward(1, h, layer0.slice(1), { positions })).rejects.toThrow(/segment 'layer 0'.*takes 9 params \(model\.layers\.0\.input_layernorm\.weight, /);
    const wrong = [layer0[0], layer0[2], ...layer0.slice(2)]; // k [32, 16] where q [32, 32] goes
    await expect(model.forward(1, h, wrong, { positions })).rejects.toThrow(/segment 'layer 0'.*param 1 \(model\.layers\.0\.self_attn\.q_proj\.weight\) must be \[32, 32\], got \[32, 16\]/);
    await expect(model.forward(1, h, layer0)).rejects.toThrow(/segment 'layer 0' needs extras\.positions/);
    await expect(model.backward(1, h, layer0, null, { positions })).rejects.toThrow(/segment 'layer 0': backward needs dOut/);
    await expect(model.forward(0, h, [ps[0]])).rejects.toThrow(/segment 'embed'.*the input must be tokens int32 \[batch, seq\]/);
    const bf16 = new SegmentedModel(dev, CFG, { precision: 'bf16' });
    await expect(bf16.forward(1, h, layer0, { positions })).rejects.toThrow(DTypeError);
    await expect(bf16.forward(1, h, layer0, { positions })).rejects.toThrow(/segment 'layer 0'.*param 0 \(model\.layers\.0\.input_layernorm\.weight\) is fp32; this model takes bf16 params/);
    expect(() => model.graph(9, 'forward')).toThrow(ServelabError);
    for (const x of [h, positions, ...ps]) x.dispose();
    model.dispose();
    bf16.dispose();
  });
});

describe('memory', () => {
  it('step frees every activation: live bytes (sessions aside) return to where they were', async () => {
    const ps = params(CFG, 'fp32');
    const model = new SegmentedModel(dev, CFG);
    const live = () => dev.memory.live - dev.memory.liveByTag().compiled;
    const before = live();
    let activationsAtHead = 0;
    await model.step(BATCH, 1 / COUNT, residentParams(ps, (seg, grads) => {
      if (seg.name === 'head') activationsAtHead = dev.memory.liveByTag().activations;
      grads.forEach((g) => g.dispose());
    }));
    expect(live()).toBe(before);
    // At the head's gradients: the boundary inputs of embed, layer 0 and layer 1 (tokens, h, h), positions, labels,
    // and the head's d input.
    const hBytes = B * S * CFG.hiddenSize * 4;
    expect(activationsAtHead).toBe(3 * B * S * 4 + 3 * hBytes);
    // A failing hook frees everything too.
    await expect(model.step(BATCH, 1 / COUNT, { acquire: (seg) => (seg.name === 'head' ? [] : seg.params.map((k) => ps[k])), onGrads: () => undefined })).rejects.toThrow(ShapeError);
    expect(live()).toBe(before);
    model.dispose();
    ps.forEach((p) => p.dispose());
  });
});
