/**
 * The backend interface: compile a whole graph once, run it at any binding of its symbolic dims on host-visible
 * storage. Layers, quantization and models never see a backend; the device's compile cache decides when to compile.
 */
import type { Binding } from '../graph/bind.ts';
import type { Graph } from '../graph/graph.ts';
import type { Storage } from '../tensor/tensor.ts';

export const BACKENDS = ['cpu', 'webgpu', 'reference'] as const;
export type BackendName = (typeof BACKENDS)[number];

/** A compiled graph (an onnxruntime session). */
export interface Executable {
  release(): Promise<void>;
}

export interface Backend {
  readonly name: BackendName;
  /** Whether a compiled session's memory shows in this process's resident set (the CPU's does; a GPU's does not). */
  readonly measuresHostMemory: boolean;
  /** The least a compiled graph will hold: its constants as the backend carries them. */
  estimateBytes(graph: Graph): number;
  compile(graph: Graph): Promise<Executable>;
  /**
   * Pays the runtime's one-time start (onnxruntime's environment and thread pools, about 25 MB once per process) so
   * that it is not counted as the first session's memory.
   */
  ready?(): Promise<void>;
  /** Feeds follow graph.inputs, results follow graph.outputs, each in the Tensor storage layout of its dtype. */
  run(exe: Executable, graph: Graph, feeds: readonly Storage[], binding: Binding): Promise<Storage[]>;
  /** Which execution provider ran each kernel type so far, e.g. { MatMul: 'webgpu', MatMulInteger: 'cpu' }. */
  placement(): Record<string, string>;
  /** Facts a learner should see next to a number: what is emulated, what fell back. */
  notes(): string[];
  dispose(): Promise<void>;
}
