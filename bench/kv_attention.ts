/**
 * One layer's decode attention, contiguous against paged (vLLM's PagedAttention, Kwon et al. SOSP 2023): the static
 * cache's fused GroupQueryAttention against PagedAttention over a pool whose blocks of 16 lie at random, over the same
 * keys and values, and onnxruntime's own profile of where each one's kernel time goes.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Device, Graph } from '../engine/index.ts';
import { OrtBackend } from '../engine/backends/ort.ts';
import { randomTensor, shuffled } from './random.ts';
import { median } from './stats.ts';
import { inTurns } from './kv_turns.ts';

export const BLOCK = 16;

/** Kernel time inside onnxruntime per run, from its profiler: medians over the timed runs, in us. */
export interface KernelTime {
  kernelsUs: number;
  nodes: number;
  /** The kernels doing attention's work: the fused GroupQueryAttention; paged: Gather, MatMul, FusedMatMul, Softmax, Where, Concat. */
  workUs: number;
  /** By ONNX op type. */
  pieces: Record<string, number>;
}

export const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

export interface AttnShape {
  Hq: number;
  Hkv: number;
  D: number;
  maxSeq: number;
}

function gqaGraph({ Hq, Hkv, D }: AttnShape): Graph {
  const g = new Graph('decode attention, contiguous cache');
  const ins = [
    g.input('query', 'fp32', ['batch', 1, Hq * D]), g.input('key', 'fp32', ['batch', 1, Hkv * D]), g.input('value', 'fp32', ['batch', 1, Hkv * D]),
    g.input('pastKey', 'fp32', ['batch', Hkv, 'maxSeq', D]), g.input('pastValue', 'fp32', ['batch', Hkv, 'maxSeq', D]), g.input('pastLengths', 'int32', ['batch']),
  ];
  return g.output(...g.op('GroupQueryAttention', ins, { numHeads: Hq, kvNumHeads: Hkv }));
}

function pagedGraph({ Hq, Hkv, D }: AttnShape): Graph {
  const g = new Graph('decode attention, paged cache');
  const ins = [
    g.input('query', 'fp32', ['batch', 1, Hq * D]), g.input('key', 'fp32', ['batch', 1, Hkv * D]), g.input('value', 'fp32', ['batch', 1, Hkv * D]),
    g.input('keyCache', 'fp32', [Hkv, 'slots', D]), g.input('valueCache', 'fp32', [Hkv, 'slots', D]),
    g.input('blockTable', 'int32', ['batch', 'blocks']), g.input('pastLengths', 'int32', ['batch']),
  ];
  return g.output(g.op('PagedAttention', ins, { numHeads: Hq, kvNumHeads: Hkv, blockSize: BLOCK })[0]);
}

/**
 * One layer's decode attention at B sequences of L - 1 cached tokens, both ways over the same keys and values: a static
 * cache [B, Hkv, maxSeq, D], donated as the model's decode step donates it, and a pool [Hkv, B * maxSeq, D] of the same
 * bytes in which each sequence's blocks of 16 slots lie at random places (as after many allocations and frees).
 */
export async function attentionPair(dev: Device, s: AttnShape, B: number, L: number, seed: number) {
  const { Hq, Hkv, D, maxSeq } = s;
  const q = randomTensor(dev, [B, 1, Hq * D], seed);
  const k = randomTensor(dev, [B, 1, Hkv * D], seed + 1);
  const v = randomTensor(dev, [B, 1, Hkv * D], seed + 2);
  let pastK = randomTensor(dev, [B, Hkv, maxSeq, D], seed + 3, 'kv');
  let pastV = randomTensor(dev, [B, Hkv, maxSeq, D], seed + 4, 'kv');
  const slots = B * maxSeq;
  const keyCache = randomTensor(dev, [Hkv, slots, D], seed + 5, 'kv');
  const valueCache = randomTensor(dev, [Hkv, slots, D], seed + 6, 'kv');
  const order = shuffled(slots / BLOCK, seed + 7);
  const nb = Math.ceil((L - 1) / BLOCK);
  const blocks = new Int32Array(B * nb);
  for (let b = 0; b < B; b++) for (let i = 0; i < nb; i++) blocks[b * nb + i] = order[(b * maxSeq) / BLOCK + i];
  const slotOf = (b: number, j: number) => blocks[b * nb + Math.floor(j / BLOCK)] * BLOCK + (j % BLOCK);
  // The pool holds each sequence's cached rows at its slots, the static cache at its own rows; the rest is other data.
  const [ck, cv, pk, pv] = [keyCache, valueCache, pastK, pastV].map((t) => t.data as Float32Array);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hkv; h++) {
      for (let j = 0; j < L - 1; j++) {
        const from = ((b * Hkv + h) * maxSeq + j) * D;
        const to = (h * slots + slotOf(b, j)) * D;
        ck.set(pk.subarray(from, from + D), to);
        cv.set(pv.subarray(from, from + D), to);
      }
    }
  }
  keyCache.touch();
  valueCache.touch();
  const lens = dev.tensor(new Int32Array(B).fill(L - 1), [B], 'int32');
  const blockTable = dev.tensor(blocks, [B, nb], 'int32');
  const gqa = gqaGraph(s);
  const paged = pagedGraph(s);
  const runContiguous = async () => {
    const [att, nk, nv] = await dev.run(gqa, [q, k, v, pastK, pastV, lens], { donate: [3, 4] });
    [pastK, pastV] = [nk, nv];
    return att;
  };
  const runPaged = async () => (await dev.run(paged, [q, k, v, keyCache, valueCache, blockTable, lens]))[0];
  const a = await runContiguous();
  const b = await runPaged();
  const diff = maxAbsDiff(a.toFloat32(), b.toFloat32());
  a.dispose();
  b.dispose();
  return {
    diff,
    contiguous: async () => (await runContiguous()).dispose(),
    paged: async () => (await runPaged()).dispose(),
    dispose: () => {
      for (const t of [q, k, v, pastK, pastV, keyCache, valueCache, lens, blockTable]) t.dispose();
    },
  };
}

