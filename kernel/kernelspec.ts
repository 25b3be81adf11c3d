/** The `servelab` kernelspec: how Jupyter starts this kernel. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function kernelspec(): Record<string, unknown> {
  return {
    argv: [process.execPath, join(ROOT, 'bin', 'servelab.js'), 'kernel', 'start', '-f', '{connection_file}'],
    display_name: 'TypeScript (servelab)',
    language: 'typescript',
    // Jupyter sends SIGINT; the kernel also accepts interrupt_request on the control channel.
    interrupt_mode: 'signal',
    env: { ORT_DISABLE_TELEMETRY: '1' },
    metadata: { debugger: false },
  };
}

/** Where `jupyter kernelspec list` looks: --prefix DIR -> DIR/share/jupyter/kernels; --user -> the user's data dir. */
export function kernelsDir(opts: { user?: boolean; prefix?: string }): string {
  if (opts.prefix) return join(resolve(opts.prefix), 'share', 'jupyter', 'kernels');
  const data = process.env.JUPYTER_DATA_DIR ?? (process.platform === 'darwin' ? join(homedir(), 'Library', 'Jupyter') : join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'jupyter'));
  return join(data, 'kernels');
}

export function installKernelspec(opts: { user?: boolean; prefix?: string } = {}): string {
  const dir = join(kernelsDir(opts), 'servelab');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'kernel.json'), JSON.stringify(kernelspec(), null, 2) + '\n');
  return dir;
}
