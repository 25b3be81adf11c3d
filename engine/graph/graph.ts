/** Dataflow graph of engine ops: symbolic values with inferred shapes and dtypes, run whole by a backend as one session. */
import { ServelabError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import { assertShape } from '../tensor/tensor.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { OPS, type Attrs, type OpName } from './ops.ts';

export interface Value {
  readonly id: number;
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface Node {
  readonly op: OpName;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
}

/**
 * Built once, run many times: a backend caches the compiled session under `signature`, so a decode step
 * built the same way each step pays for compilation once.
 */
export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: Node[] = [];
  /**
   * Values bound to a tensor when the graph is built: weights. A backend may bake them into the compiled
   * session (onnxruntime then prepacks them once, which a 4-bit GEMV needs to be fast) instead of taking them
   * as feeds on every run.
   */
  readonly constants = new Map<Value, Tensor>();
  private nextId = 0;
  private readonly values = new Set<Value>();
  private sig: string | null = null;

  constructor(readonly name = 'graph') {}

  input(name: string, dtype: DType, shape: readonly number[]): Value {
    assertShape(shape, `shape of input '${name}'`);
    if (this.inputs.some((v) => v.name === name)) throw new ServelabError(`graph '${this.name}' already has an input '${name}'`);
    const v: Value = { id: this.nextId++, name, dtype, shape: [...shape] };
    this.inputs.push(v);
    this.values.add(v);
    this.sig = null;
    return v;
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
    const outs = spec.infer(ins, attrs).map((o, i) => {
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

  /** Everything that decides the compiled session: ops, attributes, wiring, shapes and dtypes. */
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

  private owns(v: Value): boolean {
    return this.values.has(v);
  }
}
