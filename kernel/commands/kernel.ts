/** `servelab kernel install [--user|--prefix DIR]` and `servelab kernel start -f CONNECTION_FILE`. */
import { parseArgs } from 'node:util';
import { installKernelspec } from '../kernelspec.ts';
import { readConnection } from '../protocol/connection.ts';
import { Kernel } from '../kernel.ts';
import { attachComms, labGlobals, labPrelude } from '../lab_globals.ts';
import { commandUsage } from './usage.ts';

export async function kernelCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'install') {
    const { values } = parseArgs({ args: rest, options: { user: { type: 'boolean' }, prefix: { type: 'string' } } });
    const dir = installKernelspec({ user: values.user, prefix: values.prefix });
    console.log(`installed kernelspec servelab ("TypeScript (servelab)") in ${dir}`);
    return 0;
  }
  if (sub === 'start') {
    const { values } = parseArgs({ args: rest, options: { f: { type: 'string', short: 'f' }, 'connection-file': { type: 'string' } } });
    const file = values.f ?? values['connection-file'];
    if (!file) {
      console.error('servelab kernel start: needs -f CONNECTION_FILE (Jupyter passes it)');
      return 2;
    }
    const globals = labGlobals();
    const kernel = new Kernel(readConnection(file), { prelude: labPrelude(), globals });
    attachComms(kernel.comms);
    try {
      await kernel.start();
    } catch (e) {
      // Its sockets and threads would keep the process alive without the channels a client needs.
      console.error(`servelab kernel start: ${(e as Error).message}`);
      process.exit(1);
    }
    // The kernel runs until a shutdown_request or a signal ends the process.
    await new Promise(() => {});
    return 0;
  }
  console.error(commandUsage('kernel'));
  return 2;
}
