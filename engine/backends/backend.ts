/** The backend interface: run a whole graph on host-visible storage. Layers, quantization and models never see a backend. */
import type { Graph } from '../graph/graph.ts';
import type { Storage } from '../tensor/tensor.ts';

export const BACKENDS = ['cpu', 'webgpu', 'reference'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface Backend {
  readonly name: BackendName;
  /** Feeds follow graph.inputs, results follow graph.outputs, each in the Tensor storage layout of its dtype. */
  run(graph: Graph, feeds: readonly Storage[]): Promise<Storage[]>;
  /** Which execution provider ran each kernel type so far, e.g. { MatMul: 'webgpu', MatMulInteger: 'cpu' }. */
  placement(): Record<string, string>;
  /** Facts a learner should see next to a number: what is emulated, what fell back. */
  notes(): string[];
  dispose(): Promise<void>;
}
