/**
 * The reference backend against numpy: every case in test/fixtures/ops/cases.json (test/fixtures/generate_ops.py,
 * float64 from the exact input values) run through the public API on a 'reference' device.
 *
 * Tolerances, |got - want| <= atol + rtol * |want| against the float64 value:
 * - fp32: rtol 2.4e-7 (2^-22, one fp32 ulp at the bottom of a binade) and atol 1e-7. The kernels compute in
 *   float64 and round once, so a correct kernel is within half an ulp (2^-24 relative); today every fp32 output is
 *   exactly the nearest fp32 to numpy's value, and the slack only absorbs float64 summation-order differences that
 *   might flip a rounding. atol is for outputs near 0 (cancellation in MatMul, Gelu's far tail).
 * - fp16, bf16: the exact bit pattern of the float64 result rounded once. Two MatMul cases sit 2^-30 above a
 *   rounding midpoint, where rounding through fp32 first would land one ulp low.
 * - int8, uint8, int32: exact.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  apply, createDevice, fp32ToBf16, fp32ToFp16, type Attrs, type Device, type DType, type OpName, type Tensor,
} from '../../../engine/index.ts';

interface Operand {
  dtype: DType;
  shape: number[];
  data: number[];
}
interface Case {
  name: string;
  op: OpName;
  attrs: Attrs;
  inputs: (Operand | null)[];
  outputs: Operand[];
}

const CASES = JSON.parse(readFileSync(new URL('../../fixtures/ops/cases.json', import.meta.url), 'utf8')) as Case[];

const FP32 = { rtol: 2.4e-7, atol: 1e-7 };

const hex = (h: number) => '0x' + h.toString(16).padStart(4, '0');

/** Mismatches as readable lines (at most 5), so a failure names the element, the values and the distance. */
function compare(got: Tensor, want: Operand): string[] {
  const bad: string[] = [];
  const n = want.data.length;
  if (got.dtype !== want.dtype || got.shape.join() !== want.shape.join()) {
    return [`got ${got.dtype}[${got.shape}], want ${want.dtype}[${want.shape}]`];
  }
  for (let i = 0; i < n && bad.length < 5; i++) {
    const w = want.data[i];
    if (want.dtype === 'fp16' || want.dtype === 'bf16') {
      const g = (got.data as Uint16Array)[i];
      const e = want.dtype === 'fp16' ? fp32ToFp16(w) : fp32ToBf16(w); // exact: w is a value of the dtype
      if (g !== e) bad.push(`[${i}] got ${hex(g)} (${got.toFloat32()[i]}), want ${hex(e)} (${w})`);
    } else if (want.dtype === 'fp32') {
      const g = (got.data as Float32Array)[i];
      const err = Math.abs(g - w);
      if (!(err <= FP32.atol + FP32.rtol * Math.abs(w))) bad.push(`[${i}] got ${g}, want ${w} (abs err ${err.toExponential(2)}, rel ${(err / Math.abs(w)).toExponential(2)})`);
    } else {
      const g = (got.data as ArrayLike<number>)[i];
      if (g !== w) bad.push(`[${i}] got ${g}, want ${w}`);
    }
  }
  return bad;
}

describe('reference backend against numpy (test/fixtures/ops/cases.json)', () => {
  let dev: Device;
  beforeAll(async () => {
    dev = await createDevice('reference');
  });
  afterAll(async () => {
    await dev.dispose();
  });

  it('covers every op in the fixture set', () => {
    const ops = new Set(CASES.map((c) => c.op));
    for (const op of ['MatMul', 'MatMulInteger', 'DynamicQuantizeLinear', 'MatMulNBits', 'Add', 'Sub', 'Mul', 'Div', 'Softmax',
      'LayerNormalization', 'RMSNorm', 'Gelu', 'SiLU', 'Sigmoid', 'Gather', 'Reshape', 'Transpose', 'Cast', 'Attention',
      'Abs', 'ReduceMax', 'Round', 'Clip', 'QuantizeLinear', 'DequantizeLinear']) {
      expect(ops.has(op as OpName), op).toBe(true);
    }
  });

  it('holds the double-rounding traps: a kernel rounding its float64 sum through fp32 fails them by one ulp', () => {
    // Each sum sits 2^-30 above a rounding midpoint of the dtype. Rounded once it goes up; rounded to fp32 first it
    // lands on the midpoint itself and ties to even, downward. The cases below must then catch such a kernel.
    for (const [name, dtype, toBits] of [['MatMul fp16 midpoint plus 2^-30', 'fp16', fp32ToFp16], ['MatMul bf16 midpoint plus 2^-30', 'bf16', fp32ToBf16]] as const) {
      const c = CASES.find((x) => x.name === name)!;
      expect(c, name).toBeDefined();
      const [a, b] = c.inputs as Operand[];
      const exact = a.data.reduce((s, x, i) => s + x * b.data[i], 0);   // exact in float64: a few fp16/bf16 products
      const want = toBits(c.outputs[0].data[0]);
      const viaFp32 = toBits(Math.fround(exact));
      expect(viaFp32, `${dtype}: rounding through fp32 lands one ulp low`).toBe(want - 1);
    }
  });

  for (const c of CASES) {
    const run = async () => {
      const ins = c.inputs.map((x) => (x ? dev.tensor(x.data, x.shape, x.dtype) : null));
      const outs = await apply(c.op, ins, c.attrs);
      expect(outs.length).toBe(c.outputs.length);
      const bad = outs.flatMap((t, k) => compare(t, c.outputs[k]).map((line) => `output ${k} ${line}`));
      for (const t of [...ins, ...outs]) t?.dispose();
      expect(bad).toEqual([]);
    };
    it(c.name, run);
  }
});
