/** Binding a graph's symbolic dims to the sizes of one run's feeds, and checking the equalities inference deferred. */
import { ShapeError } from '../errors.ts';
import { resolveDim, resolveShape, type Shape } from './dims.ts';
import type { Graph } from './graph.ts';

export interface Binding {
  /** Symbol -> size, for this run. */
  readonly sizes: ReadonlyMap<string, number>;
  /** The concrete shape of each graph output. */
  readonly outputShapes: number[][];
}

const EMPTY = new Map<string, number>();

/**
 * Binds every symbol from the feeds' shapes (a symbol met twice must have one size), checks sizes and the graph's
 * constraints, and resolves the output shapes. Throws ShapeError naming the input, axis, symbol and both sizes.
 */
export function bindShapes(graph: Graph, shapes: readonly (readonly number[])[]): Binding {
  const sizes = new Map<string, number>();
  const where = new Map<string, string>();
  graph.inputs.forEach((v, i) => {
    const got = shapes[i];
    if (got.length !== v.shape.length) {
      throw new ShapeError(graph.name, [got, v.shape], `input '${v.name}' has rank ${got.length}, the graph expects rank ${v.shape.length}`);
    }
    v.shape.forEach((d, axis) => {
      const n = got[axis];
      if (typeof d === 'number') {
        if (n !== d) throw new ShapeError(graph.name, [got, v.shape], `input '${v.name}' axis ${axis} is ${n}, the graph expects ${d}`);
        return;
      }
      const prev = sizes.get(d);
      if (prev === undefined) {
        sizes.set(d, n);
        where.set(d, `input '${v.name}' axis ${axis}`);
      } else if (prev !== n) {
        throw new ShapeError(graph.name, [got, v.shape], `dimension '${d}' is ${prev} in ${where.get(d)} but ${n} in input '${v.name}' axis ${axis}`);
      }
    });
  });
  for (const c of graph.constraints) {
    const a = resolveDim(c.a, sizes);
    const b = resolveDim(c.b, sizes);
    if (a !== b) throw new ShapeError(c.op, [], `${c.what} must be equal: ${describe(c.a, a)} vs ${describe(c.b, b)} in this run of '${graph.name}'`);
  }
  return { sizes: sizes.size ? sizes : EMPTY, outputShapes: graph.outputs.map((v) => resolveShape(v.shape, sizes)) };
}

const describe = (d: Shape[number], n: number) => (typeof d === 'number' ? `${n}` : `'${d}' = ${n}`);
