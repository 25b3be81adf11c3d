/** onnxruntime-node backends (CPU and WebGPU execution providers): a graph lowered to ONNX is compiled into one session. */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// onnxruntime 1.30 otherwise starts telemetry (files under ~/.cache, HTTPS uploads); read when its environment starts.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
import * as ort from 'onnxruntime-node';
import type { Backend, BackendName, Executable } from './backend.ts';
import type { Binding } from '../graph/bind.ts';
import { Graph } from '../graph/graph.ts';
import { resolveShape } from '../graph/dims.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Storage } from '../tensor/tensor.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../dtype/bf16.ts';
import { lowerGraph, type LowerOptions } from './onnx/lower.ts';
import { DeviceError } from '../errors.ts';
import { cpuInfo } from '../device/cpu_info.ts';

const ORT_TYPE = { fp32: 'float32', fp16: 'float16', bf16: 'float32', int8: 'int8', uint8: 'uint8', int32: 'int32', bool: 'bool' } as const;

export interface OrtExecutable extends Executable {
  session: ort.InferenceSession;
  inputNames: string[];
  outputNames: string[];
  /** Profile file prefix while this session's first run still has to report where its nodes ran. */
  profilePrefix: string | null;
}

const PROVIDER: Record<string, string> = { CPUExecutionProvider: 'cpu', WebGpuExecutionProvider: 'webgpu' };
let profileCount = 0;
const started: Partial<Record<string, Promise<void>>> = {};

export class OrtBackend implements Backend {
  private readonly ran = new Map<string, string>();
  private readonly lowerOpts: LowerOptions;
  private readonly live = new Set<OrtExecutable>();
  readonly measuresHostMemory: boolean;

  constructor(
    readonly name: Extract<BackendName, 'cpu' | 'webgpu'>,
    private readonly sessionOptions: ort.InferenceSession.SessionOptions = {},
  ) {
    const vnni = cpuInfo().simd.some((f) => f === 'avx512_vnni' || f === 'avx_vnni');
    this.lowerOpts = { nativeFp16: name === 'webgpu', u8s8Saturates: process.arch === 'x64' && !vnni };
    this.measuresHostMemory = name === 'cpu';
  }

  ready(): Promise<void> {
    started[this.name] ??= (async () => {
      const g = new Graph('start');
      const x = g.input('x', 'fp32', [1]);
      g.output(g.op('Add', [x, x])[0]);
      const exe = await this.compile(g);
      await this.run(exe, g, [new Float32Array(1)], { sizes: new Map(), outputShapes: [[1]] });
      await exe.release();
    })();
    return started[this.name]!;
  }

  /** Constants as the session carries them: emulated fp16 and bf16 travel as fp32. */
  estimateBytes(graph: Graph): number {
    let n = 0;
    for (const t of graph.constants.values()) n += t.dtype === 'bf16' || (t.dtype === 'fp16' && !this.lowerOpts.nativeFp16) ? t.numel * 4 : t.bytes;
    return n;
  }

  async compile(graph: Graph): Promise<OrtExecutable> {
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
    if (!profilePrefix) for (const t of lowered.opTypes) this.ran.set(t, this.name);
    // The model bytes (a copy of every constant) are not kept: the session holds what it needs.
    const c: OrtExecutable = {
      session,
      inputNames: lowered.inputNames,
      outputNames: lowered.outputNames,
      profilePrefix,
      release: async () => {
        if (!this.live.delete(c)) return;
        await session.release();
      },
    };
    this.live.add(c);
    return c;
  }

  async run(exe: Executable, graph: Graph, feeds: readonly Storage[], binding: Binding): Promise<Storage[]> {
    const c = exe as OrtExecutable;
    const ortFeeds: Record<string, ort.Tensor> = {};
    const concrete = binding.sizes.size > 0;
    graph.inputs.forEach((v, i) => {
      ortFeeds[c.inputNames[i]] = toOrt(v.dtype, feeds[i], concrete ? resolveShape(v.shape, binding.sizes) : (v.shape as readonly number[]));
    });
    const out = await c.session.run(ortFeeds);
    if (c.profilePrefix) this.readPlacement(c);
    return graph.outputs.map((v, i) => fromOrt(v.dtype, out[c.outputNames[i]]));
  }

  /** Records, from the session's profile, the provider of every node that ran, then stops profiling it. */
  private readPlacement(c: OrtExecutable): void {
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

  async dispose(): Promise<void> {
    await Promise.all([...this.live].map((c) => c.release()));
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
