/**
 * The engine core, measured: sessions compiled over a batch x sequence sweep (ONNX symbolic dims: one session per
 * graph structure, where a session per exact shape cost 745 MiB for 16 batch sizes), step time of a shape-polymorphic
 * session against one compiled for the exact shape, the memory tracker against the process's growth, the bytes that
 * cross between host and GPU per step on WebGPU, and the 4-bit decode GEMV through a shape-polymorphic Linear.
 */
import { createDevice, Graph, Linear, matmul, softmax, webgpuUnavailable, type LinearFormat, type Tensor } from '../engine/index.ts';
import { lowerGraph } from '../engine/backends/onnx/lower.ts';
import { decodeModel } from '../engine/backends/onnx/proto.ts';
import { makeBlock } from './block.ts';
import { memoryInFreshProcess, type MemoryCheck } from './memory.ts';
import { randomTensor } from './random.ts';
import { ratioOf } from './stats.ts';

export interface SessionSweep {
  batch: number[];
  seq: number[];
  /** (batch, seq) pairs run: every pair of the two lists up to maxTokens tokens. */
  shapes: number;
  maxTokens: number;
  /** Sessions each graph structure compiled over the whole sweep. */
  structures: { what: string; sessions: number }[];
  total: number;
  /** What a session per exact shape would have compiled: structures x shapes. */
  perExactShape: number;
}

export interface StepTimeRow {
  batch: number;
  seq: number;
  /** Median ms per step of the session with symbolic batch and seq. */
  polyMs: number;
  /** Median ms per step of a session compiled for exactly this shape. */
  exactMs: number;
  /** polyMs / exactMs: the median over interleaved rounds of each round's ratio. */
  ratio: number;
  /**
   * ONNX nodes each graph lowers to: a symbolic one also reads the run's sizes (Shape, Concat) for its reshapes,
   * expands the int8 zero point and builds the causal mask at run time, each node a kernel call per step.
   */
  onnxNodes: { symbolic: number; exact: number };
}

/** Bytes crossing per step, as the device counts them (dev.stats()). */
export interface Crossing {
  hostToDeviceBytes: number;
  deviceToHostBytes: number;
}

export type Transfer =
  | {
      device: string;
      batch: number;
      seq: number;
      steps: number;
      /** x's bytes, and the step output's, as tensors. */
      feedBytes: number;
      outputBytes: number;
      /** Per step, x fed from the host and the output fetched. */
      host: Crossing;
      /** Per step, each output kept on the GPU and fed to the next step (keep: 'device'), as stacked layers chain. */
      resident: Crossing;
      /** The resident chain's one upload of x and one read of its last output. */
      residentOnce: Crossing;
    }
  | { device: 'webgpu'; unavailable: string };

export interface Gemv4 {
  k: number;
  n: number;
  fp32Ms: number;
  int4Ms: number;
  /** fp32Ms / int4Ms, both through shape-polymorphic Linear graphs. */
  speedup: number;
  /** The same int4 layer in a graph compiled for exactly [1, k]. */
  int4ExactMs: number;
  /** int4Ms / int4ExactMs. */
  polyRatio: number;
  /** Sessions each layer compiled for m = 1..4: one, if its graph is shape-polymorphic. */
  sessionsPerLayer: number;
}

export interface EngineBench {
  sessions: SessionSweep;
  stepTime: { hidden: number; heads: number; rows: StepTimeRow[] };
  /** Null where sessions do not live in host memory (webgpu, reference). */
  memory: MemoryCheck | null;
  transfer: Transfer;
  gemv4: Gemv4;
  seconds: number;
}

const log = (s: string) => process.stderr.write(`${s}\n`);
const H_SWEEP = 64;

