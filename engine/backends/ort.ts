/** onnxruntime-node backends (CPU and WebGPU execution providers): a graph lowered to ONNX is compiled into one session. */
import { isMainThread } from 'node:worker_threads';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// onnxruntime 1.30 otherwise starts telemetry (files under ~/.cache, HTTPS uploads); read when its environment starts.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
import * as ort from 'onnxruntime-node';
import { isHostStorage, type Backend, type BackendName, type CompileOptions, type Executable, type Operand } from './backend.ts';
import type { Binding } from '../graph/bind.ts';
import { Graph } from '../graph/graph.ts';
import { resolveShape } from '../graph/dims.ts';
import { lowerGraph, type LowerOptions } from './onnx/lower.ts';
import { DeviceError } from '../errors.ts';
import { cpuInfo } from '../device/cpu_info.ts';
import { fromOrt, toOrt } from './ort_tensor.ts';
import { liveBuffer, OrtGpuMemory, type OrtBuffer } from './ort_gpu_memory.ts';

export interface OrtExecutable extends Executable {
  session: ort.InferenceSession;
  inputNames: string[];
  outputNames: string[];
  /** Per output: left in a GPU buffer by the session. */
  deviceOutputs: readonly boolean[];
  readonly aliases: readonly (readonly [number, number])[];
  /** Its outputs still alive in GPU buffers, which must not outlive the session (see ort_gpu_memory.ts). */
  buffers: Set<OrtBuffer>;
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
  readonly deviceMemory: OrtGpuMemory | null;

  constructor(
    readonly name: Extract<BackendName, 'cpu' | 'webgpu'>,
    private readonly sessionOptions: ort.InferenceSession.SessionOptions = {},
  ) {
    const vnni = cpuInfo().simd.some((f) => f === 'avx512_vnni' || f === 'avx_vnni');
    this.lowerOpts = { nativeFp16: name === 'webgpu', u8s8Saturates: process.arch === 'x64' && !vnni };
    // A worker thread shares the process's resident set with the other workers (engine/parallel): its growth would
    // count theirs, so there a session is counted at its constants' size only.
    this.measuresHostMemory = name === 'cpu' && isMainThread;
    this.deviceMemory = name === 'webgpu' ? new OrtGpuMemory((model, onDevice) => this.createSession(model, onDevice ? 'gpu-buffer' : undefined)) : null;
  }

