/** Lowers an engine Graph to one ONNX model, so onnxruntime runs a whole step as a single session. */
import type { DType } from '../../dtype/dtype.ts';
import type { Graph, Value } from '../../graph/graph.ts';
import { attr, Emitter, onnxType, type LowerOptions } from './emitter.ts';
import { ONNX_LOWERINGS, type Lowering } from './table.ts';
import { OnnxType, encodeModel, valueInfo, type OnnxModel } from './proto.ts';

export { onnxType, type LowerOptions } from './emitter.ts';

export const OPSET = 21;

/** fp16 feeds are given as float16 (exact) and widened in the graph; bf16 feeds are widened in TypeScript. */
function feedType(d: DType, opts: LowerOptions): number {
  return d === 'fp16' ? OnnxType.FLOAT16 : onnxType(d, opts);
}

const isEmulated = (d: DType, opts: LowerOptions) => d === 'bf16' || (d === 'fp16' && !opts.nativeFp16);
const roundType = (d: DType) => (d === 'fp16' ? OnnxType.FLOAT16 : OnnxType.BFLOAT16);
// Data movement, and ops whose results are already representable in their input's dtype: no rounding needed.
const EXACT_OPS = new Set(['Gather', 'Reshape', 'Transpose', 'Abs', 'ReduceMax', 'Round', 'Slice', 'Concat', 'Expand', 'Where', 'Neg', 'TopK', 'GatherND', 'Split']);

export interface Lowered {
  bytes: Uint8Array;
  inputNames: string[];
  outputNames: string[];
  /** ONNX op types used, for reporting which ran on which provider. */
  opTypes: string[];
  /** Bytes of the constants baked in as initializers. */
  constantBytes: number;
  /** [output index, input index]: outputs written into donated inputs' buffers. */
  aliases: [number, number][];
}

export function lowerGraph(g: Graph, opts: LowerOptions, donated: readonly boolean[] = []): Lowered {
  const e = new Emitter(opts);
  const name = new Map<Value, string>();
  const inputNames = g.inputs.map((_, i) => `in${i}`);
  inputNames.forEach((n, i) => donated[i] && e.donated.add(n));

  g.inputs.forEach((v, i) => {
    e.sourceOf(inputNames[i], v.shape);
    name.set(v, v.dtype === 'fp16' && !opts.nativeFp16 ? e.node('Cast', [inputNames[i]], [attr('to', OnnxType.FLOAT)]) : inputNames[i]);
  });
  for (const [v, t] of g.constants) name.set(v, e.tensor(t, onnxType(v.dtype, opts)));
  const constantBytes = e.initializers.reduce((s, t) => s + t.raw_data.byteLength, 0);

  for (const n of g.nodes) {
    const ins = n.inputs.map((v) => (v ? name.get(v)! : ''));
    const lowering: Lowering = ONNX_LOWERINGS[n.op];
    const outs = lowering(e, n, ins);
    n.outputs.forEach((v, i) => {
      let o = outs[i];
      if (isEmulated(v.dtype, opts) && !EXACT_OPS.has(n.op)) {
        o = e.node('Cast', [e.node('Cast', [o], [attr('to', roundType(v.dtype))])], [attr('to', OnnxType.FLOAT)]);
      }
      name.set(v, o);
    });
  }

  const outputNames = g.outputs.map((_, i) => `out${i}`);
  const aliases: [number, number][] = [];
  g.outputs.forEach((v, i) => {
    const carried = onnxType(v.dtype, opts);
    const fetched = feedType(v.dtype, opts);
    const src = e.aliases.get(name.get(v)!);
    if (src !== undefined && carried === fetched && !aliases.some(([, j]) => inputNames[j] === src)) {
      // Written into a donated input's buffer: the producing node's output is the graph output itself (no Identity
      // in between, which would be a copy into a buffer of its own).
      rename(e, name.get(v)!, outputNames[i]);
      aliases.push([i, inputNames.indexOf(src)]);
      return;
    }
    e.named(carried === fetched ? 'Identity' : 'Cast', [name.get(v)!], outputNames[i], carried === fetched ? [] : [attr('to', fetched)]);
  });

  const model: OnnxModel = {
    ir_version: 10,
    producer_name: 'servelab',
    opset_import: [
      { domain: '', version: OPSET },
      { domain: 'com.microsoft', version: 1 },
    ],
    graph: {
      name: g.name,
      node: e.nodes,
      initializer: e.initializers,
      input: g.inputs.map((v, i) => valueInfo(inputNames[i], feedType(v.dtype, opts), v.shape)),
      output: g.outputs.map((v, i) => valueInfo(outputNames[i], feedType(v.dtype, opts), v.shape)),
    },
  };
  return { bytes: encodeModel(model), inputNames, outputNames, opTypes: [...new Set(e.nodes.map((n) => n.op_type))], constantBytes, aliases };
}

/** Every use of value `from` (as a node's output or input) renamed `to`. */
function rename(e: Emitter, from: string, to: string): void {
  for (const n of e.nodes) {
    n.output = n.output.map((o) => (o === from ? to : o));
    n.input = n.input.map((x) => (x === from ? to : x));
  }
}
