/**
 * Dataflow graph of engine ops: values with inferred shapes (sizes or named symbolic dims) and dtypes, run whole by a
 * backend as one session. A graph is built once and run at every size its symbols take.
 */
import { ServelabError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { OPS, type Attrs, type OpName } from './ops.ts';
import { checkInputDim, collectConstraints, symbolsOf, type DimConstraint, type Shape } from './dims.ts';

export interface Value {
  readonly id: number;
  readonly name: string;
  readonly dtype: DType;
  readonly shape: Shape;
}

export interface Node {
  readonly op: OpName;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
}

/**
 * Built once, run many times: the device's compile cache keys the compiled session by `structure` (ops, attributes,
 * wiring, shapes with their symbols, dtypes) and the identity of each constant, so a decode step built the same way
 * each step, at any batch size or length, pays for compilation once.
 */
export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: Node[] = [];
  /**
   * Values bound to a tensor when the graph is built: weights. A backend may bake them into the compiled session
   * (onnxruntime then prepacks them once, which a 4-bit GEMV needs to be fast) instead of taking them as feeds on
   * every run. A session built from a constant is never used after the tensor's version changes.
   */
  readonly constants = new Map<Value, Tensor>();
  /** Dim equalities inference could not decide (a symbol against a size or another symbol): checked at every run. */
  readonly constraints: DimConstraint[] = [];
  private nextId = 0;
  private readonly values = new Set<Value>();
  private sig: string | null = null;

  constructor(readonly name = 'graph') {}

  /** A feed: its shape holds sizes and symbol names, e.g. ['batch', 'seq', 4096]. */
  input(name: string, dtype: DType, shape: Shape): Value {
    if (!Array.isArray(shape)) throw new ServelabError(`shape of input '${name}' must be an array, got ${JSON.stringify(shape)}`);
    const dims = shape.map((d, i) => checkInputDim(d, `input '${name}' axis ${i}`));
    if (this.inputs.some((v) => v.name === name)) throw new ServelabError(`graph '${this.name}' already has an input '${name}'`);
    return this.add(this.inputs, { id: this.nextId++, name, dtype, shape: dims });
  }

  /** Binds a tensor as a constant of the graph. The tensor must stay alive while the graph is used. */
  constant(name: string, t: Tensor): Value {
    if (t.disposed) throw new ServelabError(`constant '${name}' of graph '${this.name}': tensor #${t.id} was disposed`);
    const v: Value = { id: this.nextId++, name, dtype: t.dtype, shape: [...t.shape] };
    this.constants.set(v, t);
    this.values.add(v);
    this.sig = null;
    return v;
  }

  /** Adds a node; shape and dtype errors are raised here, before any backend sees the graph. */
  op(op: OpName, inputs: readonly (Value | null | undefined)[], attrs: Attrs = {}): Value[] {
    const spec = OPS[op];
    if (!spec) throw new ServelabError(`unknown op '${op}'; known ops: ${Object.keys(OPS).join(', ')}`);
    const ins = inputs.map((v) => v ?? null);
    for (const v of ins) {
      if (v && !this.owns(v)) throw new ServelabError(`${op}: input '${v.name}' belongs to another graph`);
    }
    const found: DimConstraint[] = [];
    const types = collectConstraints(found, () => spec.infer(ins, attrs));
    this.constraints.push(...found);
    const outs = types.map((o, i) => {
      const v: Value = { id: this.nextId++, name: `${op.toLowerCase()}_${this.nodes.length}_${i}`, ...o };
      this.values.add(v);
      return v;
    });
    this.nodes.push({ op, inputs: ins, outputs: outs, attrs });
    this.sig = null;
    return outs;
  }

  output(...values: Value[]): this {
    for (const v of values) {
      if (!this.owns(v)) throw new ServelabError(`output '${v.name}' belongs to another graph`);
      this.outputs.push(v);
    }
    this.sig = null;
    return this;
  }

  /** The symbol names the inputs use, in first-use order. */
  symbols(): string[] {
    return [...new Set(this.inputs.flatMap((v) => symbolsOf(v.shape)))];
  }

  /**
   * Everything that decides the compiled session: ops, attributes, wiring, symbolic shapes, dtypes, and which tensor
   * each constant is (its version is checked when the session is looked up, not here).
   */
  get signature(): string {
    if (this.sig === null) {
      const io = (v: Value | null) => (v ? `${v.id}:${v.dtype}[${v.shape.join(',')}]` : '-');
      this.sig = [
        this.inputs.map(io).join(' '),
        [...this.constants].map(([v, t]) => `${io(v)}=#${t.id}`).join(' '),
        ...this.nodes.map((n) => `${n.op}(${n.inputs.map(io).join(',')})${JSON.stringify(n.attrs)}->${n.outputs.map(io).join(',')}`),
        this.outputs.map((v) => v.id).join(','),
      ].join('|');
    }
    return this.sig;
  }

  owns(v: Value): boolean {
    return this.values.has(v);
  }

  private add(list: Value[], v: Value): Value {
    list.push(v);
    this.values.add(v);
    this.sig = null;
    return v;
  }
}
