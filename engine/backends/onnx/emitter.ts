/** Builds the nodes and initializers of one ONNX graph, including the run-time sizes of symbolic dims. */
import { fp32ArrayToFp16 } from '../../dtype/fp16.ts';
import { bf16ArrayToFp32 } from '../../dtype/bf16.ts';
import { fp16ArrayToFp32 } from '../../dtype/fp16.ts';
import type { DType } from '../../dtype/dtype.ts';
import { canonDim, dimTerms, isStatic, type Dim, type Shape } from '../../graph/dims.ts';
import type { Storage, Tensor } from '../../tensor/tensor.ts';
import { AttrType, OnnxType, type OnnxAttribute, type OnnxNode, type OnnxTensor } from './proto.ts';

export interface LowerOptions {
  /**
   * Whether fp16 runs natively. When false (CPU: no fp16 GEMM), fp16 values travel as fp32 and every op's result
   * is rounded through a Cast to fp16 and back, which is exactly "compute in fp32, store in fp16".
   * bf16 always travels this way: onnxruntime has no bf16 kernels on these providers and its JS API no bf16 tensor.
   */
  nativeFp16: boolean;
  /**
   * Whether onnxruntime's uint8 x int8 integer GEMM may saturate. On x86 CPUs without VNNI, MLAS multiplies u8 x s8
   * with vpmaddubsw, which adds pairs of products in int16 and clips them (255 * 127 * 2 > 32767); its u8 x u8 kernel
   * widens first and is exact. Then an int8 B is shifted into uint8 (B + 128, zero point + 128) inside the graph.
   */
  u8s8Saturates?: boolean;
}

/** The element type a value is fed, fetched or carried as. */
export function onnxType(d: DType, opts: LowerOptions): number {
  switch (d) {
    case 'fp32':
    case 'bf16':
      return OnnxType.FLOAT;
    case 'fp16':
      return opts.nativeFp16 ? OnnxType.FLOAT16 : OnnxType.FLOAT;
    case 'int8':
      return OnnxType.INT8;
    case 'uint8':
      return OnnxType.UINT8;
    case 'int32':
      return OnnxType.INT32;
    case 'bool':
      return OnnxType.BOOL;
    default:
      throw new Error(`dtype ${d} has no onnx element type; pack it into uint8 first`);
  }
}

export function attr(name: string, v: number | string | readonly number[], float = false): OnnxAttribute {
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: [...v] };
  return float ? { name, type: AttrType.FLOAT, f: v as number } : { name, type: AttrType.INT, i: v as number };
}

export class Emitter {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  private n = 0;
  private readonly dims = new Map<string, string>();
  private readonly shapes = new Map<string, string>();
  /** Where each symbol can be read at run time: a graph input's name and axis. */
  private readonly symbolSource = new Map<string, [string, number]>();

  private readonly memos = new Map<string, unknown>();
  /** ONNX names of the graph inputs the caller donates (see CompileOptions.donated). */
  readonly donated = new Set<string>();
  /** Values a lowering wrote into a donated input's buffer: value name -> that input's name. */
  readonly aliases = new Map<string, string>();

  constructor(readonly opts: LowerOptions) {}

  /**
   * Values emitted once per graph under `key`, for subgraphs that several nodes would each emit alike (every
   * attention layer's checks and lengths derived from one pastLengths input): onnxruntime runs each node it is
   * given, and removes duplicates only where it can prove them equal.
   */
  memo<T>(key: string, make: () => T): T {
    if (!this.memos.has(key)) this.memos.set(key, make());
    return this.memos.get(key) as T;
  }

  /** Registers a graph input's symbolic dims as readable from it. */
  sourceOf(name: string, shape: Shape): void {
    shape.forEach((d, axis) => {
      if (typeof d === 'string' && !this.symbolSource.has(d)) this.symbolSource.set(d, [name, axis]);
    });
  }

  node(op: string, inputs: string[], attrs: OnnxAttribute[] = [], domain = ''): string {
    return this.nodeMulti(op, inputs, 1, attrs, domain)[0];
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

  int32Scalar(v: number): string {
    return this.int32s(Int32Array.of(v), []);
  }

  int32s(values: Int32Array, dims: number[]): string {
    return this.init(OnnxType.INT32, dims, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }

  uint8Scalar(v: number): string {
    return this.init(OnnxType.UINT8, [], Uint8Array.of(v));
  }

  /** An all-zero int8 or uint8 constant (an explicit zero point, which fixes QuantizeLinear's output dtype). */
  zeros8(type: number, dims: number[]): string {
    return this.init(type, dims, new Uint8Array(dims.reduce((p, d) => p * d, 1)));
  }

  /**
   * int64 [1]: a dim's size in this run. Each symbol is read once from the input that carries it (Shape with
   * start/end); a product multiplies them, a sum ('past+seq-1') adds and subtracts its terms.
   */
  dim(d: Dim): string {
    const key = String(canonDim(d));
    let out = this.dims.get(key);
    if (out) return out;
    const terms = dimTerms(key);
    if (terms.every((t) => t.syms.length === 0)) out = this.int64([Number(key)]);
    else if (terms.length === 1 && terms[0].coef === 1 && terms[0].syms.length === 1) {
      const src = this.symbolSource.get(key);
      if (!src) throw new Error(`symbol '${key}' is carried by no graph input`);
      out = this.node('Shape', [src[0]], [attr('start', src[1]), attr('end', src[1] + 1)]);
    } else {
      let acc = '';
      for (const t of terms) {
        const factors = t.syms.map((s) => this.dim(s));
        if (Math.abs(t.coef) !== 1 || factors.length === 0) factors.push(this.int64([Math.abs(t.coef)]));
        const v = factors.reduce((p, q) => this.node('Mul', [p, q]));
        acc = acc === '' ? (t.coef < 0 ? this.node('Neg', [v]) : v) : this.node(t.coef < 0 ? 'Sub' : 'Add', [acc, v]);
      }
      out = acc;
    }
    this.dims.set(key, out);
    return out;
  }

  /** int64 [rank]: a shape, constant when every dim is a size, else assembled at run time. */
  shape(shape: Shape): string {
    if (isStatic(shape)) return this.int64(shape);
    if (shape.length === 1) return this.dim(shape[0]);
    const key = shape.map(canonDim).join(',');
    let out = this.shapes.get(key);
    if (!out) this.shapes.set(key, (out = this.node('Concat', shape.map((d) => this.dim(d)), [attr('axis', 0)])));
    return out;
  }

  private init(type: number, dims: number[], raw: Uint8Array): string {
    const name = `c${this.initializers.length}`;
    this.initializers.push({ name, dims, data_type: type, raw_data: raw });
    return name;
  }
}
