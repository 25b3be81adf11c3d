/**
 * The machine's arithmetic peaks: fp32 FMA and uint8 x int8 multiply-add (bench/peak.c, compiled for this CPU), or the
 * fp32 peak from the datasheet formula when no compiler exists. The int8 peak bounds what an int8 GEMM can gain over
 * fp32: 4x with VNNI (one vpdpbusd for four products a lane), 2x without it (vpmaddubsw and vpmaddwd, two multiplies
 * on the same two pipes as the FMA).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuInfo, derivedPeakGflops } from '../engine/index.ts';

export interface Peak {
  gflops: number;
  source: string;
  /** uint8 x int8 products summed in int32, 2 ops each; null when nothing could be compiled. */
  int8?: { gops: number; path: string } | null;
}

const here = dirname(fileURLToPath(import.meta.url));

/** The loop's binary, built once per source text (a changed peak.c is compiled again). */
function peakBinary(cacheDir: string): string {
  const src = join(here, 'peak.c');
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12);
  const bin = join(cacheDir, `peak-${hash}`);
  if (!existsSync(bin)) {
    mkdirSync(cacheDir, { recursive: true });
    execFileSync('cc', ['-O2', '-march=native', '-pthread', src, '-o', bin], { stdio: 'pipe' });
  }
  return bin;
}

/** Best of three runs of the loop on every core. */
function bestOf<T extends { seconds: number }>(bin: string, cores: number, mode: 'fp32' | 'int8', rate: (r: T) => number): T {
  let best: T | null = null;
  for (let i = 0; i < 3; i++) {
    const r = JSON.parse(execFileSync(bin, [String(cores), '200000000', mode], { encoding: 'utf8' })) as T;
    if (!best || rate(r) > rate(best)) best = r;
  }
  return best!;
}

export function arithmeticPeaks(cacheDir = join(here, '..', '.cache')): Peak {
  const cpu = cpuInfo();
  try {
    const bin = peakBinary(cacheDir);
    const f = bestOf<{ gflops: number; lanes: number; seconds: number }>(bin, cpu.cores, 'fp32', (r) => r.gflops);
    const i = bestOf<{ gops: number; path: string; seconds: number }>(bin, cpu.cores, 'int8', (r) => r.gops);
    return {
      gflops: f.gflops,
      source: `measured: ${f.lanes}-lane fp32 FMA loop (bench/peak.c) on ${cpu.cores} threads, best of 3`,
      int8: { gops: i.gops, path: i.path },
    };
  } catch (e) {
    const mhz = cpu.mhz || 3000;
    return {
      gflops: derivedPeakGflops({ ...cpu, mhz }),
      source: `derived: ${cpu.cores} cores x ${mhz} MHz${cpu.mhz ? '' : ' (clock unknown, assumed)'} x ${cpu.fmaLanes} lanes x 2 FMA units x 2 (no C compiler to measure: ${(e as Error).message.split('\n')[0]})`,
      int8: null,
    };
  }
}
