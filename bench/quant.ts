/**
 * Quantized Linear layers against fp32 (Dettmers et al. 2022, "LLM.int8()": int8 and LLM.int8 pay off only from some
 * size on; below it the quantization and decomposition overheads make them slower than 16-bit): ms per forward as the
 * batch m grows and as the layer k = n grows, per format and outlier count, where each format starts to beat fp32,
 * and the bytes each format holds per weight as the device's tracker counts them. The baseline is fp32 because a CPU
 * has no fp16 GEMM (fp16 there is fp32 plus roundings, slower than fp32).
 */
import { createDevice, Linear, syntheticActivations, type Device, type LinearFormat, type LlmInt8Variant } from '../engine/index.ts';
import { timeIt } from './stats.ts';

export interface QuantMatmulResult {
  /** 'batch': m grows at a fixed layer size; 'size': the layer (k = n) grows at a fixed m. */
  sweep: 'batch' | 'size';
  /** fp32, int8, llm.int8 (paper) or llm.int8/bitsandbytes. */
  format: string;
  m: number;
  k: number;
  n: number;
  /** Outlier dimensions planted in x (magnitudes 20 to 60 in every token); LLM.int8 keeps exactly these in fp16. */
  outlierDims: number;
  ms: number;
  /** 2 m k n / time, in GOP/s. */
  gops: number;
  /** fp32's ms at the same shape over this format's ms: above 1, the format pays. */
  speedupVsFp32: number;
  runs: number;
}

export interface FormatBytes {
  format: string;
  k: number;
  n: number;
  /** Growth of the tracker's 'weights' bytes when the layer was built. */
  measuredBytes: number;
  /** The same from the format's definition (codes, scales, copies). */
  formulaBytes: number;
  bitsPerWeight: number;
}

export interface Crossover {
  sweep: 'batch' | 'size';
  format: string;
  outlierDims: number;
  /** The smallest m (batch) or k = n (size) from which the format beats fp32 at every larger one measured; null if never. */
  from: number | null;
}

export interface QuantBench {
  /** The batch sweep: a k x n layer, m tokens. */
  batch: { k: number; n: number; ms: number[] };
  /** The size sweep: m tokens through layers of k = n = hidden. */
  size: { m: number; hidden: number[] };
  matmul: QuantMatmulResult[];
  crossover: Crossover[];
  bytesPerWeight: FormatBytes[];
  /** Seconds the quantization benchmark took. */
  seconds: number;
}

interface Config {
  name: string;
  format: LinearFormat;
  variant?: LlmInt8Variant;
  outliers: number[];
}

const log = (s: string) => process.stderr.write(`${s}\n`);

/** Uniform weights with the variance of N(0, 1/k) (an LCG: timing and bytes do not depend on the values). */
function weightValues(k: number, n: number): Float32Array {
  const out = new Float32Array(k * n);
  const half = Math.sqrt(3 / k);
  let s = 12345;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 31 - 1) * half;
  }
  return out;
}

function formulaBytes(format: string, k: number, n: number): number {
  const scales = 4 * n;
  switch (format) {
    case 'fp32': return 4 * k * n;
    case 'fp16': case 'bf16': return 2 * k * n;
    case 'int8': case 'llm.int8/bitsandbytes': return k * n + scales;
    case 'llm.int8': return k * n + scales + 2 * k * n;
    case 'int4': return (k * n) / 2 + 4 * n * (k / 32);
    default: throw new Error(format);
  }
}