/** The kernels that do attention's work in each lowering (the rest build indices, masks and shapes, or check lengths). */
export const WORK = { contiguous: ['GroupQueryAttention'], paged: ['Gather', 'MatMul', 'FusedMatMul', 'Softmax', 'Where', 'Concat'] };

interface ProfileEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string };
}

type RunKernels = { kernelsUs: number; nodes: number; pieces: Record<string, number> };

/** Reads and removes onnxruntime's profile files under `prefix`: per session, its op types and each run's kernels. */
function readProfiles(prefix: string): { ops: Set<string>; runs: RunKernels[] }[] {
  const dir = tmpdir();
  const out = [];
  for (const f of readdirSync(dir).filter((n) => n.startsWith(`${basename(prefix)}_`) && n.endsWith('.json'))) {
    const path = join(dir, f);
    try {
      const events = JSON.parse(readFileSync(path, 'utf8')) as ProfileEvent[];
      const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts! - b.ts!);
      const kernels = events.filter((e) => e.cat === 'Node' && e.name?.endsWith('_kernel_time')).sort((a, b) => a.ts! - b.ts!);
      let i = 0;
      const perRun = runs.map((r) => {
        const k: RunKernels = { kernelsUs: 0, nodes: 0, pieces: {} };
        while (i < kernels.length && kernels[i].ts! < r.ts!) i++;
        for (; i < kernels.length && kernels[i].ts! <= r.ts! + r.dur!; i++) {
          const piece = kernels[i].args?.op_name ?? '?';
          k.pieces[piece] = (k.pieces[piece] ?? 0) + kernels[i].dur!;
          k.kernelsUs += kernels[i].dur!;
          k.nodes++;
        }
        return k;
      });
      out.push({ ops: new Set(kernels.map((e) => e.args?.op_name ?? '')), runs: perRun });
    } finally {
      rmSync(path, { force: true });
    }
  }
  return out;
}

/** Medians per run, the first runs (the correctness check and warm-up) left out. */
function kernelTime(runs: RunKernels[], work: readonly string[]): KernelTime {
  const timed = runs.slice(4);
  const names = [...new Set(timed.flatMap((r) => Object.keys(r.pieces)))];
  return {
    kernelsUs: median(timed.map((r) => r.kernelsUs)),
    nodes: median(timed.map((r) => r.nodes)),
    workUs: median(timed.map((r) => work.reduce((s, op) => s + (r.pieces[op] ?? 0), 0))),
    pieces: Object.fromEntries(names.map((n) => [n, median(timed.map((r) => r.pieces[n] ?? 0))]).sort((a, b) => (b[1] as number) - (a[1] as number))),
  };
}

/** The same pair on a cpu device whose sessions onnxruntime profiles: the time of each kernel, by piece. */
export async function profilePair(s: AttnShape, B: number, L: number, turns: number): Promise<{ contiguous: KernelTime; paged: KernelTime } | null> {
  const prefix = join(tmpdir(), `servelab-kv-profile-${process.pid}-${B}x${L}`);
  const dev = new Device('cpu (profiled)', new OrtBackend('cpu', { enableProfiling: true, profileFilePrefix: prefix }));
  try {
    const pair = await attentionPair(dev, s, B, L, 11);
    await inTurns(pair.contiguous, pair.paged, turns, { budgetMs: 15 });
    pair.dispose();
  } finally {
    await dev.dispose(); // releasing a session writes its profile
  }
  const sessions = readProfiles(prefix);
  const gqa = sessions.find((x) => x.ops.has('GroupQueryAttention'));
  const paged = sessions.find((x) => x.ops.has('Gather') && x.ops.has('Softmax') && !x.ops.has('GroupQueryAttention'));
  if (!gqa || !paged || gqa.runs.length < 8 || paged.runs.length < 8) return null;
  return { contiguous: kernelTime(gqa.runs, WORK.contiguous), paged: kernelTime(paged.runs, WORK.paged) };
}
