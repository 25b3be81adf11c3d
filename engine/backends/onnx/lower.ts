/** Lowers an engine Graph to one ONNX model, so onnxruntime runs a whole step as a single session. */
import type { DType } from '../../dtype/dtype.ts';
import { fp16ArrayToFp32, fp32ArrayToFp16 } from '../../dtype/fp16.ts';
import { bf16ArrayToFp32 } from '../../dtype/bf16.ts';
import type { Storage, Tensor } from '../../tensor/tensor.ts';
import type { Graph, Node, Value } from '../../graph/graph.ts';
import { keepDims, reduceAxes, scaleAxis } from '../../graph/ops_quant.ts';
import { AttrType, OnnxType, encodeModel, valueInfo, type OnnxAttribute, type OnnxModel, type OnnxNode, type OnnxTensor } from './proto.ts';

export const OPSET = 21;

export interface LowerOptions {
  /**
   * Whether fp16 runs natively. When false (CPU: no fp16 GEMM), fp16 values travel as fp32 and every op's result
   * is rounded through a Cast to fp16 and back, which is exactly "compute in fp32, store in fp16".
   * bf16 always travels this way: onnxruntime has no bf16 kernels on these providers and its JS API no bf16 tensor.
   */
  nativeFp16: boolean;
}

/** The element type a value is fed, fetched or carried as. */
export function onnxType(d: DType, opts: LowerOptions): number {
  switch (d) {
    case 'fp32':
      return OnnxType.FLOAT;
    case 'fp16':
      return opts.nativeFp16 ? OnnxType.FLOAT16 : OnnxType.FLOAT;
    case 'bf16':
      return OnnxType.FLOAT;
    case 'int8':
      return OnnxType.INT8;
    case 'uint8':
      return OnnxType.UINT8;
    case 'int32':
      return OnnxType.INT32;
    default:
      throw new Error(`dtype ${d} has no onnx element type; pack it into uint8 first`);
  }
}

/** fp16 feeds are given as float16 (exact) and widened in the graph; bf16 feeds are widened in TypeScript. */
function feedType(d: DType, opts: LowerOptions): number {
  return d === 'fp16' ? OnnxType.FLOAT16 : onnxType(d, opts);
}

const isEmulated = (d: DType, opts: LowerOptions) => d === 'bf16' || (d === 'fp16' && !opts.nativeFp16);
const roundType = (d: DType) => (d === 'fp16' ? OnnxType.FLOAT16 : OnnxType.BFLOAT16);
// Data movement, and ops whose results are already representable in their input's dtype: no rounding needed.
const EXACT_OPS = new Set(['Gather', 'Reshape', 'Transpose', 'Abs', 'ReduceMax', 'Round']);

function attr(name: string, v: number | string | readonly number[], float = false): OnnxAttribute {
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: [...v] };
  return float ? { name, type: AttrType.FLOAT, f: v as number } : { name, type: AttrType.INT, i: v as number };
}

class Emitter {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  private n = 0;

  node(op: string, inputs: string[], attrs: OnnxAttribute[] = [], domain = ''): string {
    const out = `t${this.n++}`;
    this.nodes.push({ name: `${op}_${this.n}`, op_type: op, domain, input: inputs, output: [out], attribute: attrs });
    return out;
  }

  named(op: string, inputs: string[], out: string, attrs: OnnxAttribute[] = []): void {
    this.nodes.push({ name: `${op}_${out}`, op_type: op, domain: '', input: inputs, output: [out], attribute: attrs });
  }

  nodeMulti(op: string, inputs: string[], nOut: number, attrs: OnnxAttribute[] = [], domain = ''): string[] {
    const outs = Array.from({ length: nOut }, () => `t${this.n++}`);
    this.nodes.push({ name: `${op}_${this.n}`, op_type: op, domain, input: inputs, output: outs, attribute: attrs });
    return outs;
  }

  int64(values: readonly number[], dims = [values.length]): string {
    const raw = new Uint8Array(new BigInt64Array(values.map((v) => BigInt(v))).buffer);
    return this.init(OnnxType.INT64, dims, raw);
  }