/** Times each format's Linear at the given shapes; fp32 must come first, as every speedup is against it. */
async function sweep(kindOfDevice: string, kind: 'batch' | 'size', configs: Config[], shapes: [number, number][], quick: boolean, out: QuantMatmulResult[]): Promise<void> {
  for (const k of [...new Set(shapes.map(([, k]) => k))]) {
    const ms = shapes.filter(([, kk]) => kk === k).map(([m]) => m);
    const wv = weightValues(k, k);
    for (const c of configs) {
      // A shape the other sweep measured already is reused, not timed again.
      const todo: [number, number][] = [];
      for (const o of c.outliers) {
        for (const m of ms) {
          const prev = out.find((r) => r.format === c.name && r.outlierDims === o && r.m === m && r.k === k);
          if (prev) out.push({ ...prev, sweep: kind });
          else todo.push([o, m]);
        }
      }
      if (todo.length === 0) continue;
      // A fresh device per layer: its compiled sessions (each holding a copy of the weight) go when it is disposed,
      // so one layer's sessions do not slow the next one's.
      const dev: Device = await createDevice(kindOfDevice);
      try {
        const lin = await Linear.fromWeights(dev, dev.tensor(wv, [k, k], 'fp32', { tag: 'weights', label: 'bench.source' }), { format: c.format, variant: c.variant, label: `bench.${c.name}` });
        for (const [outliers, m] of todo) {
          const act = syntheticActivations({ tokens: m, hidden: k, outlierDims: outliers, tokenShare: 1, seed: m });
          const x = dev.tensor(act.values, [m, k]);
          const t = await timeIt(async () => (await lin.forward(x)).dispose(), { warmup: 1, minRuns: 3, maxRuns: 20, minTimeMs: quick ? 60 : 120 });
          x.dispose();
          const fp32 = out.find((r) => r.sweep === kind && r.format === 'fp32' && r.m === m && r.k === k);
          const r: QuantMatmulResult = { sweep: kind, format: c.name, m, k, n: k, outlierDims: outliers, ms: t.ms, gops: (2 * m * k * k) / t.ms / 1e6, speedupVsFp32: fp32 ? fp32.ms / t.ms : 1, runs: t.runs };
          out.push(r);
          log(`    ${kind} ${c.name.padEnd(22)} outliers ${String(outliers).padStart(3)}  ${m} x ${k} x ${k}`.padEnd(72) + `${t.ms.toFixed(3).padStart(10)} ms ${r.speedupVsFp32.toFixed(2).padStart(6)}x fp32`);
        }
      } finally {
        await dev.dispose();
      }
    }
  }
}

export async function benchQuant(kind: string, opts: { quick?: boolean } = {}): Promise<QuantBench> {
  const t0 = performance.now();
  const quick = opts.quick ?? false;
  const batch = quick ? { k: 1024, n: 1024, ms: [1, 64, 512] } : { k: 4096, n: 4096, ms: [1, 16, 128, 512, 2048] };
  const size = quick ? { m: 128, hidden: [256, 1024] } : { m: 512, hidden: [256, 512, 1024, 2048, 4096] };
  const fp32: Config = { name: 'fp32', format: 'fp32', outliers: [0] };
  const int8: Config = { name: 'int8', format: 'int8', outliers: [0] };
  const batchConfigs: Config[] = quick
    ? [fp32, int8, { name: 'llm.int8', format: 'llm.int8', outliers: [0, 8] }]
    : [fp32, int8, { name: 'llm.int8', format: 'llm.int8', outliers: [0, 8, 64] }, { name: 'llm.int8/bitsandbytes', format: 'llm.int8', variant: 'bitsandbytes', outliers: [8] }];
  const sizeConfigs: Config[] = [fp32, int8, { name: 'llm.int8', format: 'llm.int8', outliers: [8] }];
  const matmul: QuantMatmulResult[] = [];
  const bytesPerWeight: FormatBytes[] = [];
  log(`  quantized Linear: batch sweep at ${batch.k} x ${batch.n}, size sweep at m = ${size.m} ...`);
  await sweep(kind, 'batch', batchConfigs, batch.ms.map((m) => [m, batch.k]), quick, matmul);
  await sweep(kind, 'size', sizeConfigs, size.hidden.map((h) => [size.m, h]), quick, matmul);
  const formats: { name: string; format: LinearFormat; variant?: LlmInt8Variant }[] = [
    { name: 'fp32', format: 'fp32' }, { name: 'fp16', format: 'fp16' }, { name: 'bf16', format: 'bf16' }, { name: 'int8', format: 'int8' },
    { name: 'llm.int8', format: 'llm.int8' }, { name: 'llm.int8/bitsandbytes', format: 'llm.int8', variant: 'bitsandbytes' }, { name: 'int4', format: 'int4' },
  ];
  const { k, n } = batch;
  const dev: Device = await createDevice(kind);
  try {
    const source = dev.tensor(weightValues(k, n), [k, n], 'fp32', { tag: 'weights', label: 'bench.source' });
    for (const f of formats) {
      const before = dev.memory.liveByTag().weights;
      const lin = await Linear.fromWeights(dev, source, { format: f.format, variant: f.variant, label: `bytes.${f.name}` });
      const measured = dev.memory.liveByTag().weights - before;
      bytesPerWeight.push({ format: f.name, k, n, measuredBytes: measured, formulaBytes: formulaBytes(f.name, k, n), bitsPerWeight: (measured * 8) / (k * n) });
      lin.dispose();
    }
    source.dispose();
  } finally {
    await dev.dispose();
  }
  return { batch, size, matmul, crossover: crossovers(matmul), bytesPerWeight, seconds: (performance.now() - t0) / 1000 };
}

