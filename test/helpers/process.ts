/** Runs a command for a test: output collected, a time limit (SIGTERM, then SIGKILL), never a leftover process. */
import { spawn } from 'node:child_process';

export interface Ran {
  code: number | null;
  output: string;
  ms: number;
}

export function runCommand(cmd: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs: number }): Promise<Ran> {
  return new Promise((done, fail) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    let kill: NodeJS.Timeout | undefined;
    // SIGTERM first, so a tool such as nbconvert can shut its kernel down.
    const timer = setTimeout(() => {
      output += `\n[timed out after ${opts.timeoutMs / 1000} s]`;
      child.kill('SIGTERM');
      kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    }, opts.timeoutMs);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      clearTimeout(kill);
      done({ code, output, ms: performance.now() - t0 });
    });
  });
}
