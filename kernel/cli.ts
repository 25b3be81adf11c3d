/** The `servelab` command: kernel, build, report, train, generate, eval, serve, device, bench and gpu-check, each with its own `--help`. */
import { parseArgs } from 'node:util';
import { ServelabError } from '../engine/errors.ts';
import { COMMANDS, commandUsage, usage, wantsHelp } from './commands/usage.ts';

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  // `servelab report --help`, `servelab help report`: the command's own usage, before its options are parsed.
  if (cmd !== undefined && Object.hasOwn(COMMANDS, cmd) && wantsHelp(rest)) {
    console.log(commandUsage(cmd));
    return 0;
  }
  if (cmd === 'help' && rest.length > 0) {
    if (!Object.hasOwn(COMMANDS, rest[0])) {
      console.error(`servelab: unknown command '${rest[0]}'\n\n${usage()}`);
      return 2;
    }
    console.log(commandUsage(rest[0]));
    return 0;
  }
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
      case 'train': {
        const { trainCommand } = await import('./commands/train.ts');
        return await trainCommand(rest);
      }
      case 'generate': {
        const { generateCommand } = await import('./commands/generate.ts');
        return await generateCommand(rest);
      }
      case 'eval': {
        const { evalCommand } = await import('./commands/eval.ts');
        return await evalCommand(rest);
      }
      case 'serve': {
        const { serveCommand } = await import('./commands/serve.ts');
        return await serveCommand(rest);
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
        console.log(usage());
        return cmd === undefined ? 1 : 0;
      default:
        console.error(`servelab: unknown command '${cmd}'\n\n${usage()}`);
        return 2;
    }
  } catch (e) {
    const badOption = (e as Error).name === 'TypeError' && (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    if (e instanceof ServelabError || badOption) {
      // A mistyped option is answered with the options there are; an engine error stands alone.
      console.error(`servelab ${cmd}: ${(e as Error).message}${badOption ? `\n\n${commandUsage(cmd)}` : ''}`);
      return 2;
    }
    throw e;
  }
}
