/** Weight memory per dtype: the tracker's bytes equal params x bits / 8 exactly, on the cpu and reference devices. */
import { describe, expect, it } from 'vitest';
import { createDevice, OutOfMemoryError, weightMemory } from '../../../engine/index.ts';

describe.each(['cpu', 'reference'] as const)('weightMemory on %s', (kind) => {
  it('measures each format at exactly params x bits / 8, scales counted apart, and gives everything back', async () => {
    const dev = await createDevice(kind);
    const r = await weightMemory({ device: dev, k: 1024, n: 1024 });
    expect(r.rows.map((x) => [x.dtype, x.measuredBytes, x.scaleMeasuredBytes])).toEqual([
      ['fp32', 4 * 2 ** 20, 0],
      ['fp16', 2 * 2 ** 20, 0],
      ['bf16', 2 * 2 ** 20, 0],
      ['int8', 2 ** 20, 1024 * 4], // one fp32 scale per output column
      ['int4', 2 ** 19, (1024 / 32) * 1024 * 4], // one fp32 scale per block of 32 along k
      ['nf4', 2 ** 19, (1024 / 32) * 1024 * 4],
    ]);
    for (const x of r.rows) {
      expect(x.measuredBytes).toBe(x.formulaBytes);
      expect(x.scaleMeasuredBytes).toBe(x.scaleFormulaBytes);
      expect(x.released).toBe(true);
    }
    expect(r.rows.map((x) => x.effectiveBitsPerParam)).toEqual([32, 16, 16, 8 + 32 / 1024, 5, 5]);
    expect(dev.memory.live).toBe(0);
    expect(dev.memory.peak).toBe(4 * 2 ** 20);
  });
});

describe('weightMemory limits', () => {
  it('a budget too small for fp32 refuses it with OutOfMemoryError and leaves the tracker as it was', async () => {
    const dev = await createDevice('reference', { budget: 3 * 2 ** 20 });
    await expect(weightMemory({ device: dev, dtypes: ['fp32'] })).rejects.toBeInstanceOf(OutOfMemoryError);
    expect(dev.memory.live).toBe(0);
    const r = await weightMemory({ device: dev, dtypes: ['fp16'] });
    expect(r.rows[0].measuredBytes).toBe(2 * 2 ** 20);
  });

  it('rejects an odd n for 4-bit formats and an unknown dtype', async () => {
    const dev = await createDevice('reference');
    await expect(weightMemory({ device: dev, k: 4, n: 3, dtypes: ['nf4'] })).rejects.toThrow(/must be even/);
    await expect(weightMemory({ device: dev, dtypes: ['fp8' as never] })).rejects.toThrow(/unknown dtype/);
    expect(dev.memory.live).toBe(0);
  });
});
