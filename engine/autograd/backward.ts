/**
 * Reverse-mode differentiation as a graph transform (micrograd's backward over a DAG, with each op's gradient
 * declared beside its shape inference): the forward graph is copied, the chain rule is applied node by node from the
 * loss back, and the result is one graph whose outputs are the loss and d loss / d param for each param, run as a
 * single session.
 */
import { ServelabError } from '../errors.ts';
import { Graph, type Node, type Value } from '../graph/graph.ts';
import { OPS, type OpSpec } from '../graph/ops.ts';
import { isFloat } from '../dtype/dtype.ts';
import { isStatic } from '../graph/dims.ts';

/** A gradient was asked for where there is none: a non-float value, an op without a gradient, a disconnected param. */
export class GradientError extends ServelabError {
  override name = 'GradientError';
}

export interface BackwardOptions {
  /** Name of the backward graph; default `${graph.name} backward`. */
  name?: string;
  /** Forward values to output too, after the loss and before the gradients (logits for a metric, say). */
  keep?: readonly Value[];
}

export interface BackwardGraph {
  graph: Graph;
  /** The forward values of the new graph, by the forward graph's values (inputs and constants included). */
  map: ReadonlyMap<Value, Value>;
}

/**
 * The gradient graph of a scalar loss: outputs [loss, ...keep, ...gradients of params], in that order; its inputs
 * are the forward graph's inputs, its constants the same tensors. Params are inputs or constants of the graph, of a
 * float dtype, on which the loss depends.
 */
export function backward(graph: Graph, loss: Value, params: readonly Value[], opts: BackwardOptions = {}): BackwardGraph {
  if (!graph.owns(loss)) throw new GradientError(`backward: the loss '${loss.name}' is not a value of graph '${graph.name}'`);
  if (!isFloat(loss.dtype)) throw new GradientError(`backward: the loss '${loss.name}' is ${loss.dtype}; it must be a float`);
  if (!isStatic(loss.shape) || loss.shape.some((d) => d !== 1)) {
    throw new GradientError(`backward: the loss must be a scalar (shape [] or all ones), got '${loss.name}' [${loss.shape.join(', ')}]`);
  }
  const leaves = new Set<Value>([...graph.inputs, ...graph.constants.keys()]);
  for (const p of params) {
    if (!leaves.has(p)) throw new GradientError(`backward: '${p.name}' is not an input or a constant of graph '${graph.name}'; gradients are taken with respect to those`);
    if (!isFloat(p.dtype)) throw new GradientError(`backward: '${p.name}' is ${p.dtype}; only float values have gradients`);
  }

  const g = new Graph(opts.name ?? `${graph.name} backward`);
  const map = new Map<Value, Value>();
  for (const v of graph.inputs) map.set(v, g.input(v.name, v.dtype, v.shape));
  for (const [v, t] of graph.constants) map.set(v, g.constant(v.name, t));
  for (const n of graph.nodes) {
    const outs = g.op(n.op, n.inputs.map((v) => (v ? map.get(v)! : null)), n.attrs);
    n.outputs.forEach((v, i) => map.set(v, outs[i]));
  }

  // Only nodes between a param and the loss need their gradient.
  // Each value that depends on a param, with the first such param (for error messages).
  const fromParams = new Map<Value, Value>(params.map((p) => [p, p]));
  for (const n of graph.nodes) {
    const src = n.inputs.find((v) => v && fromParams.has(v));
    if (src) for (const o of n.outputs) fromParams.set(o, fromParams.get(src)!);
  }
  const toLoss = new Set<Value>([loss]);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    if (n.outputs.some((o) => toLoss.has(o))) for (const v of n.inputs) if (v) toLoss.add(v);
  }
  for (const p of params) if (!toLoss.has(p)) throw new GradientError(`backward: the loss '${loss.name}' does not depend on '${p.name}'`);

  const grads = new Map<Value, Value>();
  const newLoss = map.get(loss)!;
  grads.set(loss, g.op('Constant', [], { value: 1, dtype: loss.dtype, shape: [...(loss.shape as number[])] })[0]);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i];
    const needed = n.inputs.map((v) => v !== null && fromParams.has(v) && toLoss.has(v) && isFloat(v.dtype));
    if (!needed.some(Boolean)) continue;
    const dy = n.outputs.map((o) => grads.get(o) ?? null);
    if (dy.every((d) => d === null)) continue;
    const spec: OpSpec = OPS[n.op];
    if (!spec.grad) throw new GradientError(`backward: ${n.op} has no gradient, and ${firstNeeded(n, needed, fromParams)} reaches the loss through it`);
    const dx = spec.grad({ g, inputs: n.inputs.map((v) => (v ? map.get(v)! : null)), outputs: n.outputs.map((v) => map.get(v)!), attrs: n.attrs, dy });
    n.inputs.forEach((v, j) => {
      if (!v || !needed[j]) return;
      const d = dx[j];
      if (!d) throw new GradientError(`backward: ${n.op} gives no gradient for its input ${j} ('${v.name}'), through which '${v.name}' reaches the loss`);
      const prev = grads.get(v);
      grads.set(v, prev ? g.op('Add', [prev, d])[0] : d);
    });
  }

  for (const p of params) if (!grads.has(p)) throw blocked(graph, p, toLoss);

  const keep = (opts.keep ?? []).map((v) => {
    const m = map.get(v);
    if (!m) throw new GradientError(`backward: keep '${v.name}' is not a value of graph '${graph.name}'`);
    return m;
  });
  g.output(newLoss, ...keep, ...params.map((p) => grads.get(p)!));
  return { graph: g, map };
}

/**
 * Why a param that reaches the loss got no gradient: every path from it passes a value of an integer dtype (codes of
 * QuantizeLinear, an ArgMax index), which carries none. Names the first op on such a path that makes one.
 */
function blocked(graph: Graph, p: Value, toLoss: ReadonlySet<Value>): GradientError {
  const from = new Set<Value>([p]);
  for (const n of graph.nodes) {
    if (!n.inputs.some((v) => v && from.has(v))) continue;
    const cut = n.outputs.find((o) => toLoss.has(o) && !isFloat(o.dtype));
    if (cut && n.inputs.some((v) => v && from.has(v) && isFloat(v.dtype))) {
      return new GradientError(
        `backward: '${p.name}' reaches the loss only through ${n.op}, whose output '${cut.name}' is ${cut.dtype}; integer values carry ` +
          'no gradient (so quantization is not differentiable; quantization-aware training passes the gradient straight through instead)',
      );
    }
    for (const o of n.outputs) from.add(o);
  }
  return new GradientError(`backward: no gradient reaches '${p.name}'`);
}

function firstNeeded(n: Node, needed: boolean[], fromParams: ReadonlyMap<Value, Value>): string {
  const v = n.inputs[needed.indexOf(true)]!;
  const p = fromParams.get(v)!;
  return p === v ? `'${v.name}'` : `'${p.name}' (by way of its input '${v.name}')`;
}
