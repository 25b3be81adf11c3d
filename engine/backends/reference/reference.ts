/** The reference backend: interprets a graph with plain TypeScript kernels. The oracle in tests, never the fast path. */
import type { Backend, Executable } from '../backend.ts';
import type { Graph, Value } from '../../graph/graph.ts';
import type { DType } from '../../dtype/dtype.ts';
import { storageFor, type Storage } from '../../tensor/tensor.ts';
import { fp16ArrayToFp32, fp32ArrayToFp16 } from '../../dtype/fp16.ts';
import { bf16ArrayToFp32, fp32ArrayToBf16 } from '../../dtype/bf16.ts';
import type { Binding } from '../../graph/bind.ts';
import { resolveShape } from '../../graph/dims.ts';
import type { RefKernel, RefOperand } from './kernel.ts';
import { REFERENCE_KERNELS } from './table.ts';

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
  readonly measuresHostMemory = false;
  /** Kernels read and write host memory: every tensor here is a host tensor. */
  readonly deviceMemory = null;

  /** Nothing is compiled: the graph is interpreted and its constants read where they are. */
  estimateBytes(): number {
    return 0;
  }

  async compile(): Promise<Executable> {
    return { release: async () => {} };
  }

  async run(_exe: Executable, graph: Graph, feeds: readonly Storage[], binding: Binding): Promise<Storage[]> {
    const vals = new Map<Value, RefOperand>();
    const put = (v: Value, data: Storage) => vals.set(v, operand(v.dtype, resolveShape(v.shape, binding.sizes), data));
    graph.inputs.forEach((v, i) => put(v, feeds[i]));
    for (const [v, t] of graph.constants) put(v, t.data);
    for (const n of graph.nodes) {
      const kernel: RefKernel = REFERENCE_KERNELS[n.op];
      const outputs = n.outputs.map((v) => ({ dtype: v.dtype, shape: resolveShape(v.shape, binding.sizes) }));
      const results = kernel({ inputs: n.inputs.map((v) => (v ? vals.get(v)! : null)), attrs: n.attrs, outputs });
      n.outputs.forEach((v, i) => put(v, exact(v.dtype, results[i])));
    }
    return graph.outputs.map((v) => {
      const s = vals.get(v)!.data;
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

function operand(dtype: DType, shape: number[], data: Storage): RefOperand {
  let decoded: Float64Array | null = null;
  return { dtype, shape, data, f: () => (decoded ??= decode(dtype, data)) };
}

/** A kernel's result in the output's storage: exact storage is taken as it is, anything else rounded once. */
function exact(dtype: DType, r: ArrayLike<number> | Storage): Storage {
  if (!(r instanceof Float64Array) && !Array.isArray(r) && r.constructor === storageFor(dtype, 0).constructor) return r as Storage;
  return encode(dtype, r);
}
