/** Lesson 02 end to end through the real kernel: every code cell in order, no errors, its measurements, and both exercises' feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, tracesOf, markdownOf, feedbackOf, displays, dataOf } from './lesson_run.ts';
import type { Timing } from '../../engine/timing.ts';

/** A timing as timeMs reports it: at least `minRuns` runs, its quartiles in order and its median that of its samples. */
function expectTiming(t: Timing, minRuns: number, medianMs = t.medianMs): void {
  expect(t.runs).toBeGreaterThanOrEqual(minRuns);
  expect(t.samplesMs).toHaveLength(t.runs);
  const sorted = [...t.samplesMs].sort((a, b) => a - b);
  const mid = (sorted.length - 1) / 2;
  expect(t.medianMs).toBeCloseTo((sorted[Math.floor(mid)] + sorted[Math.ceil(mid)]) / 2, 9);
  expect(t.medianMs).toBe(medianMs);
  expect(t.minMs).toBe(sorted[0]);
  expect(t.minMs).toBeGreaterThan(0);
  expect(t.q1Ms).toBeLessThanOrEqual(t.medianMs);
  expect(t.q3Ms).toBeGreaterThanOrEqual(t.medianMs);
}

/** The LLM.int8() exercise solved (the reference solution); the exercise test breaks it one slip at a time. */
const LLM_INT8_SOLUTION = `function llmInt8ByHand(x: number[][], wCodes: number[][], wStep: number[], threshold: number): number[][] {
  const K = wCodes.length;
  // Step 1: a dimension is an outlier if any token's |x| reaches the threshold.
  const outlier = Array.from({ length: K }, (_, k) => x.some((row) => Math.abs(row[k]) >= threshold));
  return x.map((row) => {
    // Step 2: the token's step from its regular values only, their codes, the integer sum over them, rescaled.
    let absmax = 0;
    for (let k = 0; k < K; k++) if (!outlier[k]) absmax = Math.max(absmax, Math.abs(row[k]));
    const step = absmax / 127;
    const codes = row.map((v, k) => (outlier[k] ? 0 : Math.round(v / step)));
    return wStep.map((ws, j) => {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += codes[k] * wCodes[k][j];
      let y = acc * step * ws;
      // Step 3: the outlier dimensions times the same rows of W, dequantized from their codes.
      for (let k = 0; k < K; k++) if (outlier[k]) y += row[k] * wCodes[k][j] * ws;
      return y;
    });
  });
}`;

