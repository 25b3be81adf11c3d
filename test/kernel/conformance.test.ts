/**
 * The kernel against the Jupyter messaging protocol: jupyter_kernel_test's KernelTests (plus ordering checks of
 * our own) in test/kernel/kernel_conformance.py, run by Debian's Python on a scratch Jupyter home.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { PYTHON, REPO, requireJupyter, scratchJupyter, type ScratchJupyter } from './jupyter_env.ts';

const SUITE = 'test/kernel/kernel_conformance.py';
// Starting the kernel takes seconds, and the suite waits on purpose after each idle status for late messages.
const RUN_MS = 240_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  timedOut: boolean;
}

/** Runs the suite; on timeout SIGTERM first, so that its atexit hook shuts the kernel down, then SIGKILL. */
function runSuite(env: NodeJS.ProcessEnv, args: string[] = []): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(PYTHON, [SUITE, ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    let timedOut = false;
    let kill: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    }, RUN_MS);
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(kill);
      done({ code, signal, output, timedOut });
    });
  });
}

/** The tests unittest reported as FAIL or ERROR, from its verbose output. */
function failedTests(output: string): string[] {
  const names = [...output.matchAll(/^(?:FAIL|ERROR): (\S+)(?: \(([^)]*)\))?(?: \((.*)\))?$/gm)].map((m) =>
    m[3] ? `${m[1]} (${m[3]})` : m[1],
  );
  return [...new Set(names)];
}

requireJupyter('kernel conformance (jupyter_kernel_test 0.4.5)', () => {
  let scratch: ScratchJupyter | undefined;
  beforeAll(() => {
    scratch = scratchJupyter();
  });
  afterAll(() => scratch?.cleanup());

  it('passes the messaging protocol tests against the servelab kernelspec', async () => {
    const run = await runSuite(scratch!.env);
    if (run.code !== 0) {
      const failed = failedTests(run.output);
      const why = run.timedOut ? `timed out after ${RUN_MS / 1000}s` : run.signal ? `killed by ${run.signal}` : `exit ${run.code}`;
      throw new Error(
        `${SUITE} failed (${why})` +
          (failed.length ? `; failing tests:\n  ${failed.join('\n  ')}` : '') +
          `\n\n--- unittest output ---\n${run.output}`,
      );
    }
    expect(run.output).toMatch(/^OK\b/m);
  }, RUN_MS + 30_000);
});
