/** Lesson 02 end to end through the real kernel: every code cell in order, no errors, its measurements, and both exercises' feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, tracesOf, markdownOf, feedbackOf } from './lesson_run.ts';

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
    const speed = (await value('speed.map((s) => [s.shape, s.rows, s.format, s.ms])')) as [string, number, string, number][];
    expect(speed.map(([shape, rows, format]) => [shape, rows, format])).toEqual([['decode', 1, 'fp32'], ['decode', 1, 'int8'], ['prefill', 256, 'fp32'], ['prefill', 256, 'int8']]);
    for (const [, , , ms] of speed) expect(ms).toBeGreaterThan(0);
    expect(markdownOf(outputsOf('const speedOf'))).toMatch(/At the prefill shape int8 ran \*\*[\d.]+x\*\* as fast as fp32; at the decode shape \*\*[\d.]+x\*\*/);
    // The speed layers are freed once measured.
    expect(await value('Object.values(speedLayers).every((l) => l.disposed) && speedW.disposed')).toBe(true);
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
  });

  it('sweeps the threshold live and plots error against the share kept in fp16', async () => {
    const chart = liveChart(/^LLM\.int8\(\) error as the threshold goes down/);
    expect(chart.updates).toBeGreaterThan(1);
    expect(chart.traces.map((t) => t.name)).toEqual(["paper's formula, error (%)", 'bitsandbytes, error (%)']);
    const sweep = (await value('sweep.map((p) => [p.threshold, p.dims, p.paper, p.bitsandbytes])')) as [number | null, number, number, number][];
    expect(sweep).toHaveLength(19);
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
    expect(markdownOf(outputsOf('const distinct ='))).toMatch(/At threshold 6, \*\*0\.59%\*\* of the values in fp16 cut the error \*\*\d+x\*\*/);
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
    expect(markdownOf(outputsOf('const FORMATS:'))).toContain("agrees with every layer's own byte count");
    expect(tracesOf(figure('Bits per weight against error, by format'))[0].x).toHaveLength(7);
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
  }, 120_000);
});
