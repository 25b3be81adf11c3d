/**
 * A real Jupyter server for tests: `jupyter server` (jupyter-server 1.23) or `jupyter notebook` (the classic UI,
 * notebook 6.4) from a scratch Jupyter home, on a free loopback port, with a token and a temporary root folder.
 * start() returns once /api answers (and the token is accepted); stop() sends SIGTERM, then SIGKILL, and then kills
 * any kernel the server left running (found by the scratch runtime folder in its command line).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST, JUPYTER, type ScratchJupyter } from './jupyter_env.ts';

export type JupyterApp = 'server' | 'notebook';

export interface StartOptions {
  /** `jupyter server` (default) or the classic `jupyter notebook`. */
  app?: JupyterApp;
  /** The server's root folder; a fresh temporary folder (removed by stop()) by default. */
  root?: string;
  /** How long to wait for /api, in ms. */
  timeoutMs?: number;
}

export interface StopResult {
  /** How the server process ended. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when SIGTERM was not enough. */
  killed: boolean;
  /** Kernel processes still alive after the server had gone (killed here). */
  leftover: number[];
}

export interface JupyterServer {
  readonly app: JupyterApp;
  /** http://127.0.0.1:PORT/ (with its trailing slash). */
  readonly url: string;
  readonly port: number;
  readonly token: string;
  readonly root: string;
  readonly proc: ChildProcess;
  /** The server's output so far (stdout and stderr). */
  log(): string;
  /** GET or POST on the REST API with the token; path without a leading slash, e.g. 'api/kernelspecs'. */
  api(path: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<StopResult>;
}

/** A port free on 127.0.0.1 right now (the server is then told not to try others, so a race shows as a retry). */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, HOST, () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? done(addr.port) : fail(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function args(app: JupyterApp, port: number, token: string, root: string): string[] {
  const cls = app === 'server' ? 'ServerApp' : 'NotebookApp';
  const common = [
    `--${cls}.ip=${HOST}`,
    `--${cls}.port=${port}`,
    `--${cls}.port_retries=0`,
    `--${cls}.token=${token}`,
    `--${cls}.open_browser=False`,
    `--${cls}.allow_root=True`,
    '--no-browser',
    '--allow-root',
  ];
  return app === 'server'
    ? ['server', ...common, `--ServerApp.root_dir=${root}`]
    : ['notebook', ...common, `--NotebookApp.notebook_dir=${root}`];
}

/** Processes whose command line mentions dir (kernels started from the scratch home name its runtime folder). */
export function processesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.includes(dir)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kills processes of this scratch home that outlived their parent; returns which were alive after a grace period. */
export async function reapKernels(scratch: ScratchJupyter, graceMs = 3000): Promise<number[]> {
  const runtime = scratch.env.JUPYTER_RUNTIME_DIR!;
  const deadline = Date.now() + graceMs;
  let pids = processesMentioning(runtime);
  while (pids.length && Date.now() < deadline) {
    await sleep(100);
    pids = pids.filter(alive);
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited just now
    }
  }
  return pids;
}

async function launch(scratch: ScratchJupyter, app: JupyterApp, root: string, ownRoot: boolean, timeoutMs: number): Promise<JupyterServer | 'port-taken'> {
  const port = await freePort();
  const token = randomBytes(24).toString('hex');
  const url = `http://${HOST}:${port}/`;
  const proc = spawn(JUPYTER, args(app, port, token, root), { cwd: root, env: scratch.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  let spawnError: Error | null = null;
  const exit = new Promise<void>((r) =>
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      r();
    }),
  );
  proc.on('error', (e) => (spawnError = e));

  const api = (path: string, init: RequestInit = {}) =>
    fetch(url + path, { ...init, headers: { Authorization: `token ${token}`, ...(init.headers as Record<string, string> | undefined) }, signal: AbortSignal.timeout(10_000) });

  let stopped: Promise<StopResult> | null = null;
  const stop = (): Promise<StopResult> =>
    (stopped ??= (async () => {
      let killed = false;
      if (!exited) {
        proc.kill('SIGTERM');
        // The server shuts its kernels down before it exits (up to about 5 s each, in parallel).
        if (!(await Promise.race([exit.then(() => true), sleep(15_000).then(() => false)]))) {
          killed = true;
          proc.kill('SIGKILL');
          await Promise.race([exit, sleep(5_000)]);
        }
      }
      const leftover = await reapKernels(scratch);
      if (ownRoot) rmSync(root, { recursive: true, force: true });
      const e = exited as { code: number | null; signal: NodeJS.Signals | null } | null;
      return { code: e?.code ?? null, signal: e?.signal ?? null, killed, leftover };
    })());

  const server: JupyterServer = { app, url, port, token, root, proc, log: () => output, api, stop };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (spawnError) {
      await stop();
      throw new Error(`could not run ${JUPYTER} ${app}: ${(spawnError as Error).message}`);
    }
    if (exited) {
      await stop();
      if (/address already in use|Errno 98/i.test(output)) return 'port-taken';
      throw new Error(`jupyter ${app} exited before answering (${JSON.stringify(exited)}):\n${output}`);
    }
    const up = await fetch(`${url}api`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
    if (up) {
      const status = await api('api/status').catch((e: Error) => ({ ok: false, status: e.message }));
      if (status.ok) return server;
      await stop();
      throw new Error(`jupyter ${app} answers /api but not /api/status with its token (${status.status}):\n${output}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`jupyter ${app} did not answer ${url}api within ${timeoutMs / 1000} s:\n${output}`);
    }
    await sleep(150);
  }
}

/** Starts a Jupyter server of the scratch home; the caller must stop() it. */
export async function startJupyterServer(scratch: ScratchJupyter, opts: StartOptions = {}): Promise<JupyterServer> {
  const app = opts.app ?? 'server';
  const ownRoot = opts.root === undefined;
  const timeoutMs = opts.timeoutMs ?? 45_000;
  for (let attempt = 0; attempt < 3; attempt++) {
    const root = opts.root ?? mkdtempSync(join(tmpdir(), `servelab-${app}-root-`));
    const s = await launch(scratch, app, root, ownRoot, timeoutMs);
    if (s !== 'port-taken') return s;
  }
  throw new Error(`jupyter ${app}: three free ports were taken before it could bind one`);
}
