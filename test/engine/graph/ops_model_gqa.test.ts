/**
 * GroupQueryAttention against the engine's Attention op on the same data, as a KV cache that persists across the
 * steps of continuous batching (sequences joining and leaving, each at its own length), and decode against prefill.
 *
 * Tolerances: on the reference backend both ops compute in float64 from the same fp32 values and round once, so they
 * agree to 2^-22 relative (plus 1e-7 near 0); onnxruntime sums in fp32 in another order: the op suite's fp32
 * tolerance (atol 1e-5, rtol 1e-4). Cache rows are copies: exact.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apply, createDevice, DTypeError, Graph, ShapeError, type Device, type Tensor } from '../../../engine/index.ts';
import { lowerGraph } from '../../../engine/backends/onnx/lower.ts';
import { TOL } from '../../../bench/op_cases.ts';
import { rng, uniform } from '../../../bench/random.ts';

const Hq = 4;
const Hkv = 2;
const D = 8;
const attrs = { numHeads: Hq, kvNumHeads: Hkv };

let cpu: Device;
let ref: Device;
beforeAll(async () => {
  cpu = await createDevice('cpu');
  ref = await createDevice('reference');
});
afterAll(async () => {
  await cpu.dispose();
  await ref.dispose();
});

const tolOf = (dev: Device) => (dev === ref ? { atol: 1e-7, rtol: 2 ** -22 } : TOL.fp32);
function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: { atol: number; rtol: number }, what: string): void {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol.atol + tol.rtol * Math.abs(want[i]))) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

interface Step {
  q: number[];
  k: number[];
  v: number[];
  pastKey: number[];
  pastValue: number[];
  lens: number[];
  S: number;
  T: number;
}

function randomStep(seed: number, B: number, S: number, T: number, lens: number[]): Step {
  const r = rng(seed);
  return {
    q: uniform(r, B * S * Hq * D, -2, 2),
    k: uniform(r, B * S * Hkv * D, -2, 2),
    v: uniform(r, B * S * Hkv * D, -2, 2),
    pastKey: uniform(r, B * Hkv * T * D, -2, 2),
    pastValue: uniform(r, B * Hkv * T * D, -2, 2),
    lens,
    S,
    T,
  };
}

async function gqa(dev: Device, s: Step): Promise<Float32Array[]> {
  const B = s.lens.length;
  const outs = await apply('GroupQueryAttention', [
    dev.tensor(s.q, [B, s.S, Hq * D]),
    dev.tensor(s.k, [B, s.S, Hkv * D]),
    dev.tensor(s.v, [B, s.S, Hkv * D]),
    dev.tensor(s.pastKey, [B, Hkv, s.T, D]),
    dev.tensor(s.pastValue, [B, Hkv, s.T, D]),
    dev.tensor(s.lens, [B], 'int32'),
  ], attrs);
  return outs.map((t) => t.toFloat32());
}

/** Sequence b's slice of a [B, S, H*D] value as [1, H, S, D]. */
function headsFirst(x: ArrayLike<number>, b: number, S: number, H: number): number[] {
  const out: number[] = [];
  for (let h = 0; h < H; h++) for (let i = 0; i < S; i++) for (let d = 0; d < D; d++) out.push(x[((b * S + i) * H + h) * D + d]);
  return out;
}

/** Rows 0..n-1 of sequence b's cache [B, Hkv, T, D], as [1, Hkv, n, D]. */
function cacheRows(c: ArrayLike<number>, b: number, T: number, n: number): number[] {
  const out: number[] = [];
  for (let h = 0; h < Hkv; h++) for (let j = 0; j < n * D; j++) out.push(c[(b * Hkv + h) * T * D + j]);
  return out;
}

