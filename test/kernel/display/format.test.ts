/** Byte formatting for learners: binary units everywhere, as the memory tracker counts. */
import { describe, expect, it } from 'vitest';
import { binaryTicks, formatBytes, formatBytesShort } from '../../../kernel/display/format.ts';

const MiB = 2 ** 20;

describe('byte formatting', () => {
  it('formatBytes and formatBytesShort use 1024, never 1000', () => {
    expect(formatBytes(64 * MiB)).toBe('64.0 MiB');
    expect(formatBytes(1000)).toBe('1000 B');
    expect(formatBytesShort(64 * MiB)).toBe('64 MiB');
    expect(formatBytesShort(67_108_864)).toBe('64 MiB'); // what Plotly's SI ticks call 67M
    expect(formatBytesShort(8.5 * MiB)).toBe('8.5 MiB');
    expect(formatBytesShort(1.25 * 1024)).toBe('1.25 KiB');
    expect(formatBytesShort(3 * 2 ** 30)).toBe('3 GiB');
    expect(formatBytesShort(0)).toBe('0 B');
  });

  it('binaryTicks: a power of two apart, from 0 past the maximum, at most 6 intervals', () => {
    // The lesson's weights: 64 MiB fp32, 32 MiB fp16, 8.5 MiB 4-bit, together 104.5 MiB.
    expect(binaryTicks(104.5 * MiB)).toEqual({ tickvals: [0, 32, 64, 96, 128].map((m) => m * MiB), ticktext: ['0 B', '32 MiB', '64 MiB', '96 MiB', '128 MiB'] });
    expect(binaryTicks(1500)!.ticktext).toEqual(['0 B', '256 B', '512 B', '768 B', '1 KiB', '1.25 KiB', '1.5 KiB']);
    expect(binaryTicks(3)!.tickvals).toEqual([0, 1, 2, 3]);
    for (const max of [1, 7, 1000, 5e6, 3.3e9, 7e12]) {
      const { tickvals } = binaryTicks(max)!;
      const step = tickvals[1] - tickvals[0];
      expect(Math.log2(step) % 1, String(max)).toBe(0);
      expect(tickvals.at(-1)!).toBeGreaterThanOrEqual(max);
      expect(tickvals.length - 1).toBeLessThanOrEqual(6);
      expect(tickvals.at(-2)!).toBeLessThan(max);
    }
    expect(binaryTicks(0)).toBeNull();
    expect(binaryTicks(NaN)).toBeNull();
  });
});
