/** onnxruntime-node backends (CPU and WebGPU execution providers): graphs lowered to ONNX, one cached session per graph signature. */
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
}

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
    const key = graph.signature;
    const hit = this.sessions.get(key);
    if (hit) {
      // Map order is insertion order: re-inserting keeps the least recently used first, for eviction.
      this.sessions.delete(key);
      this.sessions.set(key, hit);
      return hit;
    }
    let p = this.pending.get(key);
    if (!p) {
      p = this.create(graph).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private async create(graph: Graph): Promise<Compiled> {
    const lowered = lowerGraph(graph, this.lowerOpts);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(lowered.bytes, {
        executionProviders: [this.name],
        graphOptimizationLevel: 'all',
        ...this.sessionOptions,
      });
    } catch (e) {
      throw new DeviceError(`${this.name}: onnxruntime could not compile graph '${graph.name}' (${lowered.opTypes.join(', ')}): ${(e as Error).message}`);
    }
    const c = { session, lowered };
    this.sessions.set(graph.signature, c);
    for (const t of lowered.opTypes) this.ran.set(t, this.name);
    while (this.sessions.size > MAX_SESSIONS) {
      const [oldKey, old] = this.sessions.entries().next().value!;
      this.sessions.delete(oldKey);
      void old.session.release();
    }
    return c;
  }

  async run(graph: Graph, feeds: readonly Storage[]): Promise<Storage[]> {
    const { session, lowered } = await this.compile(graph);
    const ortFeeds: Record<string, ort.Tensor> = {};
    graph.inputs.forEach((v, i) => {
      ortFeeds[lowered.inputNames[i]] = toOrt(v.dtype, feeds[i], v.shape);
    });
    const out = await session.run(ortFeeds);
    return graph.outputs.map((v, i) => fromOrt(v.dtype, out[lowered.outputNames[i]]));
  }

  placement(): Record<string, string> {
    return Object.fromEntries(this.ran);
  }

  notes(): string[] {
    const n = ['bf16: no onnxruntime kernel on this provider; computed in fp32 and rounded to bf16 after every op'];
    if (!this.lowerOpts.nativeFp16) n.unshift('fp16: the CPU has no fp16 GEMM; computed in fp32 and rounded to fp16 after every op');
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

function toOrt(dtype: DType, s: Storage, shape: readonly number[]): ort.Tensor {
  if (dtype === 'bf16') return new ort.Tensor('float32', bf16ArrayToFp32(s as Uint16Array), shape);
  const t = ORT_TYPE[dtype as keyof typeof ORT_TYPE];
  if (!t) throw new DeviceError(`dtype ${dtype} cannot be fed to onnxruntime; pack 4-bit values into uint8`);
  return new ort.Tensor(t, s as never, shape);
}

function fromOrt(dtype: DType, t: ort.Tensor): Storage {
  // bf16 results were rounded inside the graph, so narrowing here is exact.
  if (dtype === 'bf16') return fp32ArrayToBf16(t.data as Float32Array);
  return t.data as Storage;
}