  private createSession(model: Uint8Array, outputs?: ort.InferenceSession.SessionOptions['preferredOutputLocation'], extra: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
    return ort.InferenceSession.create(model, {
      executionProviders: [this.name],
      graphOptimizationLevel: 'all',
      // Warnings such as "some nodes were not assigned to the preferred provider" are reported through placement().
      logSeverityLevel: 3,
      // Spinning worker threads keep a core busy after each run, so a step of several graphs paid about twice per
      // graph; without spinning two graphs alternated cost what each does alone (npm run bench, section threads).
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
      ...(outputs ? { preferredOutputLocation: outputs } : {}),
      ...extra,
      ...this.sessionOptions,
    });
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

  async compile(graph: Graph, opts: CompileOptions = {}, hooks: { lowered?(model: Uint8Array): void } = {}): Promise<OrtExecutable> {
    // Outputs written into donated inputs need host buffers onnxruntime can be handed as preallocated outputs.
    const lowered = lowerGraph(graph, this.lowerOpts, this.deviceMemory ? [] : (opts.donated ?? []));
    hooks.lowered?.(lowered.bytes);
    // The WebGPU provider hands ops it lacks to the CPU provider; only a profile of a real run tells which.
    const profilePrefix = this.name === 'webgpu' ? join(tmpdir(), `servelab-ort-${process.pid}-${profileCount++}`) : null;
    const deviceOutputs = graph.outputs.map((_, i) => this.deviceMemory !== null && (opts.deviceOutputs?.[i] ?? false));
    const locations = deviceOutputs.some(Boolean) ? Object.fromEntries(lowered.outputNames.map((n, i) => [n, deviceOutputs[i] ? 'gpu-buffer' : 'cpu'] as const)) : undefined;
    let session: ort.InferenceSession;
    try {
      session = await this.createSession(lowered.bytes, locations, profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {});
    } catch (e) {
      throw new DeviceError(`${this.name}: onnxruntime could not compile graph '${graph.name}' (${lowered.opTypes.join(', ')}): ${(e as Error).message}`);
    }
    if (!profilePrefix) for (const t of lowered.opTypes) this.ran.set(t, this.name);
    // The model bytes (a copy of every constant) are not kept: the session holds what it needs.
    let released: Promise<void> | null = null;
    const c: OrtExecutable = {
      session,
      inputNames: lowered.inputNames,
      outputNames: lowered.outputNames,
      deviceOutputs,
      aliases: lowered.aliases,
      buffers: new Set(),
      profilePrefix,
      release: () =>
        (released ??= (async () => {
          if (c.buffers.size > 0) await this.deviceMemory!.rehome(c.buffers);
          // A session released before its first run still has its profile open: end it, and leave no file behind.
          if (c.profilePrefix) this.readPlacement(c, false);
          await session.release();
          this.live.delete(c);
        })()),
    };
    this.live.add(c);
    return c;
  }

  async run(exe: Executable, graph: Graph, feeds: readonly Operand[], binding: Binding): Promise<Operand[]> {
    const c = exe as OrtExecutable;
    const ortFeeds: Record<string, ort.Tensor> = {};
    const concrete = binding.sizes.size > 0;
    graph.inputs.forEach((v, i) => {
      const f = feeds[i];
      // A GPU buffer goes in as it is: no upload.
      ortFeeds[c.inputNames[i]] = isHostStorage(f) ? toOrt(v.dtype, f, concrete ? resolveShape(v.shape, binding.sizes) : (v.shape as readonly number[])) : liveBuffer(f as OrtBuffer).value;
    });
    const mem = this.deviceMemory;
    let fetches: Record<string, ort.Tensor | null> | undefined;
    if (c.aliases.length > 0) {
      // A preallocated output that is the input's own tensor: onnxruntime writes the result into that buffer.
      fetches = Object.fromEntries(c.outputNames.map((n) => [n, null]));
      for (const [o, i] of c.aliases) fetches[c.outputNames[o]] = ortFeeds[c.inputNames[i]];
    }
    const running = fetches ? c.session.run(ortFeeds, fetches) : c.session.run(ortFeeds);
    const out = await (mem ? mem.track(running) : running);
    if (c.profilePrefix) this.readPlacement(c);
    const aliased = new Map(c.aliases.map(([o, i]) => [o, feeds[i]]));
    return graph.outputs.map((v, i) => {
      // Written into the donated feed's own buffer: that storage is the result (the binding's copy is dropped).
      if (aliased.has(i)) return aliased.get(i)!;
      const o = out[c.outputNames[i]] as ort.Tensor;
      return c.deviceOutputs[i] ? mem!.wrap(o, c.buffers, v.dtype) : fromOrt(v.dtype, o);
    });
  }

  /** Records, from the session's profile, the provider of every node that ran (unless `read` is false), then stops profiling it and removes the profile's files. */
  private readPlacement(c: OrtExecutable, read = true): void {
    const prefix = c.profilePrefix!;
    c.profilePrefix = null;
    c.session.endProfiling();
    const dir = tmpdir();
    const base = prefix.slice(dir.length + 1);
    for (const f of readdirSync(dir).filter((n) => n.startsWith(`${base}_`))) {
      const path = join(dir, f);
      try {
        if (!read) continue;
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
    if (this.name === 'webgpu') {
      n.push(
        'tensors: host tensors are copied to the GPU on every run that takes them and results come back to the host, unless ' +
          "kept there: device.run(graph, feeds, { keep: 'device' }) leaves outputs in GPU buffers that feed later runs without a copy " +
          '(await t.read() brings one back); each crossing is counted in device.stats() (hostToDeviceBytes, deviceToHostBytes)',
        'tensors on the GPU: bf16 is held as fp32 (4 bytes a value); int8 cannot be held in a GPU buffer by onnxruntime-node 1.30 and comes back to the host',
        'kernels without a WebGPU implementation run on the CPU provider (see placement); the copies onnxruntime makes around them are not counted',
      );
    }
    return n;
  }

  async dispose(): Promise<void> {
    // GPU buffers go before their sessions (one freed after its session crashes the process), once no run reads them.
    await this.deviceMemory?.close();
    for (const c of this.live) for (const b of [...c.buffers]) b.kill();
    await Promise.all([...this.live].map((c) => c.release()));
    await this.deviceMemory?.dispose();
  }
}