async function sessionSweep(kind: string, quick: boolean): Promise<SessionSweep> {
  const dev = await createDevice(kind);
  try {
    const block = await makeBlock(dev, { hidden: H_SWEEP, heads: 4, mlp: ['int8', 'int4'] });
    const formats: LinearFormat[] = ['fp32', 'int8', 'int4'];
    const src = randomTensor(dev, [H_SWEEP, H_SWEEP], 7);
    const lins = await Promise.all(formats.map((format) => Linear.fromWeights(dev, src, { format, label: `sweep.${format}` })));
    const batch = quick ? [1, 7, 64] : [1, 2, 4, 8, 16, 32, 64];
    const seq = quick ? [1, 13, 512] : [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
    const maxTokens = quick ? 4096 : 8192;
    const graph = block.build('batch', 'seq');
    const counts = new Map<string, number>();
    const count = async (what: string, fn: () => Promise<Tensor | Tensor[]>) => {
      const before = dev.stats().sessionsCreated;
      const out = await fn();
      for (const t of Array.isArray(out) ? out : [out]) t.dispose();
      counts.set(what, (counts.get(what) ?? 0) + dev.stats().sessionsCreated - before);
    };
    let shapes = 0;
    for (const b of batch) {
      for (const s of seq) {
        if (b * s > maxTokens) continue;
        shapes++;
        const x = randomTensor(dev, [b, s, H_SWEEP], b * 1000 + s);
        await count('decoder block graph (fp32 attention, int8 and int4 MLP)', () => dev.run(graph, [x]));
        for (const l of lins) await count(`Linear ${l.format}.forward`, () => l.forward(x));
        await count('eager softmax', () => softmax(x));
        await count('eager matmul', () => matmul(x, src));
        x.dispose();
      }
    }
    const structures = [...counts].map(([what, sessions]) => ({ what, sessions }));
    const total = structures.reduce((p, r) => p + r.sessions, 0);
    return { batch, seq, shapes, maxTokens, structures, total, perExactShape: structures.length * shapes };
  } finally {
    await dev.dispose();
  }
}

const onnxNodeCount = (g: Graph) => decodeModel(lowerGraph(g, { nativeFp16: false }).bytes).graph.node.length;

async function stepTime(kind: string, quick: boolean): Promise<EngineBench['stepTime']> {
  const dev = await createDevice(kind);
  // A decode step of a small layer is mostly per-node cost, which is where symbolic dims could show.
  const hidden = 512;
  const heads = 8;
  try {
    const block = await makeBlock(dev, { hidden, heads, mlp: ['int8', 'int4'] });
    // As a model runs them: decode steps on a graph of one new token at any batch, prefill on any batch and length.
    const decode = block.build('batch', 1);
    const prefill = block.build('batch', 'seq');
    const shapes: [number, number][] = quick ? [[1, 1], [8, 1], [1, 32]] : [[1, 1], [16, 1], [1, 128], [4, 128]];
    const rows: StepTimeRow[] = [];
    for (const [b, s] of shapes) {
      const exact = block.build(b, s);
      const poly = s === 1 ? decode : prefill;
      const x = randomTensor(dev, [b, s, hidden], b + s);
      const step = (g: Graph) => async () => (await dev.run(g, [x]))[0].dispose();
      const r = await ratioOf(step(poly), step(exact), quick ? 3 : 7, quick ? 5 : 15);
      const onnxNodes = { symbolic: onnxNodeCount(poly), exact: onnxNodeCount(exact) };
      rows.push({ batch: b, seq: s, polyMs: r.aMs, exactMs: r.bMs, ratio: r.ratio, onnxNodes });
      log(`    step ${b} x ${s} x ${hidden}: symbolic ${r.aMs.toFixed(3)} ms, exact ${r.bMs.toFixed(3)} ms, ratio ${r.ratio.toFixed(3)}`);
      x.dispose();
    }
    return { hidden, heads, rows };
  } finally {
    await dev.dispose();
  }
}

/**
 * Bytes fed to and fetched from the GPU per step of a decoder block, as the device counts them: with every tensor on
 * the host, and with the residual stream kept on the GPU from step to step.
 */
async function transfer(): Promise<Transfer> {
  const why = await webgpuUnavailable();
  if (why !== null) return { device: 'webgpu', unavailable: why };
  const dev = await createDevice('webgpu');
  try {
    const block = await makeBlock(dev, { hidden: H_SWEEP, heads: 4, mlp: ['fp32', 'fp32'] });
    const g = block.build('batch', 'seq');
    const [batch, seq, steps] = [2, 8, 3];
    const x = randomTensor(dev, [batch, seq, H_SWEEP], 3);
    const crossed = (a: Crossing, b: Crossing, n: number): Crossing => ({
      hostToDeviceBytes: (b.hostToDeviceBytes - a.hostToDeviceBytes) / n,
      deviceToHostBytes: (b.deviceToHostBytes - a.deviceToHostBytes) / n,
    });
    (await dev.run(g, [x]))[0].dispose();
    (await dev.run(g, [x], { keep: 'device' }))[0].dispose();
    let s0 = dev.stats();
    let outputBytes = 0;
    for (let i = 0; i < steps; i++) {
      const [y] = await dev.run(g, [x]);
      outputBytes = y.bytes;
      y.dispose();
    }
    const host = crossed(s0, dev.stats(), steps);
    s0 = dev.stats();
    let h = await dev.toDevice(x);
    const s1 = dev.stats();
    for (let i = 0; i < steps; i++) {
      const [next] = await dev.run(g, [h], { keep: 'device' });
      h.dispose();
      h = next;
    }
    const s2 = dev.stats();
    await h.read();
    h.dispose();
    const resident = crossed(s1, s2, steps);
    const once = crossed(s0, dev.stats(), 1);
    const residentOnce = { hostToDeviceBytes: once.hostToDeviceBytes - resident.hostToDeviceBytes * steps, deviceToHostBytes: once.deviceToHostBytes - resident.deviceToHostBytes * steps };
    return { device: dev.name, batch, seq, steps, feedBytes: x.bytes, outputBytes, host, resident, residentOnce };
  } finally {
    await dev.dispose();
  }
}

/**
 * The decode GEMV through Linear layers whose graphs take any batch: fp32 against 4-bit (MatMulNBits, the weight a
 * graph constant, accuracy level 4), and the 4-bit layer against a graph compiled for exactly one row.
 */
async function gemv4(kind: string, quick: boolean): Promise<Gemv4> {
  const K = 4096;
  const dev = await createDevice(kind);
  try {
    const src = randomTensor(dev, [K, K], 5);
    const fp32 = await Linear.fromWeights(dev, src, { format: 'fp32', label: 'gemv.fp32' });
    const int4 = await Linear.fromWeights(dev, src, { format: 'int4', accuracyLevel: 4, label: 'gemv.int4' });
    src.dispose();
    let sessionsPerLayer = 0;
    for (const lin of [fp32, int4]) {
      const before = dev.stats().sessionsCreated;
      for (let m = 1; m <= 4; m++) {
        const x = randomTensor(dev, [m, K], m);
        (await lin.forward(x)).dispose();
        x.dispose();
      }
      sessionsPerLayer = Math.max(sessionsPerLayer, dev.stats().sessionsCreated - before);
    }
    const exact = new Graph('int4 GEMV, exact shape');
    exact.output(int4.addTo(exact, exact.input('x', 'fp32', [1, K])));
    const x = randomTensor(dev, [1, K], 9);
    const fwd = (l: Linear) => async () => (await l.forward(x)).dispose();
    const runs = quick ? 10 : 30;
    const r = await ratioOf(fwd(fp32), fwd(int4), quick ? 3 : 7, runs);
    const p = await ratioOf(fwd(int4), async () => (await dev.run(exact, [x]))[0].dispose(), 3, runs);
    x.dispose();
    return { k: K, n: K, fp32Ms: r.aMs, int4Ms: r.bMs, speedup: r.ratio, int4ExactMs: p.bMs, polyRatio: p.ratio, sessionsPerLayer };
  } finally {
    await dev.dispose();
  }
}

export async function benchEngine(kind: string, opts: { quick?: boolean } = {}): Promise<EngineBench> {
  const quick = opts.quick ?? false;
  const t0 = performance.now();
  const timed = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    const r = await fn();
    log(`  engine: ${what} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    return r;
  };
  const sessions = await timed('sessions over a batch x sequence sweep', () => sessionSweep(kind, quick));
  const steps = await timed('shape-polymorphic step against exact-shape sessions', () => stepTime(kind, quick));
  const memory = await timed('tracker against the memory growth of a fresh process', () => memoryInFreshProcess(kind, quick));
  const moved = await timed('bytes between host and GPU per step (webgpu)', () => transfer());
  const gemv = await timed('4-bit decode GEMV through Linear', () => gemv4(kind, quick));
  return { sessions, stepTime: steps, memory, transfer: moved, gemv4: gemv, seconds: (performance.now() - t0) / 1000 };
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export function printEngine(e: EngineBench): string[] {
  const out = [`\nengine: sessions over batch ${e.sessions.batch.join(',')} x seq ${e.sessions.seq.join(',')} (${e.sessions.shapes} shapes, at most ${e.sessions.maxTokens} tokens)`];
  for (const s of e.sessions.structures) out.push(`  ${s.what.padEnd(58)} ${String(s.sessions).padStart(3)} session${s.sessions === 1 ? '' : 's'}`);
  out.push(`  total ${e.sessions.total} (a session per exact shape: ${e.sessions.perExactShape})`);
  out.push(`\nengine: decoder block step, hidden ${e.stepTime.hidden}, symbolic session against an exact-shape one (median of interleaved rounds)`);
  for (const r of e.stepTime.rows) {
    out.push(`  ${`${r.batch} x ${r.seq}`.padEnd(10)} symbolic ${r.polyMs.toFixed(3).padStart(8)} ms  exact ${r.exactMs.toFixed(3).padStart(8)} ms  ratio ${r.ratio.toFixed(3)}  (ONNX nodes ${r.onnxNodes.symbolic} vs ${r.onnxNodes.exact})`);
  }
  if (e.memory) {
    const tags = Object.entries(e.memory.byTag).filter(([, b]) => b > 0).map(([t, b]) => `${t} ${mib(b)}`).join(', ');
    out.push(`\nengine: tracker ${mib(e.memory.trackerBytes)} against resident-set growth ${mib(e.memory.rssBytes)} over ${e.memory.steps} steps (${(e.memory.ratio * 100).toFixed(1)}%; ${tags})`);
  }
  const t = e.transfer;
  out.push('unavailable' in t
    ? `engine: webgpu transfers not measured: ${t.unavailable}`
    : `engine: webgpu bytes per step (${t.batch} x ${t.seq}; x ${t.feedBytes} B, output ${t.outputBytes} B): on the host ${t.host.hostToDeviceBytes} B up, ${t.host.deviceToHostBytes} B down; ` +
      `kept on the GPU ${t.resident.hostToDeviceBytes} B up, ${t.resident.deviceToHostBytes} B down (once: ${t.residentOnce.hostToDeviceBytes} B up, ${t.residentOnce.deviceToHostBytes} B down)`);
  const g = e.gemv4;
  out.push(`engine: decode GEMV 1x${g.k}x${g.n} through Linear: fp32 ${g.fp32Ms.toFixed(3)} ms, int4 ${g.int4Ms.toFixed(3)} ms (${g.speedup.toFixed(2)}x; exact-shape int4 ${g.int4ExactMs.toFixed(3)} ms, ratio ${g.polyRatio.toFixed(3)}); ${g.sessionsPerLayer} session per layer for m = 1..4`);
  return out;
}