describe('lesson 02 (int8 quantization) through the kernel', () => {
  const { cells, ran, client, run, value, figure, outputsOf, liveChart, runAll } = lessonRun('lessons/02-int8.md');

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', () => runAll(), 300_000);

  it('measures int8 weight bytes with the tracker (codes plus one fp32 scale per column) and times fp32 against int8 live', async () => {
    const mem = (await value('memory.map((m) => [m.format, m.bytes])')) as [string, number][];
    const K = 2048;
    expect(mem).toEqual([['fp32', 4 * K * K], ['fp16', 2 * K * K], ['int8', K * K + 4 * K]]);
    expect(markdownOf(outputsOf('Linear.fromWeights(dev, speedW'))).toContain('one fp32 scale per output column (8,192 bytes)');
    expect(tracesOf(figure(/^Bytes held by one 2048 x 2048 layer/))[0].y).toEqual([16, 8, (K * K + 4 * K) / 2 ** 20]);

    for (const title of [/^Decode \(1 x 2048 times 2048 x 2048\)/, /^Prefill \(256 x 2048 times 2048 x 2048\)/]) {
      const chart = liveChart(title);
      expect(chart.updates).toBeGreaterThanOrEqual(1);
      expect(chart.traces.map((t) => t.name)).toEqual(['fp32 (ms)', 'int8 (ms)']);
      for (const t of chart.traces) expect(t.y!.length).toBeGreaterThanOrEqual(5);
      expect(chart.text).toMatch(/\(closed, /);
    }
    const speed = (await value('speed.map((s) => [s.shape, s.rows, s.format, s.ms, s.timing])')) as [string, number, string, number, Timing][];
    expect(speed.map(([shape, rows, format]) => [shape, rows, format])).toEqual([['decode', 1, 'fp32'], ['decode', 1, 'int8'], ['prefill', 256, 'fp32'], ['prefill', 256, 'int8']]);
    for (const [, , , ms, t] of speed) expectTiming(t, 20, ms);
    // Each live chart shows every timed run of its shape.
    const decodeChart = liveChart(/^Decode \(1 x 2048/);
    expect(decodeChart.traces.map((t) => t.y!.length)).toEqual([speed[0][4].runs, speed[1][4].runs]);
    const speedText = markdownOf(outputsOf('const speedOf'));
    expect(speedText).toMatch(/At the prefill shape int8 ran \*\*[\d.]+x \([\d.]+-[\d.]+\)\*\* as fast as fp32; at the decode shape \*\*[\d.]+x \([\d.]+-[\d.]+\)\*\*/);
    // The bytes-only prediction is fp32's median scaled by the bytes held, and the sentence quotes both timings with their spread.
    const predicted = (speed[0][3] * (K * K + 4 * K)) / (4 * K * K);
    expect(speedText).toContain(`**${predicted.toPrecision(3)} ms**`);
    expect(speedText).toMatch(/It took [\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\)/);

    // The cache check: the same 16 MiB read again and again against a 128 MiB weight read once per call.
    const reads = (await value('{ small: reads.small, wide: reads.wide, smallRate, wideRate, cached, wideBytes: readBytes.wide, llc }')) as {
      small: Timing; wide: Timing; smallRate: { median: number }; wideRate: { median: number }; cached: boolean; wideBytes: number; llc: number | null;
    };
    // The wide weight is at least four times the last-level cache, and at least eight layers.
    expectTiming(reads.small, 15);
    expectTiming(reads.wide, 15);
    expect(reads.smallRate.median).toBeCloseTo((4 * K * K) / reads.small.medianMs / 1e6, 9);
    expect(reads.wideBytes % (4 * K * K)).toBe(0);
    expect(reads.wideBytes).toBeGreaterThanOrEqual(Math.max(8 * 4 * K * K, Math.min(4 * (reads.llc ?? 0), 32 * 4 * K * K)));
    expect(reads.wideRate.median).toBeCloseTo(reads.wideBytes / reads.wide.medianMs / 1e6, 9);
    const cacheText = markdownOf(outputsOf('const WIDE ='));
    expect(cacheText).toContain(`The 16 MiB weight was read at **${reads.smallRate.median.toFixed(1)} GB/s**, the ${reads.wideBytes / 2 ** 20} MiB one at **${reads.wideRate.median.toFixed(1)} GB/s**`);
    if (reads.llc) expect(cacheText).toContain(`This CPU's last-level cache holds ${reads.llc / 2 ** 20} MiB`);
    expect(cacheText).toContain(reads.cached ? 'served at least partly from the CPU' : 'The small weight read');
    // The speed layers and the weights are freed once measured.
    expect(await value('Object.values(speedLayers).every((l) => l.disposed) && speedW.disposed && wideW.disposed && wideLayer.disposed')).toBe(true);
  });

  it('works the absmax example by hand and agrees with the engine, then checks the error against half a step', async () => {
    const ex = (await value('{ byHand, engineCodes, sTimesStep: s * engineStep, sx: example.map((x) => s * x) }')) as { byHand: number[]; engineCodes: number[]; sTimesStep: number; sx: number[] };
    expect(ex.byHand).toEqual(ex.engineCodes);
    expect(ex.byHand).toContain(-127);
    expect(ex.sTimesStep).toBeCloseTo(1, 6);
    // No value of the example sits near a rounding tie, where float64 and the engine's fp32 could round apart.
    for (const v of ex.sx) expect(Math.abs(Math.abs(v - Math.trunc(v)) - 0.5)).toBeGreaterThan(0.01);
    expect(markdownOf(outputsOf('const example ='))).toContain('**agree with the hand computation**');

    const e = (await value('{ maxSteps: e.maxAbs / step, rmsRatio: e.rms / (step / Math.sqrt(12)), relative: e.relative }')) as { maxSteps: number; rmsRatio: number; relative: number };
    expect(e.maxSteps).toBeLessThanOrEqual(0.5 + 1e-6);
    expect(e.rmsRatio).toBeGreaterThan(0.97);
    expect(e.rmsRatio).toBeLessThan(1.03);
    expect(e.relative).toBeLessThanOrEqual(1 / 254 + 1e-9);
    const hist = tracesOf(figure('Rounding errors of 262,144 values, in steps'));
    expect(hist[0].y).toHaveLength(48);
  });

  it('shows zero-point winning on all-positive data and tying on symmetric data', async () => {
    const zp = (await value('zp.map((r) => [r.data, r.scheme, r.codesUsed, r.rms, r.zeroPoint])')) as [string, string, number, number, number | null][];
    const rms = (d: string, s: string) => zp.find((r) => r[0] === d && r[1] === s)![3];
    expect(rms('normal', 'absmax') / rms('normal', 'zeropoint')).toBeGreaterThan(0.9);
    expect(rms('normal', 'absmax') / rms('normal', 'zeropoint')).toBeLessThan(1.1);
    for (const d of ['GELU(normal)', 'ReLU(normal)']) expect(rms(d, 'absmax') / rms(d, 'zeropoint')).toBeGreaterThan(1.8);
    expect(zp.find((r) => r[0] === 'ReLU(normal)' && r[1] === 'absmax')![2]).toBeLessThanOrEqual(128);
    expect(zp.find((r) => r[0] === 'ReLU(normal)' && r[1] === 'zeropoint')![4]).toBe(0);
    expect(tracesOf(figure('RMS round-trip error by scheme')).map((t) => t.name)).toEqual(['absmax', 'zeropoint']);
  });

  it('measures granularity on a weight with one large row: per row and per block protect the other rows, per tensor and per column do not', async () => {
    const g = (await value('gran.map((r) => [r.granularity, r.scales, r.bits, r.ordinaryRms])')) as [string, number, number, number][];
    const of = Object.fromEntries(g.map(([name, scales, bits, rms]) => [name, { scales, bits, rms }]));
    expect(Object.keys(of)).toEqual(['tensor', 'row', 'column', 'block']);
    expect([of.tensor.scales, of.row.scales, of.column.scales, of.block.scales]).toEqual([1, 512, 512, 4096]);
    expect(of.row.bits).toBeCloseTo(8 + 32 / 512, 12);
    expect(of.block.bits).toBeCloseTo(8.5, 12);
    expect(of.tensor.rms / of.row.rms).toBeGreaterThan(10);
    expect(of.column.rms / of.row.rms).toBeGreaterThan(5);
    expect(of.block.rms).toBeLessThanOrEqual(of.row.rms * 1.05);
    expect(tracesOf(figure('RMS round-trip error by granularity')).map((t) => t.name)).toEqual(['ordinary rows', 'the large row']);
  });

  it('shows the vector-wise int32 accumulator exact and the error coming from rounding the inputs', async () => {
    const v = (await value('{ mismatches, maxAcc, rescaleDiff, deviceVsDq: relError(y, dqProduct), sources: errorSources.map((s) => s["relative error vs exact"]) }')) as {
      mismatches: number; maxAcc: number; rescaleDiff: number; deviceVsDq: number; sources: number[];
    };
    expect(v.mismatches).toBe(0);
    expect(v.maxAcc).toBeGreaterThan(0);
    expect(v.maxAcc).toBeLessThanOrEqual(127 ** 2 * 1024);
    expect(v.rescaleDiff).toBeLessThan(1e-6);
    expect(v.deviceVsDq).toBeLessThan(1e-6);
    const [device, dq, onlyX, onlyW] = v.sources;
    expect(Math.abs(device - dq) / dq).toBeLessThan(1e-3);
    expect(Math.hypot(onlyX, onlyW) / dq).toBeGreaterThan(0.9);
    expect(Math.hypot(onlyX, onlyW) / dq).toBeLessThan(1.1);
    expect(markdownOf(outputsOf('vectorwiseMatmulParts(dev.tensor(xv'))).toContain('differ in **0** of 16,384 entries');
  });

  it('plants outlier features, shows the codes they leave to the other values, and naive int8 failing where fp16 and LLM.int8 do not', async () => {
    const o = (await value('{ planted: act.outlierDims, found: cols.outliers.map((c) => c.dim).sort((a, b) => a - b), regularMax, byKind }')) as {
      planted: number[]; found: number[]; regularMax: number; byKind: Record<string, number>[];
    };
    expect(o.planted).toHaveLength(6);
    expect(o.found).toEqual(o.planted);
    expect(o.regularMax).toBeLessThan(6);
    expect(o.byKind[0]['median distinct codes of the regular values']).toBeLessThan(32);
    expect(o.byKind[1]['median distinct codes of the regular values']).toBeGreaterThan(100);
    const scatter = tracesOf(figure('Largest |x| of each hidden dimension over 256 tokens'));
    expect(scatter[1].x).toEqual(o.planted);

    const errs = (await value('{ w: withOutliers.errors, c: withoutOutliers.errors }')) as Record<'w' | 'c', Record<'fp16' | 'int8' | 'llmInt8', { rel: number; meanAbs: number }>>;
    expect(errs.w.int8.meanAbs / errs.c.int8.meanAbs).toBeGreaterThan(5);
    expect(errs.w.int8.meanAbs / errs.w.fp16.meanAbs).toBeGreaterThan(5);
    expect(errs.w.fp16.rel / errs.c.fp16.rel).toBeGreaterThan(0.5);
    expect(errs.w.fp16.rel / errs.c.fp16.rel).toBeLessThan(2);
    expect(errs.w.llmInt8.meanAbs / errs.c.int8.meanAbs).toBeLessThan(1.25);
    expect(markdownOf(outputsOf('outlierExperiment(act'))).toMatch(/naive int8's mean error grew \*\*[\d.]+x\*\*/);
  });

  it("runs LLM.int8()'s three steps by hand and matches llmInt8Matmul", async () => {
    const v = (await value('{ outlierDims, planted: act.outlierDims, stepsDiff, engineErr: relError(engineY, refAct), int8Share: engine.int8Share }')) as {
      outlierDims: number[]; planted: number[]; stepsDiff: number; engineErr: number; int8Share: number;
    };
    expect(v.outlierDims).toEqual(v.planted);
    expect(v.stepsDiff).toBeLessThan(1e-6);
    expect(v.engineErr).toBeLessThan(0.01);
    expect(v.int8Share).toBeCloseTo(1 - 6 / 1024, 12);
    expect(markdownOf(outputsOf('findOutlierDims(xAct'))).toContain('exactly the planted ones');
    // The byte counts are labelled in words and in KiB: 6 outlier rows of 256 fp16 weights are 3,072 bytes.
    const reported = displays(outputsOf('findOutlierDims(xAct')).map((m) => String(dataOf(m)['text/plain'])).join('\n');
    expect(reported).toMatch(/W's fp16 outlier rows this product gathered \(6 rows of 256\)\s+3 KiB \(3,072 B\)/);
    expect(reported).toMatch(/X's fp16 outlier columns \(256 tokens x 6\)\s+3 KiB \(3,072 B\)/);
    expect(reported).not.toMatch(/fp16Share|fp16Rows|int8Share/);
  });

  it('sweeps the threshold live and plots error against the share kept in fp16', async () => {
    // The chart is redrawn in place after every threshold, with the threshold (not the time) on its x axis.
    const chart = liveChart(/^LLM\.int8\(\) error against the threshold$/);
    expect(chart.updates).toBe(19);
    expect(chart.traces.map((t) => t.name)).toEqual(["paper's formula", 'bitsandbytes']);
    const sweep = (await value('sweep.map((p) => [p.threshold, p.dims, p.paper, p.bitsandbytes])')) as [number | null, number, number, number][];
    expect(sweep).toHaveLength(19);
    expect(chart.traces[0].x).toEqual(sweep.map(([t]) => t ?? 100));   // Infinity is drawn at 100, labelled ∞
    expect(chart.traces[0].y).toEqual(sweep.map((p) => p[2]));
    expect(chart.traces[1].y).toEqual(sweep.map((p) => p[3]));
    expect(sweep[0][1]).toBe(0);   // Infinity (JSON null): nothing in fp16
    const dims = sweep.map((p) => p[1]);
    for (let i = 1; i < dims.length; i++) expect(dims[i]).toBeGreaterThanOrEqual(dims[i - 1]);
    expect(dims.at(-1)).toBe(1024);
    const at6 = sweep.find((p) => p[0] === 6)!;
    expect(at6[1]).toBe(6);
    expect(sweep[0][2] / at6[2]).toBeGreaterThan(5);
    expect(at6[3]).toBeGreaterThan(at6[2]);   // bitsandbytes' outlier rows carry W's rounding error
    const traces = tracesOf(figure('LLM.int8() error against the share of values kept in fp16'));
    expect(traces.map((t) => t.name)).toEqual(["paper's formula", 'bitsandbytes', 'naive int8 (nothing in fp16)', 'fp16']);
    const sweepText = markdownOf(outputsOf('const distinct ='));
    expect(sweepText).toMatch(/At threshold 6, \*\*0\.59%\*\* of the values in fp16 cut the error \*\*\d+x\*\*/);
    // The gap the threshold sits in is the generator's doing, and the text says so.
    expect(sweepText).toContain('That gap is built into the data');
    expect(sweepText).not.toContain('once for all models');
  });

  it('counts outlier dimensions: naive int8 jumps with the first, the paper stays flat, bitsandbytes grows', async () => {
    const c = (await value('counts.map((p) => [p.outlierDims, p.detected, p.int8.meanAbs, p.llmInt8.meanAbs, p.llmInt8Bitsandbytes.meanAbs])')) as number[][];
    expect(c.map((p) => p[0])).toEqual([0, 1, 2, 4, 8, 16, 32]);
    expect(c.map((p) => p[1])).toEqual([0, 1, 2, 4, 8, 16, 32]);
    expect(c[1][2] / c[0][2]).toBeGreaterThan(3);
    expect(c.at(-1)![3] / c[0][3]).toBeLessThan(1.2);
    expect(c.at(-1)![4] / c[1][4]).toBeGreaterThan(2);
    expect(tracesOf(figure('Mean absolute error of the product against the number of outlier dimensions'))).toHaveLength(4);
  });

  it("compares the paper's formula with bitsandbytes: three times the bytes against a larger error", async () => {
    const b = (await value('{ paper: wLlm.bytes.bitsPerValue, bnb: wBnb.bytes.bitsPerValue }')) as { paper: number; bnb: number };
    expect(b.paper).toBeCloseTo(24 + 32 / 1024, 12);
    expect(b.bnb).toBeCloseTo(8 + 32 / 1024, 12);
    expect(markdownOf(outputsOf('const compare ='))).toMatch(/bitsandbytes holds \*\*3\.0x\*\* fewer bytes and pays with \*\*[\d.]+x\*\* the error at threshold 6/);
  });

  it('swaps a Linear across formats: bytes as the tracker counts them, and the error of each', async () => {
    const rows = (await value('linearRows.map((r) => [r.format, r.bits, r.kib, r.trackerKib, r.errOutliers, r.errClean])')) as [string, number, number, number, number, number][];
    const of = Object.fromEntries(rows.map(([f, bits, kib, tracker, withO, clean]) => [f, { bits, kib, tracker, withO, clean }]));
    expect(Object.keys(of)).toEqual(['fp32', 'fp16', 'bf16', 'int8', 'llm.int8 (paper)', 'llm.int8 (bitsandbytes)', 'int4']);
    const expectedBits = { fp32: 32, fp16: 16, bf16: 16, int8: 8 + 32 / 1024, 'llm.int8 (paper)': 24 + 32 / 1024, 'llm.int8 (bitsandbytes)': 8 + 32 / 1024, int4: 5 };
    for (const [f, bits] of Object.entries(expectedBits)) {
      expect(of[f].bits, f).toBeCloseTo(bits, 12);
      expect(of[f].tracker, f).toBe(of[f].kib);
    }
    expect(of.fp32.withO).toBeLessThan(1e-5);
    expect(of.int8.withO / of['llm.int8 (paper)'].withO).toBeGreaterThan(5);
    expect(of.int8.withO / of['llm.int8 (bitsandbytes)'].withO).toBeGreaterThan(2);
    expect(of.int4.clean).toBeGreaterThan(of.int8.clean);
    const swapText = markdownOf(outputsOf('const FORMATS:'));
    expect(swapText).toContain("agrees with every layer's own byte count");
    // This int4 layer is weight-only (accuracy level 0), and the text says so from the layer's own description.
    expect(swapText).toContain('MatMulNBits at accuracy level 0');
    expect(tracesOf(figure('Bits per weight against error, by format'))[0].x).toHaveLength(7);
    const timings = (await value('linearRows.map((r) => r.timing)')) as Timing[];
    for (const t of timings) expectTiming(t, 15);
    expect(swapText).toMatch(/LLM\.int8\(\) took [\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\) per forward/);
  });

  it('serves the built-in model in every format and scans its real activations against the threshold', async () => {
    const q = (await value('Object.fromEntries(Object.entries(served).map(([f, q]) => [f, [q.nats, q.agreement ?? 1, q.bytes]]))')) as Record<string, [number, number, number]>;
    expect(Object.keys(q)).toEqual(['fp32', 'fp16', 'int8-tensor', 'int8', 'llm.int8', 'int4']);
    const d = (f: string) => q[f][0] - q.fp32[0];
    for (const f of ['fp16', 'int8', 'llm.int8']) expect(Math.abs(d(f)), f).toBeLessThan(5e-3);
    // One scale for all of x and all of W loses more than one per token and per column.
    expect(d('int8-tensor')).toBeGreaterThan(d('int8'));
    expect(q['int8-tensor'][1]).toBeLessThan(q.int8[1]);
    expect(q['int8-tensor'][2]).toBeLessThan(q.int8[2]);
    // 4-bit weights lose more than the vector-wise 8-bit formats, and more next bytes than int8.
    expect(d('int4')).toBeGreaterThan(Math.max(d('int8'), d('llm.int8'), d('fp16')));
    expect(q.int4[1]).toBeLessThan(q.int8[1]);
    // Bytes: int8 is codes plus one fp32 scale per column (just over 8 bits a weight); the paper's LLM.int8() also keeps fp16.
    expect(q.int8[2] / q.fp32[2]).toBeGreaterThan(0.25);
    expect(q.int8[2] / q.fp32[2]).toBeLessThan(0.26);
    expect(q['llm.int8'][2]).toBe(q.int8[2] + q.fp16[2]);
    const scan = (await value('scan')) as Record<string, number | string>[];
    // 4 layers x (q/k/v, o, gate/up, down) and the head, each input scanned once.
    expect(scan).toHaveLength(17);
    expect(scan[0]['input of']).toBe('L0 q, L0 k, L0 v');
    expect(scan.at(-1)!['input of']).toBe('head');
    for (const r of scan) {
      expect(r['largest |x|'] as number).toBeGreaterThanOrEqual(r['median of the column maxima'] as number);
      expect((r['dims with |x| >= 6'] as number) > 0).toBe((r['largest |x|'] as number) >= 6);
    }
    const said = markdownOf(outputsOf('const outlierSites = '));
    const n = scan.filter((r) => (r['dims with |x| >= 6'] as number) > 0).length;
    expect(said).toContain(`${n} of 17`);
  });

  it('takes the time of LLM.int8() apart: the scan, the int8 passes, the decomposition, against fp32', async () => {
    const p = (await value('{ pieces, outliersAt }')) as { pieces: Record<string, Record<string, Timing>>; outliersAt: Record<string, number> };
    expect(Object.keys(p.pieces)).toEqual(['16', '256']);
    for (const tokens of ['16', '256']) {
      expect(Object.keys(p.pieces[tokens])).toEqual(['fp32', 'int8', 'scan', 'none', 'paper', 'bitsandbytes']);
      for (const t of Object.values(p.pieces[tokens])) expectTiming(t, 15);
    }
    expect(p.outliersAt['256']).toBe(6);
    expect(p.outliersAt['16']).toBeGreaterThan(0);
    const text = markdownOf(outputsOf('const BATCHES ='));
    const ratio = (t: string, piece: string) => p.pieces[t][piece].medianMs / p.pieces[t].fp32.medianMs;
    expect(text).toContain(`LLM.int8() with the paper's formula took **${ratio('16', 'paper').toFixed(2)}x (`);
    expect(text).toContain(`the scan alone took ${p.pieces['256'].scan.medianMs.toPrecision(3)} ms (IQR`);
    const bars = tracesOf(figure('Time of each piece relative to the fp32 product (medians)'));
    expect(bars.map((b) => b.name)).toEqual(['16 tokens', '256 tokens']);
    expect(bars[1].y).toEqual(['fp32', 'int8', 'scan', 'none', 'paper', 'bitsandbytes'].map((k) => ratio('256', k)));
    expect(await value('Object.values(swapLayers).every((l) => l.disposed)')).toBe(true);
  });

  it('the absmax exercise names each slip (the 127, absmax itself, max without abs, no rounding, truncation), then passes', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'absmax')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'scale s of row 1', ok: false, text: expect.stringContaining('NaN') })]);

    const attempt = async (scale: string, code: string) => {
      await run(`function absmaxRow(row: readonly number[]): { scale: number; q: number[] } {\n  const a = Math.max(...row.map(Math.abs));\n  const s = ${scale};\n  return { scale: s, q: row.map((x) => ${code}) };\n}`);
      return feedbackOf(await run(checkCell.source));
    };

    const forgot127 = await attempt('1 / a', 'Math.round(s * x)');
    expect(forgot127).toHaveLength(1);
    expect(forgot127[0]).toMatchObject({ ok: false });
    expect(forgot127[0].text).toContain('127x too small');
    expect(forgot127[0].text).toContain('the 127');

    const absmaxItself = await attempt('a', 'Math.round(s * x)');
    expect(absmaxItself[0].text).toContain('slip on absmax itself');

    const noAbs = await attempt('127 / Math.max(...row)', 'Math.round(s * x)');
    expect(noAbs[0].text).toContain('max(x) is not max|x|');

    const stepNotScale = await attempt('a / 127', 'Math.round(x / s)');
    expect(stepNotScale[0].text).toContain('max|x| / 127 is the step');

    const unrounded = await attempt('127 / a', 's * x');
    expect(unrounded.map((f) => [f.check, f.ok])).toEqual([['scale s of row 1', true], ['codes of row 1', false]]);
    expect(unrounded[1].text).toContain('not integers');

    const truncated = await attempt('127 / a', 'Math.trunc(s * x)');
    expect(truncated[1].text).toContain('truncated toward zero');

    const right = await attempt('127 / a', 'Math.round(s * x)');
    expect(right.map((f) => [f.check, f.ok])).toEqual([
      ['scale s of row 1', true], ['codes of row 1', true], ['scale s of row 2', true], ['codes of row 2', true], ['feedback', true],
    ]);
    expect(right[4].text).toContain('Both rows match the engine');
  }, 120_000);

  it('the threshold exercise says too high or too low with the share kept in fp16, then passes', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'threshold')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'feedback', ok: false, text: expect.stringContaining('Set `myThreshold`') })]);

    // The answer, found as the check finds it: the fewest of the largest columns that bring the error to the target.
    await run(`const __maxima = [...gradedCols.absmax].sort((a, b) => b - a);
let __best = 0;
while (!(await errorAt(__best === 0 ? Infinity : __maxima[__best - 1])).meetsTarget) __best++;`);
    const { best, maxima } = (await value('{ best: __best, maxima: __maxima.slice(0, __best + 2) }')) as { best: number; maxima: number[] };
    expect(best).toBeGreaterThan(0);
    expect(best).toBeLessThan(10);

    const attempt = async (t: number) => {
      await run(`const myThreshold = ${t};`);
      return feedbackOf(await run(checkCell.source));
    };

    const tooHigh = await attempt(maxima[best - 1] + 1e-3);
    expect(tooHigh).toHaveLength(1);
    expect(tooHigh[0]).toMatchObject({ ok: false });
    expect(tooHigh[0].text).toContain('**Too high.**');
    expect(tooHigh[0].text).toContain(`${best - 1} dimension`);
    expect(tooHigh[0].text).toMatch(/of X's values\) stay in fp16 and the error is [\d.]+%, above the target 1\.40%/);

    const paperDefault = await attempt(6);
    expect(paperDefault[0]).toMatchObject({ ok: false });
    expect(paperDefault[0].text).toContain('**Too low.**');
    expect(paperDefault[0].text).toMatch(/but \d+ dimensions \([\d.]+% of X's values\) stay in fp16/);

    const right = await attempt((maxima[best - 1] + maxima[best]) / 2);
    expect(right).toHaveLength(1);
    expect(right[0]).toMatchObject({ ok: true });
    expect(right[0].text).toContain(`${best} dimension`);
    expect(right[0].text).toContain("the paper's 6 keeps");

    // A threshold typed from the table of maxima, as shown, catches its column.
    const shown = displays(ran.find((r) => r.source.includes('const graded ='))!.outputs).map((m) => String(dataOf(m)['text/plain']))[0];
    const shownMax = Number(shown.split('\n').find((l) => new RegExp(`^\\s*${best}\\s`).test(l))!.trim().split(/\s+/)[2]);
    expect(shownMax).toBeLessThanOrEqual(maxima[best - 1]);
    expect(shownMax).toBeGreaterThan(maxima[best - 1] - 1e-4);
    const typed = await attempt(shownMax);
    expect(typed[0]).toMatchObject({ ok: true });
    expect(typed[0].text).toContain(`to ${shown.split('\n').find((l) => new RegExp(`^\\s*${best}\\s`).test(l))!.trim().split(/\s+/)[2]} gives this same split`);
    // The two tries are labelled in words, not with the result's field names.
    const tries = displays(ran.find((r) => r.source.includes('const graded ='))!.outputs).map((m) => String(dataOf(m)['text/plain']))[1];
    expect(tries).toContain('meets the target');
    expect(tries).not.toMatch(/meetsTarget|fp16Share|true|false/);
  }, 120_000);

  it('the LLM.int8() exercise names each slip (> for >=, no abs, the step from all values, a missing part, raw codes, truncation), then passes', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'llmint8')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'feedback', ok: false, text: expect.stringContaining('not finite numbers') })]);
    expect(await value('{ dims: exParts.outlierDims, agree: exRulesAgree }')).toEqual({ dims: [11, 19, 30, 51], agree: true });

    const attempt = async (edits: [string, string][] = []) => {
      let code = LLM_INT8_SOLUTION;
      for (const [from, to] of edits) {
        expect(code).toContain(from);
        code = code.replace(from, to);
      }
      await run(code);
      return feedbackOf(await run(checkCell.source));
    };
    const slip = async (edits: [string, string][], says: string) => {
      const f = await attempt(edits);
      expect(f).toHaveLength(1);
      expect(f[0]).toMatchObject({ ok: false });
      expect(f[0].text).toContain(says);
    };
    await slip([['Math.abs(row[k]) >= threshold', 'Math.abs(row[k]) > threshold']], 'compare with `>=`, not `>`');
    await slip([['Math.abs(row[k]) >= threshold', 'row[k] >= threshold']], 'not x.');
    await slip([['if (!outlier[k]) absmax', 'absmax']], "naive int8's step");
    await slip([['if (!outlier[k]) absmax', 'absmax'], ['outlier[k] ? 0 : Math.round(v / step)', 'Math.round(v / step)']], 'counts the outlier dimensions twice');
    await slip([['for (let k = 0; k < K; k++) if (outlier[k]) y += row[k] * wCodes[k][j] * ws;', '']], 'only the int8 part');
    await slip([['y += row[k] * wCodes[k][j] * ws;', 'y += row[k] * wCodes[k][j];']], "raw codes");
    await slip([['Math.round(v / step)', 'Math.trunc(v / step)']], 'truncated toward zero');
    await slip([['let y = acc * step * ws;', 'let y = acc / (step * ws);']], 'so multiply');
    // A slip the check has no name for gets the steps to check and the tokens furthest off.
    await slip([['const step = absmax / 127;', 'const step = absmax / 128;']], 'the tokens furthest off are');

    const right = await attempt();
    expect(right).toHaveLength(1);
    expect(right[0]).toMatchObject({ ok: true });
    expect(right[0].text).toContain('Dimensions 11, 19, 30, 51 went to fp16');
    // The same decomposition written with the scale s = 127 / max|x| passes too.
    const withScale = await attempt([['Math.round(v / step)', 'Math.round(v * (127 / absmax))']]);
    expect(withScale[0]).toMatchObject({ ok: true });
  }, 120_000);
});
