/** The thread-settings benchmark: the session options each setting passes to onnxruntime, and how one is chosen. */
import { describe, expect, it } from 'vitest';
import { Device, Graph } from '../../engine/index.ts';
import { OrtBackend } from '../../engine/backends/ort.ts';
import { recommend, sessionOptions, SETTINGS, type ThreadRow } from '../../bench/threads.ts';

describe('thread settings', () => {
  it("map to onnxruntime session options; onnxruntime's own default is measured with its spinning", () => {
    expect(SETTINGS.map((s) => [s.name, sessionOptions(s)])).toEqual([
      ['onnxruntime default', { extra: { session: { intra_op: { allow_spinning: '1' } } } }],
      ['1 thread, spinning', { intraOpNumThreads: 1, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '1' } } } }],
      ['1 thread, no spinning', { intraOpNumThreads: 1, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } }],
      ['2 threads, spinning', { intraOpNumThreads: 2, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '1' } } } }],
      ['2 threads, no spinning', { intraOpNumThreads: 2, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } }],
    ]);
  });

  it('a device on a backend with those options computes what the default one does', async () => {
    const x = Array.from({ length: 3 * 64 }, (_, i) => (i % 7) - 3);
    const w = Array.from({ length: 64 * 5 }, (_, i) => (i % 5) - 2);
    const results = [];
    for (const s of SETTINGS) {
      const dev = new Device(`cpu (${s.name})`, new OrtBackend('cpu', sessionOptions(s)));
      const g = new Graph('mm');
      g.output(g.op('MatMul', [g.input('x', 'fp32', ['m', 64]), g.constant('w', dev.tensor(w, [64, 5]))])[0]);
      results.push((await dev.run(g, [dev.tensor(x, [3, 64])]))[0].toArray());
      await dev.dispose();
    }
    for (const r of results) expect(r).toEqual(results[0]);
  });

  it('recommends the lowest geometric mean of times relative to the default', () => {
    const row = (setting: string, work: 'gemv' | 'gemm', aloneUs: number, alternatedUs: number): ThreadRow => ({ setting, work, shape: '', aloneUs, alternatedUs, ratio: alternatedUs / aloneUs });
    const rows = [
      row('onnxruntime default', 'gemv', 100, 200), row('onnxruntime default', 'gemm', 1000, 2000),
      // Alone a little slower, alternated twice as fast: (1.1 * 0.5 * 1.1 * 0.5) ^ (1/4) = 0.74.
      row('2 threads, no spinning', 'gemv', 110, 100), row('2 threads, no spinning', 'gemm', 1100, 1000),
      row('1 thread, spinning', 'gemv', 150, 190), row('1 thread, spinning', 'gemm', 1900, 1900),
    ];
    const r = recommend(rows);
    expect(r.setting).toBe('2 threads, no spinning');
    expect([r.intraOpThreads, r.spinning]).toEqual([2, false]);
    expect(r.relativeToDefault).toBeCloseTo(Math.sqrt(1.1 * 0.5), 12);
    expect(r.why).toContain('gemv : alone 110 us (default 100), alternated 100 us (default 200)');
  });
});
