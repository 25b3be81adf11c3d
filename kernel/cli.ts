/** The `servelab` command: kernel, build, device, bench and gpu-check (more subcommands join as the lab grows). */
import { parseArgs } from 'node:util';
import { ServelabError } from '../engine/index.ts';

const USAGE = `usage: servelab <command> [options]

commands:
  kernel install [--user|--prefix DIR]
                         register the Jupyter kernelspec servelab ("TypeScript (servelab)")
  kernel start -f FILE   run the kernel (Jupyter calls this)
  build [--check] [--root DIR]
                         lessons/NN-slug.md -> notebooks/NN-slug.ipynb; --check writes nothing and
                         exits 1 listing stale or missing notebooks
  report <lesson.md|notebook.ipynb>... [-o DIR] [--all] [--server URL --token T]
                         execute through the kernel and write standalone HTML reports and an index
  device                 the selected device: GPU adapter (if any) and CPU (model, cores, SIMD)
  bench [--json] [--out FILE] [--quick] [--device cpu|webgpu]
                         GEMM throughput (fp32, int8, 4-bit), engine overhead, fp32 peak; targets checked
  gpu-check [--out DIR]  pack the WebGPU check into one folder for a GPU machine without Node or network

environment:
  SERVELAB_DEVICE=auto|cpu|webgpu|reference   device selection (default auto)`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'device': {
        const { printDevice } = await import('./commands/device.ts');
        const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' } } });
        await printDevice({ json: values.json ?? false });
        return 0;
      }
      case 'bench': {
        const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, out: { type: 'string' }, quick: { type: 'boolean' }, device: { type: 'string' } } });
        const { runBench, printReport, saveReport } = await import('../bench/run.ts');
        const rep = await runBench({ device: values.device, quick: values.quick });
        // The cost of a live chart on a running experiment (target: at most 5%); it lives with the display code.
        process.stderr.write('  live chart overhead: interleaved runs with and without a chart ...\n');
        const { liveOverhead } = await import('./display/live_overhead.bench.ts');
        const live = await liveOverhead({ runs: values.quick ? 4 : 12 });
        const report = { ...rep, liveChart: live };
        report.targets.push({ name: 'a live chart costs the experiment at most 5%', met: live.overheadPct <= 5, measured: `${live.overheadPct.toFixed(1)}% (median of ${live.runs} interleaved pairs; the chart's own work is ${live.predictedPct.toFixed(2)}% of the run)`, goal: '<= 5%' });
        if (values.out) saveReport(report, values.out);
        if (values.json) console.log(JSON.stringify(report, null, 2));
        else printReport(report);
        if (values.out) process.stderr.write(`saved ${values.out}\n`);
        return 0;
      }
      case 'kernel': {
        const { kernelCommand } = await import('./commands/kernel.ts');
        return await kernelCommand(rest);
      }
      case 'report': {
        const { reportCommand } = await import('./commands/report.ts');
        return await reportCommand(rest);
      }
      case 'build': {
        const { values } = parseArgs({ args: rest, options: { check: { type: 'boolean' }, root: { type: 'string' } } });
        const { buildCommand } = await import('./commands/build.ts');
        return buildCommand({ check: values.check, root: values.root });
      }
      case 'gpu-check': {
        const { values } = parseArgs({ args: rest, options: { out: { type: 'string' } } });
        const { packGpuCheck } = await import('./commands/gpu_check.ts');
        await packGpuCheck({ out: values.out });
        return 0;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        console.log(USAGE);
        return cmd === undefined ? 1 : 0;
      default:
        console.error(`servelab: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof ServelabError || (e as Error).name === 'TypeError' && (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`servelab ${cmd}: ${(e as Error).message}`);
      return 2;
    }
    throw e;
  }
}