  /** A float constant in the element type the graph carries it as (fp32, or fp16 where fp16 is native). */
  float(values: Float32Array, dims: number[], type: number = OnnxType.FLOAT): string {
    const data = type === OnnxType.FLOAT16 ? fp32ArrayToFp16(values) : values;
    return this.init(type, dims, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** A constant in the element type the graph carries it as: fp16 and bf16 widen to fp32 where they are emulated. */
  tensor(t: Tensor, type: number): string {
    let data: Storage = t.data;
    if (t.dtype === 'bf16') data = bf16ArrayToFp32(data as Uint16Array);
    else if (t.dtype === 'fp16' && type === OnnxType.FLOAT) data = fp16ArrayToFp32(data as Uint16Array);
    return this.init(type, [...t.shape], new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** An all-zero int8 or uint8 constant (an explicit zero point, which fixes QuantizeLinear's output dtype). */
  zeros8(type: number, dims: number[]): string {
    return this.init(type, dims, new Uint8Array(dims.reduce((p, d) => p * d, 1)));
  }

  private init(type: number, dims: number[], raw: Uint8Array): string {
    const name = `c${this.initializers.length}`;
    this.initializers.push({ name, dims, data_type: type, raw_data: raw });
    return name;
  }
}

export interface Lowered {
  bytes: Uint8Array;
  inputNames: string[];
  outputNames: string[];
  /** ONNX op types used, for reporting which ran on which provider. */
  opTypes: string[];
}

export function lowerGraph(g: Graph, opts: LowerOptions): Lowered {
  const e = new Emitter();
  const name = new Map<Value, string>();
  const inputNames = g.inputs.map((_, i) => `in${i}`);

  g.inputs.forEach((v, i) => {
    name.set(v, v.dtype === 'fp16' && !opts.nativeFp16 ? e.node('Cast', [inputNames[i]], [attr('to', OnnxType.FLOAT)]) : inputNames[i]);
  });
  for (const [v, t] of g.constants) name.set(v, e.tensor(t, onnxType(v.dtype, opts)));

  for (const n of g.nodes) {
    const ins = n.inputs.map((v) => (v ? name.get(v)! : ''));
    const outs = lowerNode(e, n, ins, opts);
    n.outputs.forEach((v, i) => {
      let o = outs[i];
      if (isEmulated(v.dtype, opts) && !EXACT_OPS.has(n.op)) {
        o = e.node('Cast', [e.node('Cast', [o], [attr('to', roundType(v.dtype))])], [attr('to', OnnxType.FLOAT)]);
      }
      name.set(v, o);
    });
  }

  const outputNames = g.outputs.map((_, i) => `out${i}`);
  g.outputs.forEach((v, i) => {
    const carried = onnxType(v.dtype, opts);
    const fetched = feedType(v.dtype, opts);
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
  return { bytes: encodeModel(model), inputNames, outputNames, opTypes: [...new Set(e.nodes.map((n) => n.op_type))] };
}

function lowerNode(e: Emitter, n: Node, ins: string[], opts: LowerOptions): string[] {
  const a = n.attrs;
  const f = (k: string, d: number) => (a[k] ?? d) as number;
  switch (n.op) {
    case 'MatMul':
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
    case 'Sigmoid':
      return [e.node(n.op, ins)];
    case 'MatMulInteger':
      return [e.node('MatMulInteger', trimOptional(ins))];
    case 'DynamicQuantizeLinear':
      return e.nodeMulti('DynamicQuantizeLinear', ins, 3);
    case 'MatMulNBits':
      return [
        e.node('MatMulNBits', trimOptional(ins), [attr('K', f('K', 0)), attr('N', f('N', 0)), attr('bits', 4), attr('block_size', f('blockSize', 32)), attr('accuracy_level', f('accuracyLevel', 0))], 'com.microsoft'),
      ];
    case 'Softmax':
      return [e.node('Softmax', ins, [attr('axis', f('axis', -1))])];
    case 'LayerNormalization':
      return [e.node('LayerNormalization', trimOptional(ins), [attr('axis', -1), attr('epsilon', f('epsilon', 1e-5), true)])];
    case 'RMSNorm':
      return [e.node('SimplifiedLayerNormalization', ins, [attr('axis', -1), attr('epsilon', f('epsilon', 1e-6), true)])];
    case 'Gelu':
      return [e.node('Gelu', ins, [attr('approximate', (a.approximate as string) ?? 'none')])];
    case 'SiLU':
      return [e.node('Mul', [ins[0], e.node('Sigmoid', ins)])];
    case 'Gather':
      return [e.node('Gather', ins, [attr('axis', f('axis', 0))])];
    case 'Reshape':
      return [e.node('Reshape', [ins[0], e.int64(n.outputs[0].shape)], [attr('allowzero', 1)])];
    case 'Transpose':
      return [e.node('Transpose', ins, [attr('perm', (a.perm as number[]) ?? [...Array(n.inputs[0]!.shape.length).keys()].reverse())])];
    case 'Cast':
      return [e.node('Cast', ins, [attr('to', onnxType(a.to as DType, opts))])];
    case 'Attention':
      return [lowerAttention(e, n, ins, onnxType(n.inputs[0]!.dtype, opts))];
    case 'Abs':
    case 'Round':
      return [e.node(n.op, ins)];
    case 'ReduceMax': {
      // Since opset 18 the axes are an int64 input; absent, every axis is reduced.
      const axes = a.axes === undefined ? null : reduceAxes(n.inputs[0]!.shape, a.axes);
      return [e.node('ReduceMax', axes ? [ins[0], e.int64(axes)] : [ins[0]], [attr('keepdims', keepDims(a) ? 1 : 0)])];
    }
    case 'Clip': {
      const type = onnxType(n.inputs[0]!.dtype, opts);
      const bound = (k: string) => (a[k] === undefined ? '' : e.float(new Float32Array([a[k] as number]), [], type));
      return [e.node('Clip', trimOptional([ins[0], bound('min'), bound('max')]))];
    }
    case 'QuantizeLinear':
    case 'DequantizeLinear': {
      const [x, scale, zp] = n.inputs;
      const axis = scaleAxis(n.op, x!, scale!, a);
      const axisAttr = axis === null ? [] : [attr('axis', axis)];
      if (n.op === 'DequantizeLinear') return [e.node(n.op, trimOptional(ins), axisAttr)];
      // Without a zero point ONNX picks uint8; an explicit zero one of the wanted dtype picks int8 too.
      const z = zp ? ins[2] : e.zeros8(onnxType(n.outputs[0].dtype, opts), [...scale!.shape]);
      return [e.node(n.op, [ins[0], ins[1], z], axisAttr)];
    }
  }
}

/** Trailing absent optional inputs are dropped; absent ones in the middle stay as ''. */
function trimOptional(ins: string[]): string[] {
  const out = [...ins];
  while (out.length && out[out.length - 1] === '') out.pop();
  return out;
}

/**
 * softmax(q k^T * scale + causalMask) v, with grouped-query heads folded as [B, Hkv, G, S, D] so k and v
 * broadcast over the G query heads that share them instead of being copied.
 */
function lowerAttention(e: Emitter, n: Node, [q, k, v]: string[], type: number): string {
  const [B, Hq, S, D] = n.inputs[0]!.shape;
  const [, Hkv, T] = n.inputs[1]!.shape;
  const Dv = n.inputs[2]!.shape[3];
  const G = Hq / Hkv;
  const scale = (n.attrs.scale as number | undefined) ?? 1 / Math.sqrt(D);
  const q5 = e.node('Reshape', [q, e.int64([B, Hkv, G, S, D])]);
  const k5 = e.node('Reshape', [k, e.int64([B, Hkv, 1, T, D])]);
  const v5 = e.node('Reshape', [v, e.int64([B, Hkv, 1, T, Dv])]);
  const kT = e.node('Transpose', [k5], [attr('perm', [0, 1, 2, 4, 3])]);
  let scores = e.node('Mul', [e.node('MatMul', [q5, kT]), e.float(new Float32Array([scale]), [], type)]);
  if (n.attrs.causal) {
    const mask = new Float32Array(S * T);
    for (let i = 0; i < S; i++) for (let j = 0; j < T; j++) mask[i * T + j] = j > i + (T - S) ? -Infinity : 0;
    scores = e.node('Add', [scores, e.float(mask, [S, T], type)]);
  }
  const p = e.node('Softmax', [scores], [attr('axis', -1)]);
  return e.node('Reshape', [e.node('MatMul', [p, v5]), e.int64([B, Hq, S, Dv])]);
}
