/** Lesson 01 end to end through the real kernel: every code cell in order, no errors, its plots, and both exercises' feedback. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lessonRun, PLOTLY, displays, updates, dataOf, plotTitle, tracesOf, markdownOf, feedbackOf } from './lesson_run.ts';

describe('lesson 01 (numerical precision) through the kernel', () => {
  const { cells, ran, client, run, value, figure, outputsOf, runAll } = lessonRun('lessons/01-precision.md');

  beforeAll(() => client.start(), 60_000);
  afterAll(() => client.stop(), 30_000);

  it('runs every code cell of the lesson in order without an error', () => runAll(), 300_000);

  it('draws the bit layouts from the dtype layer and decodes values with the formula', () => {
    const traces = tracesOf(figure('Bit layouts: sign, exponent, fraction'));
    expect(traces.map((t) => [t.name, t.y, t.x])).toEqual([
      ['sign', ['fp32', 'fp16', 'bf16'], [1, 1, 1]],
      ['exponent', ['fp32', 'fp16', 'bf16'], [8, 5, 8]],
      ['fraction', ['fp32', 'fp16', 'bf16'], [23, 10, 7]],
    ]);
    const html = displays(ran[0].outputs).map((m) => String(dataOf(m)['text/html'] ?? '')).join('');
    expect(html).toContain('0 | 01111 | 0000000000');   // 1.0 in fp16
    expect(html).toContain('1 | 10000 | 0100000000');   // -2.5 in fp16
    expect(markdownOf(ran[0].outputs)).toContain('every row to exactly the value the engine stores');
  });

  it('plots ULP against magnitude for the three formats, each ending at its largest value', async () => {
    const full = tracesOf(figure('Spacing between neighbouring values (ULP) against magnitude'));
    expect(full.map((t) => t.name)).toEqual(['fp32', 'fp16', 'bf16']);
    for (const t of full) expect(t.y).toHaveLength(600);
    const fp16 = full[1];
    expect(fp16.x!.at(-1)).toBe(65504);
    expect(fp16.y![0]).toBe(2 ** -24);   // the subnormal spacing
    const zoom = tracesOf(figure('Zoomed in: the gap doubles at every power of two'));
    const zoom16 = zoom.find((t) => t.name === 'fp16')!;
    // Past 65504 fp16 values round to inf: the line has gaps (null) there, and only there.
    const past = zoom16.x!.map((x, i) => [x as number, zoom16.y![i]] as const).filter(([x]) => x >= 65520);
    expect(past.length).toBeGreaterThan(0);
    expect(past.every(([, y]) => y === null)).toBe(true);
    const f = (await value('{ fp16: fact.fp16.maxFinite, bf16: fact.bf16.maxFinite, u16: fact.fp16.unitRoundoff }')) as Record<string, number>;
    expect(f).toEqual({ fp16: 65504, bf16: 3.3895313892515355e38, u16: 2 ** -11 });
    const said = markdownOf(outputsOf('powersOf4'));
    expect(said).toContain('the exponent bits set the range, the fraction bits set the precision');
    expect(said).toContain('fp16 has 10 fraction bits instead of 23: its epsilon is 8192x');
    expect(said).toContain('the lost precision is the 13 missing fraction bits');
  });

  it("reproduces the lecture's 10^6 -> inf in fp16, bf16 keeping it but for 3.4e38, and underflow to 0", () => {
    const out = outputsOf('overflowTable');
    const text = displays(out).map((m) => String(dataOf(m)['text/plain'] ?? '')).join('\n');
    expect(text).toMatch(/torch\.tensor\(10\*\*6, dtype=torch\.float16\)\s+roundToDtype\('fp16', 1e6\)\s+Infinity/);
    expect(text).toMatch(/torch\.tensor\(10\*\*6, dtype=torch\.bfloat16\)\s+roundToDtype\('bf16', 1e6\)\s+999424/);
    const said = markdownOf(out);
    expect(said).toContain('anything from 65520 up overflows');
    expect(said).toContain('In bf16 3 of these 4 stay finite');
    expect(said).toContain("3.4e+38 overflows bf16 too: it lies past bf16's largest value, 3.38953e+38");
    // Rounding below half the smallest subnormal, which is not the hardware's flush-to-zero mode.
    expect(said).toContain('1e-8 and 1e-40 **underflow to 0** in fp16');
    expect(said).toContain('not *flush to zero*');
    expect(said).toContain('1e-7 is stored as 1.192e-7');
    expect(markdownOf(outputsOf('arithmeticOverflow()'))).toContain('fp16 turns **6 of 6**');
  });

  it('draws the rounding error densities, bounded by u', async () => {
    const traces = tracesOf(figure('Relative rounding error (fl(x) - x) / x of 100,000 values'));
    expect(traces.map((t) => t.name)).toEqual(['fp16', 'bf16', '±u fp16', '±u bf16']);
    for (const t of traces.slice(0, 2)) expect((t.y as number[]).some((v) => v > 0)).toBe(true);
    const maxOverU = (await value('rounding.formats.map((s) => s.maxOverU)')) as number[];
    for (const m of maxOverU) expect(m).toBeLessThanOrEqual(1);
  });

  it('follows the long sum live, then shows fp16 stalling at 2048 and bf16 at 256', async () => {
    const all = ran.flatMap((r) => r.outputs);
    const live = displays(all).find((m) => (m.content.transient as { display_id?: string } | undefined)?.display_id && dataOf(m)[PLOTLY] && /running sum/.test(plotTitle(dataOf(m))))!;
    expect(live).toBeDefined();
    const id = (live.content.transient as { display_id: string }).display_id;
    const ups = updates(all).filter((u) => (u.content.transient as { display_id: string }).display_id === id);
    expect(ups.length).toBeGreaterThan(1);
    const final = tracesOf(dataOf(ups.at(-1)!));
    expect(final.map((t) => t.name)).toEqual(['fp16 sum (%)', 'bf16 sum (%)', 'fp16 values, fp32 sum (%)']);
    for (const t of final) expect(t.y!.length).toBeGreaterThan(10);
    expect(String(dataOf(ups.at(-1)!)['text/plain'])).toMatch(/\(closed, /);

    const sums = (await value('{ sums, sameAsLoop, finals: acc.methods.map((m) => [m.method, m.final]) }')) as { sums: Record<string, number>; sameAsLoop: boolean; finals: [string, number][] };
    expect(sums.sums.fp16).toBe(2048);
    expect(sums.sums.bf16).toBe(256);
    expect(Math.abs(sums.sums.mixed - sums.sums.exact) / sums.sums.exact).toBeLessThan(1e-4);
    expect(sums.sameAsLoop).toBe(true);
    expect(Object.fromEntries(sums.finals)).toMatchObject({ fp16: 2048, bf16: 256 });

    const running = tracesOf(figure('The running sum'));
    expect(running.map((t) => t.name)).toContain('exact (float64)');
    const errors = tracesOf(figure('Relative error of the running sum'));
    expect(errors).toHaveLength(4);
    for (const t of errors) expect(t.y).toHaveLength(1000);
    const said = markdownOf(outputsOf('accumulationError('));
    expect(said).toContain('The engine agrees with the loop above to the bit.');
    // The mixed sum's error, split: the inputs' rounding to fp16 against the fp32 accumulator's own rounding.
    const parts = (await value('{ inputRoundingError, accumulatorError }')) as { inputRoundingError: number; accumulatorError: number };
    expect(parts.inputRoundingError).toBeGreaterThan(1e-7);
    expect(parts.inputRoundingError).toBeLessThan(2e-6);
    expect(parts.accumulatorError).toBeGreaterThan(3 * parts.inputRoundingError);
    expect(parts.accumulatorError).toBeLessThan(2e-5);
    expect(said).toContain("the fp32 accumulator's own rounding adds");
    expect(said).toContain('the larger part');
    expect(said).toContain('an fp32 ULP is 0.00390625 (2^-8)');
  });

  it('measures GEMM error against K on the device: flat with fp32 accumulation, growing with an fp16 accumulator', async () => {
    const fig = figure(/^Largest relative error of C = A B against float64, on /);
    const traces = tracesOf(fig);
    expect(traces).toHaveLength(6);
    for (const t of traces.slice(0, 4)) expect(t.y).toHaveLength(8);
    const v = (await value('{ kind: dev.kind, dev16: growth(dev16), sim16: growth(sim16), matchesSimulation }')) as { kind: string; dev16: number; sim16: number; matchesSimulation: boolean };
    expect(v.sim16).toBeGreaterThan(10);
    const said = markdownOf(outputsOf('gemmError('));
    if (v.kind === 'cpu') {
      // The CPU backend computes fp16 in fp32 and rounds once (its notes say so): the error does not grow with K.
      expect(v.dev16).toBeLessThan(2);
      expect(said).toContain('It stays near u');
      // Against the fp16-rounded inputs only the result's rounding is left (<= u); against the fp32 inputs, more.
      const m = (await value("{ compute: maxOf(dev16, 'maxRelCompute'), total: maxOf(dev16, 'maxRel') }")) as { compute: number; total: number };
      expect(m.compute).toBeLessThanOrEqual(2 ** -11);
      expect(m.total).toBeGreaterThan(m.compute);
      expect(said).toContain('within u: the single rounding of the result');
    } else if (v.matchesSimulation) {
      expect(said).toContain("equal the simulated fp16 accumulator's at every K");
    }
    expect(said).toMatch(/An fp16 accumulator\*\* grows \*\*\d+x\*\*/);
  });

  it('measures weight memory with the tracker: fp16 and bf16 exactly half of fp32, NF4 in blocks of 64 with and without double quantization', async () => {
    const rows = (await value('mem.rows.map((r) => [r.dtype, r.formulaBytes, r.measuredBytes, r.released])')) as [string, number, number, boolean][];
    const params = 1024 * 1024;
    expect(rows.filter(([d]) => ['fp32', 'fp16', 'bf16'].includes(d))).toEqual([
      ['fp32', params * 4, params * 4, true],
      ['fp16', params * 2, params * 2, true],
      ['bf16', params * 2, params * 2, true],
    ]);
    const traces = tracesOf(figure('Memory of one 1024 x 1024 weight'));
    expect(traces[0].x).toEqual(['fp32', 'fp16', 'bf16', 'int8', 'nf4', 'nf4, double quantization']);
    expect(traces.map((t) => t.y)).toContainEqual([4, 2, 2, 1, 0.5, 0.5]);
    // Scales: int8 one fp32 per column; nf4 one fp32 per block of 64; double quantization one byte per block and
    // one fp32 per 256 blocks (16384 blocks here).
    const blocks = params / 64;
    const scales = (await value('memRows.map((r) => r.scaleMeasuredBytes)')) as number[];
    expect(scales).toEqual([0, 0, 0, 4 * 1024, 4 * blocks, blocks + 4 * (blocks / 256)]);
    const bits = (await value('memRows.map(bitsWithScales)')) as number[];
    expect(bits.slice(4)).toEqual([4.5, 4 + 8 / 64 + 32 / (64 * 256)]);
    const said = markdownOf(outputsOf('weightMemory('));
    expect(said).toContain('exactly as the formula says');
    expect(said).toContain('the tracker counted exactly the predicted scale bytes in every row');
    expect(said).toContain('**4.500 bits** per weight, 3.67 GiB for 7B');
    expect(said).toContain('**4.127 bits** per weight, 3.36 GiB for 7B');
    expect(said).toContain('5 bits (4.07 GiB)');
    expect(said).toContain('from about 26.1 GiB to 13.0 GiB');
  });

  it('times MatMul per dtype and shows the device notes, with the truth about emulated fp16', async () => {
    const traces = tracesOf(figure(/^MatMul throughput per dtype on /));
    expect(traces[0].x).toEqual(['fp32', 'fp16', 'bf16']);
    for (const y of traces[0].y as number[]) expect(y).toBeGreaterThan(0);
    const out = outputsOf('matmulThroughput(');
    const said = markdownOf(out);
    const notes = (await value('dev.notes()')) as string[];
    for (const n of notes) expect(said).toContain(n);
    // Each timing is quoted with its spread, from at least 9 timed runs.
    const runs = (await value('speed.rows.map((r) => r.runs)')) as number[];
    for (const n of runs) expect(n).toBeGreaterThanOrEqual(9);
    expect(said).toMatch(/fp32 took [\d.]+ ms \(IQR [\d.]+-[\d.]+, \d+ runs\), fp16 [\d.]+ ms \(IQR/);
    expect(said).toMatch(/The two interquartile ranges (overlap|do not overlap)/);
    const kind = await value('dev.kind');
    if (kind === 'cpu') {
      expect(said).toContain('no fp16 *arithmetic*');
      expect(said).toContain('casts to fp32, multiplies, and casts back');
      expect(said).toMatch(/bf16, emulated too, ran at [\d.]+x fp32's speed \([\d.]+ ms \(IQR/);
    }
  });

  it('grounds which layers to quantize: the matmul share of parameters, softmax and normalization limits', async () => {
    const v = (await value('{ matmulShare, expLimit, firstInf: firstInf?.["activation rms"] ?? null }')) as { matmulShare: number; expLimit: number; firstInf: number | null };
    expect(v.matmulShare).toBeGreaterThan(0.95);
    expect(v.expLimit).toBeCloseTo(Math.log(65504), 12);
    expect(v.firstInf).toBe(5);   // 5^2 x 4096 squares > 65504
    const said = markdownOf(outputsOf('sequentialSum'));
    expect(said).toContain("is **inf** once the activations' rms reaches 5");
    // The fp16 sum's error is the same at every power-of-two rms, and grows with the length of the sum.
    const n = (await value("{ same: sameAtPowersOfTwo, rms: powerOfTwoRows.map((r) => r['activation rms']), byLength: lengthRows.map((r) => r['fp16 sum: relative error']) }")) as { same: boolean; rms: number[]; byLength: number[] };
    expect(n.same).toBe(true);
    expect(n.rms).toEqual([0.5, 1, 2, 4]);
    for (let i = 1; i < n.byLength.length; i++) expect(n.byLength[i]).toBeGreaterThan(n.byLength[i - 1]);
    expect(said).toContain('at rms 0.5, 1, 2, 4 alike');
    expect(said).toContain('what sets the error is the length of the sum');
    // The parameter share is counted; the paper's compute share is quoted, not measured, and the count says why it is a range.
    const layers = markdownOf(outputsOf('paramCount'));
    expect(layers).toContain('about 95% of the parameters and 65-85% of the computation');
    expect(layers).toContain("the paper's 65-85% is quoted, not measured here");
    const shares = (await value("flopRows.map((r) => r['projections share'])")) as number[];
    expect(shares[0]).toBeGreaterThan(shares[shares.length - 1]);
  });

  it('serves the built-in model in fp16 and bf16: the held-out loss barely moves, and the text says the measured numbers', async () => {
    const q = (await value('Object.fromEntries(Object.entries(quality).map(([f, q]) => [f, [q.nats, q.agreement ?? 1, q.weightBytes, q.tokens]]))')) as Record<string, [number, number, number, number]>;
    expect(Object.keys(q)).toEqual(['fp32', 'fp16', 'bf16']);
    const [fp32, fp16, bf16] = [q.fp32, q.fp16, q.bf16];
    // A trained model: well under the byte trigram's 2.06 nats per byte, far under uniform's ln 258 = 5.55.
    expect(fp32[0]).toBeGreaterThan(1);
    expect(fp32[0]).toBeLessThan(1.8);
    expect(fp32[3]).toBe(4096);
    expect(Math.abs(fp16[0] - fp32[0])).toBeLessThan(1e-3);
    expect(Math.abs(bf16[0] - fp32[0])).toBeLessThan(1e-2);
    expect(fp16[1]).toBeGreaterThan(0.99);
    expect(bf16[1]).toBeGreaterThan(0.97);
    expect(fp16[1]).toBeGreaterThanOrEqual(bf16[1]);
    // The projections' bytes as the tracker counts them: exactly half in 16 bits.
    expect(fp16[2] * 2).toBe(fp32[2]);
    expect(bf16[2]).toBe(fp16[2]);
    const said = markdownOf(outputsOf('const change = '));
    expect(said).toContain(`Against a held-out loss of ${fp32[0].toFixed(3)} nats per byte`);
    expect(said).toContain(`${(100 * fp16[1]).toFixed(2)}%** (fp16)`);
  });

  it("the largest-value exercise names each slip: the starter, the implicit 1, fp32's bias, the reserved exponent, a hard-coded answer, then passes", async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'largest')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'largest fp16 value (E = 5, m = 10)', ok: false, text: expect.stringContaining('NaN') })]);

    const attempt = async (body: string) => {
      await run(`function largestValue(E: number, m: number): number {\n  ${body}\n}`);
      return feedbackOf(await run(checkCell.source));
    };

    const noImplicitOne = await attempt('const bias = 2 ** (E - 1) - 1;\n  return (1 - 2 ** -m) * 2 ** (2 ** E - 2 - bias);');
    expect(noImplicitOne).toHaveLength(1);
    expect(noImplicitOne[0]).toMatchObject({ ok: false });
    expect(noImplicitOne[0].text).toMatch(/2(\.\d+)?x too small/);
    expect(noImplicitOne[0].text).toContain('the implicit leading 1');

    const fp32Bias = await attempt('return (2 - 2 ** -m) * 2 ** (2 ** E - 2 - 127);');
    expect(fp32Bias[0]).toMatchObject({ ok: false });
    expect(fp32Bias[0].text).toContain("127 is fp32's");

    const allOnes = await attempt('const bias = 2 ** (E - 1) - 1;\n  return (2 - 2 ** -m) * 2 ** (2 ** E - 1 - bias);');
    expect(allOnes[0]).toMatchObject({ ok: false });
    expect(allOnes[0].text).toMatch(/2x too large/);
    expect(allOnes[0].text).toContain('the all-ones field means infinity or NaN');

    const hardCoded = await attempt('return 65504;');
    expect(hardCoded.map((f) => f.ok)).toEqual([true, false]);
    expect(hardCoded[1].check).toBe('largest bf16 value (E = 8, m = 7)');

    const right = await attempt('const bias = 2 ** (E - 1) - 1;\n  return (2 - 2 ** -m) * 2 ** (2 ** E - 2 - bias);');
    expect(right.map((f) => [f.check, f.ok])).toEqual([
      ['largest fp16 value (E = 5, m = 10)', true],
      ['largest bf16 value (E = 8, m = 7)', true],
      ['largest fp32 value (E = 8, m = 23)', true],
    ]);
    expect(right[0].text).toContain('= 65504');
  }, 120_000);

  it('the stall exercise explains the ulp when off by 2x either way, then passes with the experiment', async () => {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === 'stall')!;
    const starter = feedbackOf(ran.find((r) => r.kind === 'check' && r.source === checkCell.source)!.outputs);
    expect(starter).toEqual([expect.objectContaining({ check: 'where the fp16 sum of 0.5s stops growing', ok: false, text: expect.stringContaining('NaN') })]);

    const predict = async (v: number) => {
      await run(`const stallAt = ${v};`);
      return feedbackOf(await run(checkCell.source));
    };

    const tooLarge = await predict(2048);
    expect(tooLarge).toHaveLength(1);
    expect(tooLarge[0]).toMatchObject({ ok: false });
    expect(tooLarge[0].text).toContain('2x too large');
    expect(tooLarge[0].text).toContain('2048 is where the sum of values in [0, 1) stopped');
    expect(tooLarge[0].text).toContain('At 1024 the gap to the next fp16 value is already 1');
    expect(tooLarge[0].text).toContain('*half* a gap');

    const tooSmall = await predict(512);
    expect(tooSmall[0].text).toContain('2x too small');
    expect(tooSmall[0].text).toContain('512 + 0.5 = 512.5 is itself an fp16 value');

    const right = await predict(1024);
    expect(right.map((f) => f.ok)).toEqual([true, true]);
    expect(right[0].text).toContain('= 1024');
    expect(right[1].text).toMatch(/2,048 additions of 0\.5 took the fp16 sum to 1024/);
  }, 120_000);
});
