/**
 * Debian's Jupyter for the kernel tests: is it installed, and a throwaway Jupyter home (config, data, runtime,
 * IPython dirs) with the servelab kernelspec installed under a prefix on JUPYTER_PATH.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';

/** Debian's interpreter: the `python3` first on PATH may be another one, without Jupyter's modules. */
export const PYTHON = '/usr/bin/python3';
export const JUPYTER = '/usr/bin/jupyter';
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const JUPYTER_FIX = 'bash scripts/jupyter-deps.sh';
/** Every server a test starts listens here only. */
export const HOST = '127.0.0.1';

const MODULES = ['jupyter_client', 'jupyter_kernel_test', 'nbclient', 'nbconvert'];

let cached: string | null | undefined;

/** null when Debian's Jupyter is usable, else why not. */
export function jupyterAvailable(): string | null {
  if (cached !== undefined) return cached;
  cached = probe();
  return cached;
}

function probe(): string | null {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  const r = spawnSync(PYTHON, ['-c', `import ${MODULES.join(', ')}`], { encoding: 'utf8', env: { ...process.env, PYTHONNOUSERSITE: '1' } });
  if (r.error) return `${PYTHON} did not run: ${r.error.message}`;
  if (r.status !== 0) {
    const last = r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`;
    return `${PYTHON} cannot import ${MODULES.join(', ')}: ${last}`;
  }
  if (!existsSync(JUPYTER)) return `${JUPYTER} not found`;
  return null;
}

/**
 * describe() for tests that need Jupyter. Without it they skip, the reason in their title; in CI
 * (CI=true) its absence is a failure that says how to install it.
 */
export function requireJupyter(title: string, body: () => void): void {
  const why = jupyterAvailable();
  if (why !== null && process.env.CI === 'true') {
    describe(title, () => {
      it('has Debian\'s Jupyter in CI', () => {
        throw new Error(`CI=true but Jupyter is unavailable: ${why}\nfix: ${JUPYTER_FIX}`);
      });
    });
    return;
  }
  describe.skipIf(why !== null)(why === null ? title : `${title} (skipped: ${why.slice(0, 160)}; fix: ${JUPYTER_FIX})`, body);
}

export interface ScratchJupyter {
  /** process.env with the JUPYTER_* and IPYTHONDIR variables pointing inside dir. */
  env: NodeJS.ProcessEnv;
  dir: string;
  /** Where `kernel install --prefix` put the servelab kernelspec, on JUPYTER_PATH. */
  prefix: string;
  cleanup(): void;
}

/**
 * A Jupyter home of its own, so tests never see or touch the user's kernels, config or runtime files.
 * Jupyter looks for kernelspecs in <p>/kernels for every <p> on JUPYTER_PATH (first), then the data dir, then
 * {sys.prefix,/usr/local,/usr}/share/jupyter; `kernel install --prefix P` writes P/share/jupyter/kernels/servelab,
 * so P/share/jupyter goes on JUPYTER_PATH.
 */
export function scratchJupyter(opts: { servelab?: boolean } = {}): ScratchJupyter {
  const dir = mkdtempSync(join(tmpdir(), 'servelab-jupyter-'));
  const sub = (name: string) => {
    const p = join(dir, name);
    mkdirSync(p, { recursive: true });
    return p;
  };
  const config = sub('config');
  const prefix = join(dir, 'prefix');
  const share = join(prefix, 'share', 'jupyter');
  mkdirSync(share, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    JUPYTER_CONFIG_DIR: config,
    JUPYTER_DATA_DIR: sub('data'),
    JUPYTER_RUNTIME_DIR: sub('runtime'),
    JUPYTER_PATH: share,
    IPYTHONDIR: sub('ipython'),
    // ~/.local/share/jupyter (and ~/.local's site-packages) would otherwise be searched too.
    PYTHONNOUSERSITE: '1',
    // No __pycache__ folders left in the working tree by test helpers written in Python.
    PYTHONDONTWRITEBYTECODE: '1',
    // ipykernel's debugger otherwise warns on every start about frozen modules.
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  for (const k of ['JUPYTER_CONFIG_PATH', 'JUPYTER_PREFER_ENV_PATH', 'JUPYTER_TOKEN', 'JPY_PARENT_PID']) delete env[k];

  // Servers started from this home bind to loopback only and never open a browser.
  const server = { ip: HOST, open_browser: false, allow_root: true };
  writeFileSync(join(config, 'jupyter_server_config.json'), JSON.stringify({ ServerApp: server }, null, 2));
  writeFileSync(join(config, 'jupyter_notebook_config.json'), JSON.stringify({ NotebookApp: server }, null, 2));

  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  if (opts.servelab ?? true) {
    try {
      installKernelspec(prefix, env);
    } catch (e) {
      cleanup();
      throw e;
    }
  }
  return { env, dir, prefix, cleanup };
}

function installKernelspec(prefix: string, env: NodeJS.ProcessEnv): void {
  const args = [join(REPO, 'bin', 'servelab.js'), 'kernel', 'install', '--prefix', prefix];
  const r = spawnSync(process.execPath, args, { cwd: REPO, env, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) {
    throw new Error(`servelab kernel install --prefix failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}${r.stderr}`);
  }
  const spec = join(prefix, 'share', 'jupyter', 'kernels', 'servelab', 'kernel.json');
  if (!existsSync(spec)) {
    throw new Error(`servelab kernel install --prefix ${prefix} wrote no ${spec}; found: ${listTree(prefix).join(', ') || 'nothing'}`);
  }
}

function listTree(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}
