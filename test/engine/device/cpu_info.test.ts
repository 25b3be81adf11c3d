/** cpuInfo reads the host from the OS: the last-level cache is what a bandwidth measurement must exceed. */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuInfo } from '../../../engine/device/cpu_info.ts';

describe('cpuInfo', () => {
  it('lastLevelCacheBytes: the largest data or unified cache of cpu0 in bytes, or null where sysfs says nothing', () => {
    const { lastLevelCacheBytes } = cpuInfo();
    const dir = '/sys/devices/system/cpu/cpu0/cache';
    if (!existsSync(`${dir}/index0/size`)) {
      expect(lastLevelCacheBytes).toBeNull();
      return;
    }
    // Every cache level sysfs lists, in KiB, as lscpu reads them: the answer is the largest, and larger than L1.
    const kib = [0, 1, 2, 3, 4]
      .filter((i) => existsSync(`${dir}/index${i}/size`) && readFileSync(`${dir}/index${i}/type`, 'utf8').trim() !== 'Instruction')
      .map((i) => readFileSync(`${dir}/index${i}/size`, 'utf8').trim())
      .filter((s) => s.endsWith('K'))
      .map((s) => Number(s.slice(0, -1)));
    expect(kib.length).toBeGreaterThan(0);
    expect(lastLevelCacheBytes).toBe(Math.max(...kib) * 1024);
    expect(lastLevelCacheBytes).toBeGreaterThan(Math.min(...kib) * 1024);
  });
});
