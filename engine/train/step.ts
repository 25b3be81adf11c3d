/**
 * A training step as two graph runs: the backward graph (loss, kept values and every gradient in one session,
 * engine/autograd/backward.ts), then the optimizer's update of every parameter in one more. Parameters are inputs
 * of the graph, fed from device tensors, so neither session is rebuilt when they change.
 */
import type { Graph } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import type { AdamW } from './adamw.ts';

export interface Gradients {
  loss: number;
  /** The backward graph's kept forward values (BackwardOptions.keep), in order. */
  keep: Tensor[];
  /** d loss / d param, tagged 'grads'. */
  grads: Tensor[];
  dispose(): void;
}

/**
 * Runs a backward graph (outputs [loss, ...keep, ...grads]) on `feeds`, one per input of the graph; the gradients
 * are retagged 'grads' so the tracker tells them from activations.
 */
export async function runBackward(dev: Device, graph: Graph, feeds: readonly Tensor[], numKeep = 0): Promise<Gradients> {
  const [lossT, ...rest] = await dev.run(graph, feeds);
  const loss = lossT.toFloat32()[0];
  lossT.dispose();
  const keep = rest.slice(0, numKeep);
  const grads = rest.slice(numKeep).map((t) => t.retag('grads'));
  return {
    loss,
    keep,
    grads,
    dispose: () => {
      for (const t of [...keep, ...grads]) t.dispose();
    },
  };
}

/**
 * One step: gradients at `feeds`, then the optimizer's update; returns the loss before the update. A loss that is not
 * finite makes no update and throws, its message led by `where` (default 'trainStep').
 */
export async function trainStep(dev: Device, graph: Graph, feeds: readonly Tensor[], opt: AdamW, lr?: number, where = 'trainStep'): Promise<number> {
  const out = await runBackward(dev, graph, feeds);
  try {
    if (!Number.isFinite(out.loss)) throw new ServelabError(`${where}: the loss is ${out.loss}; no update was made`);
    await opt.step(out.grads, lr);
    return out.loss;
  } finally {
    out.dispose();
  }
}
