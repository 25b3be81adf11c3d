/**
 * The GPU check, run from the packed bundle on a machine with a GPU: the device, the op suite against the
 * reference backend, and GEMM throughput per format, all on the WebGPU provider, written as one JSON file.
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { adapterInfo, cpuInfo, createDevice, webgpuUnavailable } from '../engine/index.ts';
import { CASES, runCase, type CaseResult } from './op_cases.ts';
import { benchGemm, SHAPES, type GemmResult } from './gemm.ts';
import { arithmeticPeaks } from './peak.ts';

const log = (s: string) => process.stderr.write(`${s}\n`);

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { out: { type: 'string', default: 'gpu-check-result.json' }, quick: { type: 'boolean' } } });
  const started = Date.now();
  const adapter = adapterInfo();
  const why = await webgpuUnavailable();
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    node: process.versions.node,
    cpu: cpuInfo(),
    adapter,
    env: { VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? null, LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH ?? null },
    webgpu: why === null ? { available: true } : { available: false, reason: why },
  };
  const save = () => writeFileSync(values.out!, JSON.stringify(result, null, 2) + '\n');
  // The host's CPU first: its int8 and 4-bit targets depend on VNNI and on the cores, which this machine may have.
  result.cpu = { ...(result.cpu as object), ...(await cpuTargets()) };
  save();
  log(`adapter: ${adapter ? `${adapter.name} (${adapter.vendor}, ${adapter.backend}${adapter.software ? ', software' : ''})` : 'none found'}`);
  if (why !== null) {
    log(`webgpu unavailable: ${why}`);
    save();
    return 1;
  }
  const dev = await createDevice('webgpu');
  const ref = await createDevice('reference');
  const cases: CaseResult[] = [];
  for (const c of CASES) {
    const r = await runCase(c, dev, ref).catch((e: Error) => ({ name: c.name, ok: false, detail: e.message, maxAbsError: NaN }));
    cases.push(r);
    log(`  ${r.ok ? 'ok  ' : 'FAIL'} ${c.name}${r.ok ? '' : `: ${r.detail}`}`);
  }
  result.ops = { passed: cases.filter((c) => c.ok).length, failed: cases.filter((c) => !c.ok).length, cases, placement: dev.placement(), notes: dev.notes() };
  save();
  // A software adapter runs at a few GFLOP/s: the large shapes would take minutes and say nothing.
  const quick = values.quick || adapter?.software;
  const shapes = quick ? SHAPES.filter(([m, k]) => m <= 256 || k === 4096) : SHAPES;
  const gemm: GemmResult[] = [];
  for (const s of shapes) {
    for (const f of ['fp32', 'int8', 'int4'] as const) {
      const r = await benchGemm(dev, f, s);
      gemm.push(r);
      log(`  ${f.padEnd(4)} ${s.join('x').padEnd(14)} ${r.ms.toFixed(3).padStart(9)} ms ${r.gflops.toFixed(1).padStart(8)} GFLOP/s`);
    }
  }
  result.gemm = { results: gemm, placement: dev.placement() };
  result.seconds = (Date.now() - started) / 1000;
  save();
  log(`wrote ${values.out}: ${cases.filter((c) => c.ok).length}/${cases.length} op cases passed`);
  return cases.every((c) => c.ok) ? 0 : 1;
}

/**
 * The CPU targets of `npm run bench` that depend on the processor: int8 GEMM 2048 at least 2x fp32 (VNNI), and the
 * 4-bit decode GEMV 1x4096x4096 at least 5x fp32, with the machine's fp32 and int8 multiply-add peaks.
 */
async function cpuTargets(): Promise<Record<string, unknown>> {
  const peak = arithmeticPeaks(join(tmpdir(), 'servelab-peak'));
  log(`cpu: fp32 peak ${peak.gflops.toFixed(0)} GFLOP/s${peak.int8 ? `, int8 peak ${peak.int8.gops.toFixed(0)} GOP/s (${peak.int8.path})` : ''}`);
  const dev = await createDevice('cpu');
  try {
    const rows: GemmResult[] = [];
    const shapes: ['fp32' | 'int8' | 'int4', [number, number, number]][] = [['fp32', [2048, 2048, 2048]], ['int8', [2048, 2048, 2048]], ['fp32', [1, 4096, 4096]], ['int4', [1, 4096, 4096]]];
    for (const [f, s] of shapes) {
      const r = await benchGemm(dev, f, s);
      rows.push(r);
      log(`  cpu ${f.padEnd(4)} ${s.join('x').padEnd(14)} ${r.ms.toFixed(3).padStart(9)} ms ${r.gflops.toFixed(1).padStart(8)} GFLOP/s`);
    }
    const int8 = rows[1].gflops / rows[0].gflops;
    const int4 = rows[2].ms / rows[3].ms;
    log(`  cpu targets: int8 GEMM ${int8.toFixed(2)}x fp32 (goal 2x), 4-bit decode GEMV ${int4.toFixed(2)}x fp32 (goal 5x)`);
    return { peak, gemm: rows, targets: { int8OverFp32: int8, int8Met: int8 >= 2, int4DecodeOverFp32: int4, int4Met: int4 >= 5 } };
  } finally {
    await dev.dispose();
  }
}

process.exitCode = await main();
