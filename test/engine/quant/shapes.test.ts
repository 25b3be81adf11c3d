/**
 * Quantized products take every batch size in one graph: the per-row zero point is a scalar expanded to the run's
 * rows, so a batch of m rows runs the session a batch of one did, and each row comes out exactly as it does alone.
 * Exact: X's codes, row scales and the int32 accumulator (integers, and one fp32 division per row); the outputs
 * within 1e-6 of their largest magnitude (a GEMV and a GEMM kernel may sum in different orders).
 */
import { describe, expect, it } from 'vitest';
import { findOutlierDims, llmInt8MatmulParts, quantizeLlmInt8Weight, quantizeWeightVectorwise, vectorwiseMatmulParts, type Device, type Tensor } from '../../../engine/index.ts';
import { device, KINDS } from './fixtures.ts';

const K = 32;
const N = 12;
const wv = Array.from({ length: K * N }, (_, i) => Math.cos(i * 0.37) * 0.3);
/** Row r of a batch: the same values whatever the batch, with |x| = 8 at dims 3 and 17 (outliers at threshold 6). */
const row = (r: number) => Array.from({ length: K }, (_, k) => (k === 3 || k === 17 ? (r % 2 ? -8 : 8) : Math.sin(r * 1.3 + k * 0.7)));
const batch = (dev: Device, rows: number[]) => dev.tensor(rows.flatMap(row), [rows.length, K]);
const rowOf = (t: Tensor, r: number) => t.toArray().slice(r * t.shape[1], (r + 1) * t.shape[1]);
const sessions = (dev: Device) => dev.stats().sessionsCreated;

function closeRows(got: number[], want: number[]): void {
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  got.forEach((v, i) => expect(Math.abs(v - want[i])).toBeLessThanOrEqual(1e-6 * scale));
}

describe.each(KINDS)('quantized products at every batch size on %s', (kind) => {
  it('vector-wise int8: one session for batches of 1, 4 and 9 rows, each row as computed alone', async () => {
    const dev = await device(kind);
    const w = await quantizeWeightVectorwise(dev.tensor(wv, [K, N], 'fp32', { tag: 'weights' }));
    const alone = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8].map((r) => vectorwiseMatmulParts(batch(dev, [r]), w)));
    const before = sessions(dev);
    for (const m of [4, 9]) {
      const rows = [...Array(m).keys()];
      const p = await vectorwiseMatmulParts(batch(dev, rows), w);
      for (const r of rows) {
        expect(rowOf(p.xq, r)).toEqual(alone[r].xq.toArray());
        expect(rowOf(p.acc, r)).toEqual(alone[r].acc.toArray());
        expect(rowOf(p.xScale, r)).toEqual(alone[r].xScale.toArray());
        closeRows(rowOf(p.y, r), alone[r].y.toArray());
      }
    }
    expect(sessions(dev) - before).toBe(0);
  });

  for (const variant of ['paper', 'bitsandbytes'] as const) {
    it(`LLM.int8 (${variant}): the same outlier bucket at 2, 5 and 11 rows is one session`, async () => {
      const dev = await device(kind);
      const w = await quantizeLlmInt8Weight(dev.tensor(wv, [K, N], 'fp32', { tag: 'weights' }), { variant });
      const alone = await Promise.all([0, 1, 2, 3, 4].map((r) => llmInt8MatmulParts(batch(dev, [r]), w)));
      const before = sessions(dev);
      for (const m of [2, 5, 11]) {
        const rows = [...Array(m).keys()];
        const p = await llmInt8MatmulParts(batch(dev, rows), w);
        expect(p.outlierDims).toEqual([3, 17]);
        for (const r of rows.slice(0, 5)) {
          expect(rowOf(p.xq, r)).toEqual(alone[r].xq.toArray());
          expect(rowOf(p.acc, r)).toEqual(alone[r].acc.toArray());
          expect(rowOf(p.xScale, r)).toEqual(alone[r].xScale.toArray());
          closeRows(rowOf(p.y, r), alone[r].y.toArray());
        }
      }
      expect(sessions(dev) - before).toBe(0);
    });
  }

  it('the device outlier scan: one session for any number of rows', async () => {
    const dev = await device(kind);
    await findOutlierDims(batch(dev, [0]), 6, { on: 'device' });
    const before = sessions(dev);
    for (const m of [2, 7]) expect((await findOutlierDims(batch(dev, [...Array(m).keys()]), 6, { on: 'device' })).dims).toEqual([3, 17]);
    expect(sessions(dev) - before).toBe(0);
  });
});
