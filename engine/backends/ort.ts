/** onnxruntime-node backends (CPU and WebGPU execution providers): graphs lowered to ONNX, one cached session per graph signature. */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// onnxruntime 1.30 otherwise starts telemetry (files under ~/.cache, HTTPS uploads); read when its environment starts.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
import * as ort from 'onnxruntime-node';
import type { Backend, BackendName } from './backend.ts';
import type { Graph } from '../graph/graph.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Storage } from '../tensor/tensor.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';
import { lowerGraph, type LowerOptions, type Lowered } from './onnx/lower.ts';
import { DeviceError } from '../errors.ts';

const ORT_TYPE = { fp32: 'float32', fp16: 'float16', bf16: 'float32', int8: 'int8', uint8: 'uint8', int32: 'int32' } as const;

interface Compiled {
  session: ort.InferenceSession;
  lowered: Lowered;
  /** Profile file prefix while this session's first run still has to report where its nodes ran. */
  profilePrefix: string | null;
}

const PROVIDER: Record<string, string> = { CPUExecutionProvider: 'cpu', WebGpuExecutionProvider: 'webgpu' };
let profileCount = 0;

/** Sessions hold compiled kernels and their own arenas; bound how many stay alive. */
const MAX_SESSIONS = 256;

export class OrtBackend implements Backend {
  private readonly sessions = new Map<string, Compiled>();
  private readonly pending = new Map<string, Promise<Compiled>>();
  private readonly ran = new Map<string, string>();
  private readonly lowerOpts: LowerOptions;

  constructor(
    readonly name: Extract<BackendName, 'cpu' | 'webgpu'>,
    private readonly sessionOptions: ort.InferenceSession.SessionOptions = {},
  ) {
    this.lowerOpts = { nativeFp16: name === 'webgpu' };
  }

  /** The compiled session for a graph, built once per signature. */
  async compile(graph: Graph): Promise<Compiled> {
    const hit = this.cached(graph.signature);
    if (hit) return hit;
    const key = graph.signature;
    let p = this.pending.get(key);
    if (!p) {
      p = this.create(graph).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  /** A compiled session if there is one, marked as most recently used (Map order is insertion order). */
  private cached(key: string): Compiled | undefined {
    const hit = this.sessions.get(key);
    if (hit) {
      this.sessions.delete(key);
      this.sessions.set(key, hit);
    }
    return hit;
  }

  private async create(graph: Graph): Promise<Compiled> {
    const lowered = lowerGraph(graph, this.lowerOpts);
    // The WebGPU provider hands ops it lacks to the CPU provider; only a profile of a real run tells which.
    const profilePrefix = this.name === 'webgpu' ? join(tmpdir(), `servelab-ort-${process.pid}-${profileCount++}`) : null;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(lowered.bytes, {
        executionProviders: [this.name],
        graphOptimizationLevel: 'all',
        // Warnings such as "some nodes were not assigned to the preferred provider" are reported through placement().
        logSeverityLevel: 3,
        ...(profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {}),
        ...this.sessionOptions,
      });
    } catch (e) {
      throw new DeviceError(`${this.name}: onnxruntime could not compile graph '${graph.name}' (${lowered.opTypes.join(', ')}): ${(e as Error).message}`);
    }
    const c: Compiled = { session, lowered, profilePrefix };
    this.sessions.set(graph.signature, c);
    if (!profilePrefix) for (const t of lowered.opTypes) this.ran.set(t, this.name);
    while (this.sessions.size > MAX_SESSIONS) {
      const [oldKey, old] = this.sessions.entries().next().value!;
      this.sessions.delete(oldKey);
      void old.session.release();
    }
    return c;
  }

  async run(graph: Graph, feeds: readonly Storage[]): Promise<Storage[]> {
    // The hot path of a decode loop: a cached session without the promise round trip of compile().
    const c = this.cached(graph.signature) ?? (await this.compile(graph));
    const { lowered } = c;
    const ortFeeds: Record<string, ort.Tensor> = {};
    graph.inputs.forEach((v, i) => {
      ortFeeds[lowered.inputNames[i]] = toOrt(v.dtype, feeds[i], v.shape);
    });
    const out = await c.session.run(ortFeeds);
    if (c.profilePrefix) this.readPlacement(c);
    return graph.outputs.map((v, i) => fromOrt(v.dtype, out[lowered.outputNames[i]]));
  }

  /** Records, from the session's profile, the provider of every node that ran, then stops profiling it. */
  private readPlacement(c: Compiled): void {
    const prefix = c.profilePrefix!;
    c.profilePrefix = null;
    c.session.endProfiling();
    const dir = tmpdir();
    const base = prefix.slice(dir.length + 1);
    for (const f of readdirSync(dir).filter((n) => n.startsWith(`${base}_`))) {
      const path = join(dir, f);
      try {
        const events = JSON.parse(readFileSync(path, 'utf8')) as { cat?: string; args?: { op_name?: string; provider?: string } }[];
        for (const e of events) {
          if (e.cat !== 'Node' || !e.args?.op_name || !e.args.provider) continue;
          const where = PROVIDER[e.args.provider] ?? e.args.provider;
          const prev = this.ran.get(e.args.op_name);
          this.ran.set(e.args.op_name, !prev || prev === where || prev.split('+').includes(where) ? (prev ?? where) : `${prev}+${where}`);
        }
      } finally {
        rmSync(path, { force: true });
      }
    }
  }

  placement(): Record<string, string> {
    return Object.fromEntries(this.ran);
  }

  notes(): string[] {
    const n = ['bf16: no onnxruntime kernel on this provider; computed in fp32 and rounded to bf16 after every op'];
    n.unshift(
      this.lowerOpts.nativeFp16
        ? 'fp16: native in the GPU shaders; sums inside a kernel may be rounded to fp16 as they accumulate'
        : 'fp16: the CPU has no fp16 GEMM; computed in fp32 and rounded to fp16 after every op',
    );
    if (this.name === 'webgpu') n.push('tensors live in host memory and are copied to the GPU for each run; kernels without a WebGPU implementation run on the CPU provider (see placement)');
    return n;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  async dispose(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map((c) => c.session.release()));
  }
}

// Wrapping storage in an ort.Tensor costs microseconds per feed; a tensor fed again (a weight, a decode step's
// state) reuses its wrapper. Keyed by the storage object, so a wrapper lives exactly as long as its data.
const wrappers = new WeakMap<Storage, ort.Tensor>();

function toOrt(dtype: DType, s: Storage, shape: readonly number[]): ort.Tensor {
  if (dtype === 'bf16') return new ort.Tensor('float32', bf16ArrayToFp32(s as Uint16Array), shape);
  const t = ORT_TYPE[dtype as keyof typeof ORT_TYPE];
  if (!t) throw new DeviceError(`dtype ${dtype} cannot be fed to onnxruntime; pack 4-bit values into uint8`);
  const hit = wrappers.get(s);
  if (hit && hit.type === t && hit.dims.length === shape.length && hit.dims.every((d, i) => d === shape[i])) return hit;
  const w = new ort.Tensor(t, s as never, shape);
  wrappers.set(s, w);
  return w;
}

function fromOrt(dtype: DType, t: ort.Tensor): Storage {
  // bf16 results were rounded inside the graph, so narrowing here is exact.
  if (dtype === 'bf16') return fp32ArrayToBf16(t.data as Float32Array);
  return t.data as Storage;
}
