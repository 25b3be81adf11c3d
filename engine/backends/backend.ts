/**
 * The backend interface: compile a whole graph once, run it at any binding of its symbolic dims. A backend whose
 * memory is not the host's (WebGPU) also has a DeviceMemory (tinygrad's allocator: copyin, copyout), and its runs may
 * take and leave tensors there. Layers, quantization and models never see a backend; the device's compile cache
 * decides when to compile.
 */
import type { Binding } from '../graph/bind.ts';
import type { Graph } from '../graph/graph.ts';
import type { DType } from '../dtype/dtype.ts';
import type { DeviceBuffer, Storage } from '../tensor/tensor.ts';

export const BACKENDS = ['cpu', 'webgpu', 'reference'] as const;
export type BackendName = (typeof BACKENDS)[number];

/** A compiled graph (an onnxruntime session). */
export interface Executable {
  release(): Promise<void>;
  /** [output index, input index] pairs: the output is written into that donated input's buffer. */
  readonly aliases?: readonly (readonly [number, number])[];
}

export interface CompileOptions {
  /**
   * Per graph output: whether its result stays in device memory. Where it stays is fixed when onnxruntime builds the
   * session, so this is part of what is compiled (and of the compile cache's key).
   */
  deviceOutputs?: readonly boolean[];
  /**
   * Per graph input: whether the caller donates its buffer to the run (buffer donation, as JAX's donate_argnums).
   * An op that updates a donated input, such as a KV cache written by GroupQueryAttention, may then write its output
   * into that input's buffer instead of a copy; which outputs do is decided when the graph is lowered.
   */
  donated?: readonly boolean[];
}

/** The compile cache's key suffix for these options: '' for all outputs on the host and nothing donated. */
export function compileKey(opts: CompileOptions = {}): string {
  const d = opts.deviceOutputs;
  const g = opts.donated;
  const bits = (x: readonly boolean[]) => x.map((b) => (b ? 1 : 0)).join('');
  return (d && d.some(Boolean) ? `|device:${bits(d)}` : '') + (g && g.some(Boolean) ? `|donated:${bits(g)}` : '');
}

/** A run's operand: host storage, or a buffer in the backend's device memory. */
export type Operand = Storage | DeviceBuffer;

export const isHostStorage = (x: Operand): x is Storage => ArrayBuffer.isView(x);

/** A backend's own memory, apart from the host's: every crossing goes through copyin or copyout (or a run). */
export interface DeviceMemory {
  /**
   * Bytes a tensor of this dtype takes there, which are also the bytes that cross on each transfer (onnxruntime
   * carries bf16 as fp32), or null when it cannot be held there at all.
   */
  bytes(dtype: DType, numel: number): number | null;
  /** Host storage (or another buffer) into a new device buffer. */
  copyin(dtype: DType, shape: readonly number[], src: Operand): Promise<DeviceBuffer>;
  /** A device buffer's values as new host storage, in the Tensor layout of its dtype; the buffer is untouched. */
  copyout(dtype: DType, shape: readonly number[], src: DeviceBuffer): Promise<Storage>;
}

export interface Backend {
  readonly name: BackendName;
  /** Whether a compiled session's memory shows in this process's resident set (the CPU's does; a GPU's does not). */
  readonly measuresHostMemory: boolean;
  /** Null where the backend computes in host memory (cpu, reference): every tensor there is a host tensor. */
  readonly deviceMemory: DeviceMemory | null;
  /** The least a compiled graph will hold: its constants as the backend carries them. */
  estimateBytes(graph: Graph): number;
  /** `lowered` is told the size of the encoded model, a temporary the session does not keep. */
  compile(graph: Graph, opts?: CompileOptions, hooks?: { lowered?(model: Uint8Array): void }): Promise<Executable>;
  /**
   * Pays the runtime's one-time start (onnxruntime's environment and thread pools, about 25 MB once per process) so
   * that it is not counted as the first session's memory.
   */
  ready?(): Promise<void>;
  /**
   * Feeds follow graph.inputs, results follow graph.outputs: host storage in the Tensor layout of its dtype, or a
   * device buffer for the outputs compiled to stay on the device (and for feeds already there).
   */
  run(exe: Executable, graph: Graph, feeds: readonly Operand[], binding: Binding): Promise<Operand[]>;
  /** Which execution provider ran each kernel type so far, e.g. { MatMul: 'webgpu', MatMulInteger: 'cpu' }. */
  placement(): Record<string, string>;
  /** Facts a learner should see next to a number: what is emulated, what fell back. */
  notes(): string[];
  dispose(): Promise<void>;
}
