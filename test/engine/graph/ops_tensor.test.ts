/**
 * Shape and dtype inference of the tensor ops on symbolic shapes, and the typed errors a bad call gets before any
 * kernel runs. Static slice bounds are checked against onnxruntime.
 */
import { describe, expect, it } from 'vitest';
import { createDevice, DTypeError, Graph, ShapeError, type Attrs, type Dim, type DType, type OpName, type Value } from '../../../engine/index.ts';

function infer(op: OpName, inputs: ([DType, Dim[]] | null)[], attrs: Attrs = {}): { outs: Value[]; g: Graph } {
  const g = new Graph(op);
  const ins = inputs.map((s, i) => (s ? g.input(`x${i}`, s[0], s[1]) : null));
  return { outs: g.op(op, ins, attrs), g };
}
const shapeOf = (op: OpName, inputs: ([DType, Dim[]] | null)[], attrs: Attrs = {}) => infer(op, inputs, attrs).outs.map((v) => v.shape);
const f32 = (...shape: Dim[]): [DType, Dim[]] => ['fp32', shape];
const i32 = (...shape: Dim[]): [DType, Dim[]] => ['int32', shape];

describe('tensor op inference', () => {
  it('unary math and reductions keep dtypes; ReduceMean reduces like ReduceSum', () => {
    for (const op of ['Exp', 'Log', 'Sqrt', 'Neg'] as const) expect(infer(op, [['fp16', ['batch', 3]]]).outs[0]).toMatchObject({ dtype: 'fp16', shape: ['batch', 3] });
    expect(() => infer('Exp', [i32(3)])).toThrow(DTypeError);
    expect(shapeOf('ReduceMean', [f32('b', 'seq', 4)], { axes: [1] })).toEqual([['b', 1, 4]]);
    expect(shapeOf('ReduceMean', [f32('b', 'seq', 4)], { axes: [-1, 0], keepdims: false })).toEqual([['seq']]);
    expect(() => infer('ReduceMean', [f32(0, 3)], { axes: [0] })).toThrow(/axis 0 has length 0/);
    expect(() => infer('ReduceMean', [f32(2, 3)], { axes: [1, -1] })).toThrow(/name an axis twice/);
  });

  it('comparisons give bool with numpy broadcasting; Where broadcasts all three', () => {
    expect(infer('Less', [f32('seq', 1), f32('total')]).outs[0]).toMatchObject({ dtype: 'bool', shape: ['seq', 'total'] });
    expect(infer('Equal', [['bool', [4]], ['bool', [1]]]).outs[0]).toMatchObject({ dtype: 'bool', shape: [4] });
    expect(() => infer('Less', [['bool', [2]], ['bool', [2]]])).toThrow(DTypeError);
    expect(() => infer('Equal', [f32(2), i32(2)])).toThrow(/share one dtype/);
    expect(() => infer('Less', [f32(2, 3), f32(4)])).toThrow(/cannot broadcast dimension 3 against 4/);
    expect(shapeOf('Where', [['bool', ['s', 1]], f32(1, 't'), f32()])).toEqual([['s', 't']]);
    expect(() => infer('Where', [f32(2), f32(2), f32(2)])).toThrow(/cond must be one of bool/);
    expect(() => infer('Where', [['bool', [2]], f32(2), i32(2)])).toThrow(DTypeError);
  });

  it('Range: a size or symbolic length, int32 by default, an optional scalar offset of its dtype', () => {
    expect(infer('Range', [], { length: 'seq' }).outs[0]).toMatchObject({ dtype: 'int32', shape: ['seq'] });
    expect(infer('Range', [['int32', []]], { length: 'seq+past' }).outs[0].shape).toEqual(['past+seq']);
    expect(infer('Range', [f32(1)], { length: 4, dtype: 'fp32', delta: 0.5 }).outs[0]).toMatchObject({ dtype: 'fp32', shape: [4] });
    expect(() => infer('Range', [], { length: -1 })).toThrow(/non-negative integer/);
    expect(() => infer('Range', [], {})).toThrow(/length must be a size or a symbolic dim/);
    expect(() => infer('Range', [], { length: 3, delta: 0.5 })).toThrow(/int32 range needs integer start and delta/);
    expect(() => infer('Range', [], { length: 3, dtype: 'fp16' })).toThrow(DTypeError);
    expect(() => infer('Range', [f32()], { length: 3 })).toThrow(/offset must have the range's dtype/);
    expect(() => infer('Range', [i32(2)], { length: 3 })).toThrow(/offset must be a scalar/);
  });

  it('Slice on sizes clamps as onnxruntime does, edge by edge', async () => {
    // ONNX clamps a negative-step start into [0, d-1], so [-12:-12:-1] of one element takes it, where Python's
    // slicing takes nothing: onnxruntime is the reference here, every bound against every length.
    const bounds = [-(2 ** 63), -12, -5, -1, 0, 1, 3, 5, 12, 2 ** 63];
    const cpu = await createDevice('cpu');
    const ref = await createDevice('reference');
    for (const d of [0, 1, 5, 7]) {
      const g = new Graph(`slices of ${d}`);
      const x = g.input('x', 'fp32', [d]);
      const names: string[] = [];
      for (const start of bounds) {
        for (const end of bounds) {
          for (const step of [1, 2, 3, -1, -2]) {
            names.push(`[${start}:${end}:${step}] of ${d}`);
            g.output(g.op('Slice', [x], { starts: [start], ends: [end], steps: [step] })[0]);
          }
        }
      }
      const xs = Array.from({ length: d }, (_, i) => i + 1);
      // Each output's bytes must fill its inferred shape, so a length onnxruntime disagrees with throws here.
      const got = await cpu.run(g, [cpu.tensor(xs, [d])]);
      const want = await ref.run(g, [ref.tensor(xs, [d])]);
      got.forEach((t, i) => expect(t.toArray(), names[i]).toEqual(want[i].toArray()));
    }
  });

  it('Slice on symbolic axes: from the end, to the end, to a symbolic end; other steps need sizes', () => {
    const s = (shape: Dim[], attrs: Attrs) => shapeOf('Slice', [f32(...shape)], attrs)[0];
    expect(s(['b', 'seq', 8], { starts: [-1], ends: [2 ** 31 - 1], axes: [1] })).toEqual(['b', 1, 8]);
    expect(s(['b', 'seq', 8], { starts: [2, 0], ends: [2 ** 62, 4], axes: [1, 2] })).toEqual(['b', 'seq-2', 4]);
    const joined = infer('Concat', [f32('past'), f32('seq')]).outs[0];
    const g = new Graph('of a sum');
    const k = g.op('Concat', [g.input('a', 'fp32', ['past']), g.input('b', 'fp32', ['seq'])])[0];
    expect(k.shape).toEqual(joined.shape);
    expect(g.op('Slice', [k], { starts: [0], ends: ['past'] })[0].shape).toEqual(['past']);
    expect(g.op('Slice', [k], { starts: [-3], ends: [-1] })[0].shape).toEqual([2]);
    expect(s([16], { starts: [2], ends: ['n'] })).toEqual(['n-2']);
    expect(s([16], { starts: [-4], ends: ['n'] })).toEqual(['n-12']);
    expect(() => s(['seq'], { starts: [0], ends: [2 ** 31 - 1], steps: [2] })).toThrow(/symbolic axis 'seq' needs step 1/);
    expect(() => s([8], { starts: [0], ends: ['n'], steps: [-1] })).toThrow(/to a symbolic end needs step 1/);
    expect(() => s([8], { starts: [0], ends: [4], steps: [0] })).toThrow(/non-zero integers/);
    expect(() => s([8, 2], { starts: [0, 0], ends: [4, 1], axes: [1, -1] })).toThrow(/name an axis twice/);
    expect(() => s([8], { starts: [0], ends: [4, 5] })).toThrow(/one entry per sliced axis/);
    expect(() => s([8], { starts: [0.5], ends: [4] })).toThrow(ShapeError);
  });

  it('Concat adds lengths on its axis (symbolic ones too) and unifies the rest; Split cuts them back', () => {
    const { outs, g } = infer('Concat', [f32('b', 2, 'past', 4), f32('bb', 2, 'seq', 4)], { axis: -2 });
    expect(outs[0].shape.slice(1)).toEqual([2, 'past+seq', 4]);
    expect(g.constraints.map((c) => [c.a, c.b])).toEqual([['b', 'bb']]);
    expect(shapeOf('Concat', [f32(2, 3), f32(2, 1), f32(2, 'n')], { axis: 1 })).toEqual([[2, 'n+4']]);
    expect(() => infer('Concat', [f32(2, 3), f32(3, 3)], { axis: 1 })).toThrow(/dimensions 0 of the inputs differ \(2 vs 3\)/);
    expect(() => infer('Concat', [f32(2, 3), f32(2, 3, 1)])).toThrow(/one rank/);
    expect(() => infer('Concat', [f32(2), ['fp16', [2]]])).toThrow(DTypeError);
    expect(() => infer('Concat', [])).toThrow(/one or more inputs/);
    const g2 = new Graph('split');
    const kv = g2.op('Concat', [g2.input('a', 'fp32', [3, 'past']), g2.input('b', 'fp32', [3, 'seq'])], { axis: 1 })[0];
    expect(g2.op('Split', [kv], { axis: 1, sizes: ['past', 'seq'] }).map((v) => v.shape)).toEqual([[3, 'past'], [3, 'seq']]);
    expect(g2.constraints).toEqual([]);
    expect(shapeOf('Split', [f32(6)], { sizes: [1, 2, 3] })).toEqual([[1], [2], [3]]);
    expect(() => infer('Split', [f32(6)], { sizes: [1, 2] })).toThrow(/sum of sizes/);
  });

  it('ArgMax and TopK give int32 indices; TopK refuses k past the axis', () => {
    expect(infer('ArgMax', [f32('b', 'vocab')], { axis: -1, keepdims: false }).outs[0]).toMatchObject({ dtype: 'int32', shape: ['b'] });
    expect(shapeOf('ArgMax', [f32(3, 4)])).toEqual([[1, 4]]);
    const [v, i] = infer('TopK', [['fp16', ['b', 50]]], { k: 5 }).outs;
    expect([v.dtype, v.shape, i.dtype, i.shape]).toEqual(['fp16', ['b', 5], 'int32', ['b', 5]]);
    expect(shapeOf('TopK', [f32('b', 'vocab')], { k: 3 })[0]).toEqual(['b', 3]);
    expect(() => infer('TopK', [f32(2, 4)], { k: 5 })).toThrow(/k = 5 is more than the 4 elements/);
    expect(() => infer('TopK', [f32(2, 4)], {})).toThrow(/'k' must be a finite number/);
    expect(() => infer('TopK', [['bool', [4]]], { k: 1 })).toThrow(DTypeError);
  });

  it('GatherND and ScatterND: int32 [..., r] indices address slices of data', () => {
    expect(shapeOf('GatherND', [f32('b', 2, 'T', 4), i32('b', 2, 'seq', 3)])).toEqual([['b', 2, 'seq', 4]]);
    expect(shapeOf('GatherND', [f32(5, 3), i32(2, 2)])).toEqual([[2]]);
    expect(() => infer('GatherND', [f32(5, 3), ['fp32', [2, 1]]])).toThrow(DTypeError);
    expect(() => infer('GatherND', [f32(5, 3), i32(2, 3)])).toThrow(/r a size from 1 to data's rank 2/);
    expect(() => infer('GatherND', [f32(5, 3), i32(2, 'r')])).toThrow(ShapeError);
    const { outs, g } = infer('ScatterND', [f32(1, 2, 64, 4), i32(1, 2, 'seq', 3), f32(1, 2, 'new', 4)]);
    expect(outs[0].shape).toEqual([1, 2, 64, 4]);
    expect(g.constraints.map((c) => [c.a, c.b])).toEqual([['new', 'seq']]);
    expect(() => infer('ScatterND', [f32(6, 3), i32(2, 1), f32(2, 4)])).toThrow(/updates dimension 1 and \[2, 3\] differ/);
    expect(() => infer('ScatterND', [f32(6, 3), i32(2, 1), f32(2)])).toThrow(/updates must be \[2, 3\]/);
    expect(() => infer('ScatterND', [f32(6, 3), i32(2, 1), ['fp16', [2, 3]]])).toThrow(DTypeError);
    expect(() => infer('ScatterND', [f32(6, 3), i32(2, 1), f32(2, 3)], { reduction: 'mul' })).toThrow(/'none' or 'add'/);
    expect(() => infer('ScatterND', [['bool', [6]], i32(2, 1), ['bool', [2]]], { reduction: 'add' })).toThrow(DTypeError);
  });
});
