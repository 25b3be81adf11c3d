/** The numpy reference numbers of test/fixtures/generate_precision.py, typed. */
import { readFileSync } from 'node:fs';

export interface SumFixture {
  distribution: 'uniform' | 'signed' | 'mixed';
  n: number;
  inputs_sha256: string;
  first_inputs: number[];
  fp16: number;
  fp16_bits: number;
  fp16_last_change: number;
  fp32: number;
  fp32_bits: number;
  fp16_inputs_fp32_acc: number;
  fp16_inputs_fp32_acc_bits: number;
  bf16: number;
  bf16_last_change: number;
  fp64_sequential: number;
  exact: number;
}

export interface RoundingFixture {
  value: number;
  fp32: number;
  fp16_bits: number;
  fp16: number | null;
  fp16_rel_error: number | null;
  bf16: number | null;
  bf16_rel_error: number | null;
}

interface Stats { max: number; mean: number; rms: number }

export interface PrecisionFixture {
  numpy: string;
  seed: number;
  sums: SumFixture[];
  rounding: RoundingFixture[];
  rounding_sample: { n: number; lo: number; hi: number; spacing: 'linear'; fp16: Stats; bf16: Stats };
  ulp: { fp16: [number, number][]; fp32: [number, number][]; bf16: [number, number][] };
  finfo: Record<'fp16' | 'fp32', { max: number; smallest_normal: number; smallest_subnormal: number; eps: number; nexp: number; nmant: number }>;
}

export const fixture = JSON.parse(
  readFileSync(new URL('../../fixtures/precision/precision.json', import.meta.url), 'utf8'),
) as PrecisionFixture;
