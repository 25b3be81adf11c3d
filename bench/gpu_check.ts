/**
 * The GPU check, run from the packed bundle on a machine with a GPU: the device, the op suite against the
 * reference backend, and GEMM throughput per format, all on the WebGPU provider, written as one JSON file.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { adapterInfo, cpuInfo, createDevice, webgpuUnavailable } from '../engine/index.ts';
import { CASES, runCase, type CaseResult } from './op_cases.ts';
import { benchGemm, SHAPES, type GemmResult } from './gemm.ts';

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

process.exitCode = await main();