describe('GroupQueryAttention', () => {
  for (const [S, path] of [[1, 'fused decode'], [3, 'plain ONNX']] as const) {
    it(`equals Attention over each sequence's cached rows (S = ${S}, ${path} on cpu)`, async () => {
      const T = 10;
      const s = randomStep(S, 3, S, T, [0, 3, 7]);
      for (const dev of [ref, cpu]) {
        const [out, pk, pv] = await gqa(dev, s);
        for (let b = 0; b < 3; b++) {
          const n = s.lens[b] + S;
          // The cache: the past up to the length, the new rows, then the past again.
          for (let h = 0; h < Hkv; h++) {
            for (let t = 0; t < T; t++) {
              const at = ((b * Hkv + h) * T + t) * D;
              const fresh = t >= s.lens[b] && t < n;
              const src = ((b * S + (t - s.lens[b])) * Hkv + h) * D;
              expect(Array.from(pk.slice(at, at + D))).toEqual(Array.from(Float32Array.from(fresh ? s.k.slice(src, src + D) : s.pastKey.slice(at, at + D))));
              expect(Array.from(pv.slice(at, at + D))).toEqual(Array.from(Float32Array.from(fresh ? s.v.slice(src, src + D) : s.pastValue.slice(at, at + D))));
            }
          }
          const [want] = await apply('Attention', [
            dev.tensor(headsFirst(s.q, b, S, Hq), [1, Hq, S, D]),
            dev.tensor(cacheRows(pk, b, T, n), [1, Hkv, n, D]),
            dev.tensor(cacheRows(pv, b, T, n), [1, Hkv, n, D]),
          ], { causal: true });
          close(headsFirst(out, b, S, Hq), want.toFloat32(), tolOf(dev), `${dev.kind} sequence ${b}`);
        }
      }
    });
  }

  it('decoding token by token gives what one prefill of the whole prompt gives', async () => {
    const T = 8;
    const n = 6;
    const s = randomStep(9, 1, n, T, [0]);
    const [prefill, pk] = await gqa(cpu, s);
    let pastKey = new Array(Hkv * T * D).fill(0);
    let pastValue = new Array(Hkv * T * D).fill(0);
    for (let t = 0; t < n; t++) {
      const step = {
        q: s.q.slice(t * Hq * D, (t + 1) * Hq * D),
        k: s.k.slice(t * Hkv * D, (t + 1) * Hkv * D),
        v: s.v.slice(t * Hkv * D, (t + 1) * Hkv * D),
        pastKey, pastValue, lens: [t], S: 1, T,
      };
      const [out, k, v] = await gqa(cpu, step);
      close(out, prefill.slice(t * Hq * D, (t + 1) * Hq * D), TOL.fp32, `token ${t}`);
      [pastKey, pastValue] = [Array.from(k), Array.from(v)];
    }
    expect(pastKey.slice(0, n * D)).toEqual(Array.from(pk.slice(0, n * D)));
  });

  it('serves continuous batching from one compiled decode graph, each sequence at its own length', async () => {
    const T = 12;
    const g = new Graph('decode');
    const B = 'batch';
    const ins = [
      g.input('q', 'fp32', [B, 1, Hq * D]), g.input('k', 'fp32', [B, 1, Hkv * D]), g.input('v', 'fp32', [B, 1, Hkv * D]),
      g.input('pastKey', 'fp32', [B, Hkv, T, D]), g.input('pastValue', 'fp32', [B, Hkv, T, D]), g.input('pastLengths', 'int32', [B]),
    ];
    g.output(...g.op('GroupQueryAttention', ins, attrs));
    // Per-sequence caches on the host; the batch is assembled from whichever sequences run this step.
    const caches = new Map<number, { k: Float32Array; v: Float32Array; len: number; fed: number[][] }>();
    const schedule = [[0, 1], [0, 1, 2], [1, 2], [1, 2, 3, 4], [2, 4]];
    const before = cpu.stats().sessionsCreated;
    const r = rng(11);
    for (const active of schedule) {
      for (const id of active) if (!caches.has(id)) caches.set(id, { k: new Float32Array(Hkv * T * D), v: new Float32Array(Hkv * T * D), len: 0, fed: [] });
      const seqs = active.map((id) => caches.get(id)!);
      const Bn = active.length;
      const q = uniform(r, Bn * Hq * D, -2, 2);
      const k = uniform(r, Bn * Hkv * D, -2, 2);
      const v = uniform(r, Bn * Hkv * D, -2, 2);
      const feeds = (dev: Device): Tensor[] => [
        dev.tensor(q, [Bn, 1, Hq * D]), dev.tensor(k, [Bn, 1, Hkv * D]), dev.tensor(v, [Bn, 1, Hkv * D]),
        dev.tensor(seqs.flatMap((c) => Array.from(c.k)), [Bn, Hkv, T, D]), dev.tensor(seqs.flatMap((c) => Array.from(c.v)), [Bn, Hkv, T, D]),
        dev.tensor(seqs.map((c) => c.len), [Bn], 'int32'),
      ];
      const [out, pk, pv] = await cpu.run(g, feeds(cpu));
      const [want] = await ref.run(g, feeds(ref));
      close(out.toFloat32(), want.toFloat32(), TOL.fp32, `step with sequences ${active}`);
      seqs.forEach((c, b) => {
        c.k = pk.toFloat32().slice(b * Hkv * T * D, (b + 1) * Hkv * T * D);
        c.v = pv.toFloat32().slice(b * Hkv * T * D, (b + 1) * Hkv * T * D);
        c.len++;
        c.fed.push(k.slice(b * Hkv * D, (b + 1) * Hkv * D));
      });
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
    expect([...caches.values()].map((c) => c.len)).toEqual([2, 4, 4, 1, 2]);
    // Each sequence's cache holds, row by row, exactly the keys it was fed, whatever batch it ran in.
    for (const c of caches.values()) {
      const rows = c.fed.map((_, t) => Array.from({ length: Hkv * D }, (_, i) => c.k[(Math.floor(i / D) * T + t) * D + (i % D)]));
      expect(rows).toEqual(c.fed.map((f) => Array.from(Float32Array.from(f))));
    }
  });

  it("lowers decode and single-sequence steps to onnxruntime's fused kernel, other shapes to plain ONNX", () => {
    const lowered = (B: number | string, S: number | string, headDim = D) => {
      const g = new Graph('gqa');
      const ins = [
        g.input('q', 'fp32', [B, S, Hq * headDim]), g.input('k', 'fp32', [B, S, Hkv * headDim]), g.input('v', 'fp32', [B, S, Hkv * headDim]),
        g.input('pk', 'fp32', [B, Hkv, 'maxSeq', headDim]), g.input('pv', 'fp32', [B, Hkv, 'maxSeq', headDim]), g.input('lens', 'int32', [B]),
      ];
      g.output(...g.op('GroupQueryAttention', ins, attrs));
      return lowerGraph(g, { nativeFp16: false }).opTypes;
    };
    expect(lowered('batch', 1)).toContain('GroupQueryAttention');
    expect(lowered(1, 'seq')).toContain('GroupQueryAttention');
    expect(lowered('batch', 'seq')).toContain('ScatterND');
    expect(lowered('batch', 'seq')).not.toContain('GroupQueryAttention');
    // onnxruntime's kernel takes head dims that are multiples of 8 only.
    expect(lowered('batch', 1, 4)).not.toContain('GroupQueryAttention');
  });

  it('a graph symbolic in batch, new tokens and cache length runs at every size with one session', async () => {
    const g = new Graph('step');
    const ins = [
      g.input('q', 'fp32', ['batch', 'seq', Hq * D]), g.input('k', 'fp32', ['batch', 'seq', Hkv * D]), g.input('v', 'fp32', ['batch', 'seq', Hkv * D]),
      g.input('pk', 'fp32', ['batch', Hkv, 'maxSeq', D]), g.input('pv', 'fp32', ['batch', Hkv, 'maxSeq', D]), g.input('lens', 'int32', ['batch']),
    ];
    g.output(...g.op('GroupQueryAttention', ins, attrs));
    const before = cpu.stats().sessionsCreated;
    for (const [B, S, T, lens] of [[2, 3, 8, [0, 5]], [3, 1, 5, [4, 0, 2]], [1, 4, 4, [0]]] as const) {
      const s = randomStep(B * 10 + S, B, S, T, [...lens]);
      const feeds = (dev: Device) => [
        dev.tensor(s.q, [B, S, Hq * D]), dev.tensor(s.k, [B, S, Hkv * D]), dev.tensor(s.v, [B, S, Hkv * D]),
        dev.tensor(s.pastKey, [B, Hkv, T, D]), dev.tensor(s.pastValue, [B, Hkv, T, D]), dev.tensor([...lens], [B], 'int32'),
      ];
      const got = await cpu.run(g, feeds(cpu));
      const want = await ref.run(g, feeds(ref));
      got.forEach((t, i) => close(t.toFloat32(), want[i].toFloat32(), TOL.fp32, `B=${B} S=${S} T=${T} output ${i}`));
    }
    expect(cpu.stats().sessionsCreated - before).toBe(1);
  });

  it('a step that would overflow the cache, or a negative length, stops the run on every backend and path', async () => {
    for (const dev of [ref, cpu]) {
      for (const [S, lens] of [[1, [2, 4]], [1, [-1, 0]], [2, [0, 3]], [2, [3, -2]]] as const) {
        await expect(gqa(dev, randomStep(1, 2, S, 4, [...lens]))).rejects.toThrow(/cache/);
      }
      // The device still runs a good step afterwards.
      expect((await gqa(dev, randomStep(1, 2, 2, 4, [0, 2])))[0].length).toBe(2 * 2 * Hq * D);
    }
  });

  it('infers shapes and refuses bad operands with typed errors', () => {
    const g = new Graph('bad');
    const q = g.input('q', 'fp32', ['b', 's', Hq * D]);
    const k = g.input('k', 'fp32', ['b', 's', Hkv * D]);
    const v = g.input('v', 'fp32', ['b', 's', Hkv * D]);
    const pk = g.input('pk', 'fp32', ['b', Hkv, 'T', D]);
    const pv = g.input('pv', 'fp32', ['b', Hkv, 'T', D]);
    const lens = g.input('lens', 'int32', ['b']);
    const outs = g.op('GroupQueryAttention', [q, k, v, pk, pv, lens], attrs);
    expect(outs.map((o) => o.shape)).toEqual([['b', 's', Hq * D], ['b', Hkv, 'T', D], ['b', Hkv, 'T', D]]);
    expect(() => g.op('GroupQueryAttention', [q, k, v, pk, pv, lens], { numHeads: 4, kvNumHeads: 3 })).toThrow(/multiple of kvNumHeads/);
    expect(() => g.op('GroupQueryAttention', [q, k, v, pk, pv, lens], { numHeads: 3, kvNumHeads: 1 })).toThrow(/multiple of numHeads/);
    expect(() => g.op('GroupQueryAttention', [q, k, v, pk, pv, g.input('lf', 'fp32', ['b'])], attrs)).toThrow(DTypeError);
    expect(() => g.op('GroupQueryAttention', [q, k, v, g.input('pk3', 'fp32', ['b', 3, 'T', D]), pv, lens], attrs)).toThrow(ShapeError);
    expect(() => g.op('GroupQueryAttention', [q, k, v, pk, g.input('pvh', 'fp16', ['b', Hkv, 'T', D]), lens], attrs)).toThrow(DTypeError);
    const q9 = g.input('q9', 'fp32', [1, 9, Hq * D]);
    const kv9 = g.input('kv9', 'fp32', [1, 9, Hkv * D]);
    const c8 = g.input('c8', 'fp32', [1, Hkv, 8, D]);
    expect(() => g.op('GroupQueryAttention', [q9, kv9, kv9, c8, c8, g.input('l1', 'int32', [1])], attrs)).toThrow(/9 new tokens cannot fit in a cache of 8/);
  });
});
