/** The reference backend: interprets a graph with plain TypeScript kernels. The oracle in tests, never the fast path. */
import type { Backend } from '../backend.ts';
import type { Graph, Value } from '../../graph/graph.ts';
import type { DType } from '../../dtype/dtype.ts';
import { storageFor, type Storage } from '../../tensor/tensor.ts';
import { fp16ArrayToFp32, fp32ArrayToFp16 } from '../../dtype/fp16.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../../dtype/bf16.ts';
import { reshapeTarget } from '../../graph/ops.ts';
import { keepDims, reduceAxes, scaleAxis } from '../../graph/ops_quant.ts';
import * as K from './kernels.ts';
import * as Q from './quant_kernels.ts';

/** Storage -> float64 values (fp16/bf16 decoded exactly). */
export function decode(dtype: DType, s: Storage): Float64Array {
  if (dtype === 'fp16') return Float64Array.from(fp16ArrayToFp32(s as Uint16Array));
  if (dtype === 'bf16') return Float64Array.from(bf16ArrayToFp32(s as Uint16Array));
  return Float64Array.from(s as ArrayLike<number>);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * float64 -> float32 rounded to odd (truncate, then set the last bit if anything was dropped). A float32 rounded
 * to odd then rounded to nearest-even into fp16 or bf16 equals rounding the float64 there directly, because
 * float32 keeps at least two more bits than either (Boldo & Melquiond 2008); plain fp32 rounding first would
 * round twice and can land one ulp off.
 */
export function roundToOddF32(x: number): number {
  f32[0] = x;
  const r = f32[0];
  if (r === x || Number.isNaN(x)) return r;
  if (Math.abs(r) > Math.abs(x)) u32[0] -= 1; // step back toward zero: truncation (also turns inf into max finite)
  u32[0] |= 1;
  return f32[0];
}

/** float64 values -> storage, rounding floats to the dtype exactly once (the op's single rounding); integers as they are. */
export function encode(dtype: DType, v: ArrayLike<number>): Storage {
  switch (dtype) {
    case 'fp32':
      return Float32Array.from(v);
    case 'fp16':
      return fp32ArrayToFp16(Float32Array.from(v, roundToOddF32));
    case 'bf16':
      return fp32ArrayToBf16(Float32Array.from(v, roundToOddF32));
    default: {
      const out = storageFor(dtype, v.length);
      (out as Int32Array).set(Array.from(v, Math.round));
      return out;
    }
  }
}

export class ReferenceBackend implements Backend {
  readonly name = 'reference' as const;

  async run(graph: Graph, feeds: readonly Storage[]): Promise<Storage[]> {
    const vals = new Map<Value, Storage>();
    graph.inputs.forEach((v, i) => vals.set(v, feeds[i]));
    for (const [v, t] of graph.constants) vals.set(v, t.data);
    const f = (v: Value) => decode(v.dtype, vals.get(v)!);
    for (const n of graph.nodes) {
      const [x, y, z, w] = n.inputs;
      const out0 = n.outputs[0];
      const a = n.attrs;
      let r: ArrayLike<number>;
      switch (n.op) {
        case 'MatMul':
          r = K.matmul(f(x!), x!.shape, f(y!), y!.shape)[0];
          break;
        case 'MatMulInteger':
          r = K.matmul(vals.get(x!)!, x!.shape, vals.get(y!)!, y!.shape, z ? vals.get(z)![0] : 0, w ? vals.get(w)![0] : 0)[0];
          break;
        case 'DynamicQuantizeLinear': {
          const q = K.dynamicQuantize(vals.get(x!) as Float32Array);
          vals.set(n.outputs[0], q.y);
          vals.set(n.outputs[1], Float32Array.of(q.scale));
          vals.set(n.outputs[2], Uint8Array.of(q.zeroPoint));
          continue;
        }
        case 'MatMulNBits':
          r = K.matmulNBits(vals.get(x!) as Float32Array, x!.shape, vals.get(y!) as Uint8Array, vals.get(z!) as Float32Array, w ? (vals.get(w) as Uint8Array) : null, a.K as number, a.N as number, (a.blockSize as number) ?? 32)[0];
          break;
        case 'Add':
          r = K.binary((p, q) => p + q, f(x!), x!.shape, f(y!), y!.shape)[0];
          break;
        case 'Sub':
          r = K.binary((p, q) => p - q, f(x!), x!.shape, f(y!), y!.shape)[0];
          break;
        case 'Mul':
          r = K.binary((p, q) => p * q, f(x!), x!.shape, f(y!), y!.shape)[0];
          break;
        case 'Div':
          r = K.binary((p, q) => p / q, f(x!), x!.shape, f(y!), y!.shape)[0];
          break;
        case 'Softmax':
          r = K.softmax(f(x!), x!.shape, (a.axis as number) ?? -1);
          break;
        case 'LayerNormalization':
          r = K.layerNorm(f(x!), x!.shape, f(y!), z ? f(z) : null, (a.epsilon as number) ?? 1e-5, false);
          break;
        case 'RMSNorm':
          r = K.layerNorm(f(x!), x!.shape, f(y!), null, (a.epsilon as number) ?? 1e-6, true);
          break;
        case 'Gelu':
          r = f(x!).map(a.approximate === 'tanh' ? K.geluTanh : K.gelu);
          break;
        case 'SiLU':
          r = f(x!).map((v) => v * K.sigmoid(v));
          break;
        case 'Sigmoid':
          r = f(x!).map(K.sigmoid);
          break;
        case 'Gather':
          r = K.gather(f(x!), x!.shape, vals.get(y!) as Int32Array, y!.shape, ((a.axis as number) ?? 0) < 0 ? (a.axis as number) + x!.shape.length : ((a.axis as number) ?? 0))[0];
          break;
        case 'Reshape':
          reshapeTarget(x!.shape, a.shape);
          r = f(x!);
          break;
        case 'Transpose':
          r = K.transpose(f(x!), x!.shape, (a.perm as number[]) ?? [...x!.shape.keys()].reverse())[0];
          break;
        case 'Cast':
          r = f(x!);
          break;
        case 'Attention':
          r = K.attention(f(x!), x!.shape, f(y!), y!.shape, f(z!), z!.shape, Boolean(a.causal), a.scale as number | undefined)[0];
          break;
        case 'Abs':
          r = f(x!).map(Math.abs);
          break;
        case 'ReduceMax':
          r = Q.reduceMax(f(x!), x!.shape, reduceAxes(x!.shape, a.axes), keepDims(a))[0];
          break;
        case 'Round':
          r = f(x!).map(K.roundHalfEven);
          break;
        case 'Clip': {
          const lo = (a.min as number | undefined) ?? -Infinity;
          const hi = (a.max as number | undefined) ?? Infinity;
          r = f(x!).map((v) => Math.min(hi, Math.max(lo, v)));
          break;
        }
        case 'QuantizeLinear': {
          const zp = z ? (vals.get(z) as Int8Array | Uint8Array) : null;
          const q = Q.quantizeLinear(vals.get(x!) as Float32Array, x!.shape, vals.get(y!) as Float32Array, zp, scaleAxis(n.op, x!, y!, a), out0.dtype as 'int8' | 'uint8');
          vals.set(out0, q);
          continue;
        }
        case 'DequantizeLinear': {
          const zp = z ? (vals.get(z) as Int8Array | Uint8Array) : null;
          r = Q.dequantizeLinear(vals.get(x!) as Int8Array | Uint8Array, x!.shape, vals.get(y!) as Float32Array, zp, scaleAxis(n.op, x!, y!, a));
          break;
        }
      }
      vals.set(out0, encode(out0.dtype, r));
    }
    return graph.outputs.map((v) => {
      const s = vals.get(v)!;
      // An output that is also an input or a constant must not alias the caller's storage.
      return graph.inputs.includes(v) || graph.constants.has(v) ? s.slice() : s;
    });
  }

  placement(): Record<string, string> {
    return {};
  }

  notes(): string[] {
    return ['reference: plain TypeScript loops in float64, rounded once per op to its dtype; for checking, not speed'];
  }

  async dispose(): Promise<void> {}
}
