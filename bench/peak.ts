/** The machine's fp32 peak: measured by an FMA loop compiled for this CPU, or derived from the datasheet formula when no compiler exists. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo, derivedPeakGflops } from '../engine/index.ts';

export interface Peak {
  gflops: number;
  source: string;
}

const here = dirname(fileURLToPath(import.meta.url));

export function fp32Peak(cacheDir = join(here, '..', '.cache')): Peak {
  const cpu = cpuInfo();
  const bin = join(cacheDir, 'peak-fma');
  try {
    if (!existsSync(bin)) {
      mkdirSync(cacheDir, { recursive: true });
      execFileSync('cc', ['-O2', '-march=native', '-pthread', join(here, 'peak.c'), '-o', bin], { stdio: 'pipe' });
    }
    let best = { gflops: 0, lanes: 0 };
    for (let i = 0; i < 3; i++) {
      const r = JSON.parse(execFileSync(bin, [String(cpu.cores), '200000000'], { encoding: 'utf8' })) as { gflops: number; lanes: number };
      if (r.gflops > best.gflops) best = r;
    }
    return { gflops: best.gflops, source: `measured: ${best.lanes}-lane fp32 FMA loop (bench/peak.c) on ${cpu.cores} threads, best of 3` };
  } catch (e) {
    const mhz = cpu.mhz || 3000;
    return {
      gflops: derivedPeakGflops({ ...cpu, mhz }),
      source: `derived: ${cpu.cores} cores x ${mhz} MHz${cpu.mhz ? '' : ' (clock unknown, assumed)'} x ${cpu.fmaLanes} lanes x 2 FMA units x 2 (no C compiler to measure: ${(e as Error).message.split('\n')[0]})`,
    };
  }
}
