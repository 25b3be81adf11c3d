/** Loads test/fixtures/quant/cases.json (numpy, test/fixtures/generate_quant.py) and compares tensors with it bit for bit. */
import { readFileSync } from 'node:fs';
import { createDevice, webgpuUnavailable, type Device, type DType, type Tensor } from '../../../engine/index.ts';

export interface Operand {
  dtype: DType;
  shape: number[];
  data: number[];
}

export interface RoundTripCase {
  name: string;
  scheme: 'absmax' | 'zeropoint';
  granularity: 'tensor' | 'row' | 'column' | 'block';
  blockSize: number | null;
  dtype: 'int8' | 'uint8';
  x: Operand;
  q: Operand;
  scale: Operand;
  zeroPoint: Operand | null;
  dequantized: Operand;
  stats: { maxAbs: number; meanAbs: number; rms: number; absmax: number; relative: number };
}

export interface VectorwiseCase {
  name: string;
  x: Operand;
  w: Operand;
  wq: Operand;
  wScale: Operand;
  xq: Operand;
  xScale: Operand;
  acc: Operand;
  /** numpy's fp32 replay of the engine's roundings: Cast(acc) * (xScale ⊗ wScale). */
  y32: Operand;
  /** acc * xScale * wScale in float64. */
  y64: Operand;
  /** x @ w in float64, unquantized. */
  exact: Operand;
}

export const FIXTURES = JSON.parse(readFileSync(new URL('../../fixtures/quant/cases.json', import.meta.url), 'utf8')) as {
  roundtrip: RoundTripCase[];
  vectorwise: VectorwiseCase[];
};

/** The backends every quant test runs on: cpu and the reference always, webgpu where an adapter works. */
export const KINDS = ['cpu', 'reference', ...((await webgpuUnavailable()) === null ? ['webgpu' as const] : [])] as const;

const devices = new Map<string, Promise<Device>>();
export const device = (kind: string) => {
  if (!devices.has(kind)) devices.set(kind, createDevice(kind));
  return devices.get(kind)!;
};

export const load = (dev: Device, o: Operand, opts: { tag?: 'weights' | 'activations'; label?: string } = {}) => dev.tensor(o.data, o.shape, o.dtype, opts);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** Distance in fp32 ulps (ordered bit patterns), so "within 1 ulp" means what it says at every magnitude. */
export function ulps(a: number, b: number): number {
  const key = (v: number) => {
    f32[0] = v;
    return u32[0] & 0x80000000 ? -(u32[0] & 0x7fffffff) : u32[0];
  };
  return Math.abs(key(a) - key(b));
}

/** Mismatches (at most 5) between a tensor and a fixture operand: shape, dtype, then values within `maxUlps`. */
export function diff(got: Tensor, want: Operand, maxUlps = 0): string[] {
  if (got.dtype !== want.dtype || got.shape.join() !== want.shape.join()) return [`got ${got.dtype}[${got.shape}], want ${want.dtype}[${want.shape}]`];
  // int32 goes through its raw storage: above 2^24 a float32 copy would round it.
  const g = want.dtype === 'int32' ? (got.data as Int32Array) : got.toFloat32();
  const bad: string[] = [];
  for (let i = 0; i < want.data.length && bad.length < 5; i++) {
    const ok = want.dtype === 'fp32' || want.dtype === 'fp16' ? ulps(g[i], want.data[i]) <= maxUlps : g[i] === want.data[i];
    if (!ok) bad.push(`[${i}] got ${g[i]}, want ${want.data[i]}`);
  }
  return bad;
}
