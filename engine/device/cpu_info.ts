/** What the host CPU is and can do: model, cores, SIMD features and clock, read from the OS. */
import os from 'node:os';
import { readFileSync } from 'node:fs';

export interface CpuInfo {
  model: string;
  /** Logical CPUs the OS gives this process. */
  cores: number;
  /** SIMD features relevant to GEMM kernels, as /proc/cpuinfo spells them. */
  simd: string[];
  /** Maximum clock in MHz if the OS says, else the current one. */
  mhz: number;
  /** fp32 lanes of the widest FMA unit (16 for AVX-512, 8 for AVX2+FMA, 4 for NEON). */
  fmaLanes: number;
  /** Bytes of the last-level cache one core sees (Linux sysfs), or null where the OS does not say. */
  lastLevelCacheBytes: number | null;
}

const SIMD = ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'avx_vnni', 'amx_tile', 'amx_bf16', 'amx_int8', 'asimd', 'sve'];

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The largest data or unified cache of cpu0, from sysfs ("32768K"): what a working set must exceed before its reads
 * come from memory rather than cache, as a bandwidth measurement needs.
 */
function lastLevelCacheBytes(): number | null {
  let best: number | null = null;
  for (let i = 0; i < 8; i++) {
    const dir = `/sys/devices/system/cpu/cpu0/cache/index${i}`;
    if (readText(`${dir}/type`).trim() === 'Instruction') continue;
    const m = /^(\d+)([KMG]?)$/.exec(readText(`${dir}/size`).trim());
    if (!m) continue;
    const bytes = Number(m[1]) * { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[m[2] as '' | 'K' | 'M' | 'G'];
    best = Math.max(best ?? 0, bytes);
  }
  return best;
}

export function cpuInfo(): CpuInfo {
  const cpus = os.cpus();
  const text = readText('/proc/cpuinfo');
  const flags = new Set((/^(flags|Features)\s*:\s*(.*)$/m.exec(text)?.[2] ?? '').split(/\s+/));
  const simd = SIMD.filter((f) => flags.has(f));
  const maxKHz = Number(readText('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq').trim());
  const mhz = maxKHz > 0 ? maxKHz / 1000 : (cpus[0]?.speed ?? 0);
  const fmaLanes = flags.has('avx512f') ? 16 : flags.has('fma') ? 8 : flags.has('asimd') ? 4 : 1;
  return { model: cpus[0]?.model?.trim() ?? 'unknown', cores: os.availableParallelism(), simd, mhz, fmaLanes, lastLevelCacheBytes: lastLevelCacheBytes() };
}

/**
 * Peak fp32 FLOP/s from the datasheet formula: cores x clock x lanes x 2 (multiply and add) x FMA units per core.
 * Two FMA units per core holds for the x86 cores of the last decade (Haswell on, Zen 2 on); an estimate, not a measurement.
 */
export function derivedPeakGflops(c: CpuInfo, fmaUnits = 2): number {
  return (c.cores * c.mhz * c.fmaLanes * 2 * fmaUnits) / 1000;
}