export function crossovers(rows: readonly QuantMatmulResult[]): Crossover[] {
  const out: Crossover[] = [];
  const keys = [...new Set(rows.filter((r) => r.format !== 'fp32').map((r) => `${r.sweep}|${r.format}|${r.outlierDims}`))];
  for (const key of keys) {
    const [sweep, format, o] = key.split('|') as ['batch' | 'size', string, string];
    const at = (r: QuantMatmulResult) => (sweep === 'batch' ? r.m : r.k);
    const series = rows.filter((r) => r.sweep === sweep && r.format === format && r.outlierDims === Number(o)).sort((a, b) => at(a) - at(b));
    let from: number | null = null;
    for (let i = series.length - 1; i >= 0 && series[i].speedupVsFp32 > 1; i--) from = at(series[i]);
    out.push({ sweep, format, outlierDims: Number(o), from });
  }
  return out;
}

function table(q: QuantBench, sweep: 'batch' | 'size', title: string, cols: number[], pick: (r: QuantMatmulResult) => number, label: string): string[] {
  const rows = q.matmul.filter((r) => r.sweep === sweep);
  const out = [`\n${title}`, `format                 outliers ${cols.map((c) => `${label}=${c}`.padStart(14)).join('')}`];
  for (const key of [...new Set(rows.map((r) => `${r.format}|${r.outlierDims}`))]) {
    const [format, o] = key.split('|');
    const cells = cols.map((c) => {
      const r = rows.find((x) => x.format === format && x.outlierDims === Number(o) && pick(x) === c);
      return (r ? (format === 'fp32' ? r.ms.toFixed(2) : `${r.ms.toFixed(2)} ${r.speedupVsFp32.toFixed(1)}x`) : '-').padStart(14);
    });
    out.push(`${format.padEnd(23)}${o.padStart(8)} ${cells.join('')}`);
  }
  for (const c of q.crossover.filter((x) => x.sweep === sweep)) {
    out.push(`  ${c.format} (${c.outlierDims} outliers) beats fp32 ${c.from === null ? `at no ${label} measured` : `from ${label} = ${c.from}`}`);
  }
  return out;
}

export function printQuant(q: QuantBench): string[] {
  const out = [
    ...table(q, 'batch', `quantized Linear ${q.batch.k} x ${q.batch.n} as the batch grows (ms per forward, median; Nx = speedup over fp32)`, q.batch.ms, (r) => r.m, 'm'),
    ...table(q, 'size', `quantized Linear k = n as the layer grows, m = ${q.size.m} (ms per forward, median)`, q.size.hidden, (r) => r.k, 'k'),
  ];
  out.push(`\nbytes per weight (${q.batch.k} x ${q.batch.n}, measured by the tracker)`);
  for (const b of q.bytesPerWeight) {
    out.push(`  ${b.format.padEnd(22)} ${String(b.measuredBytes).padStart(11)} B  ${(b.measuredBytes / (b.k * b.n)).toFixed(4).padStart(7)} B/weight  ${b.bitsPerWeight.toFixed(2).padStart(6)} bits${b.measuredBytes === b.formulaBytes ? '' : `  (formula ${b.formulaBytes})`}`);
  }
  return out;
}
