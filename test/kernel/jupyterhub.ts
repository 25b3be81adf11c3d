/**
 * A real JupyterHub for tests (Debian's jupyterhub 3.0, with configurable-http-proxy from node_modules): local system
 * users made for the run, each student's single-user server started as that user by LocalProcessSpawner, the
 * servelab kernelspec on JUPYTER_PATH, and an admin service token for the REST API. Everything it creates (users,
 * homes, processes, the proxy, the hub's files) is removed by stop(), whatever state the run ended in.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { HOST, REPO } from './jupyter_env.ts';
import { freePort } from './jupyter_server.ts';

export const JUPYTERHUB = '/usr/bin/jupyterhub';
export const SINGLEUSER = '/usr/bin/jupyterhub-singleuser';
export const PROXY = join(REPO, 'node_modules', '.bin', 'configurable-http-proxy');
const HUB_FIX = 'bash scripts/jupyter-deps.sh (jupyterhub) and npm ci (configurable-http-proxy); run as root';
/** Students of every run are named servelab-<run tag>-sNN, so a run never touches another's users. */
const STUDENT = /^servelab-[0-9a-f]{4}-s\d\d$/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** null when a hub with local users can run here, else why not. */
export function hubAvailable(): string | null {
  if (!existsSync(JUPYTERHUB)) return `${JUPYTERHUB} not found`;
  if (!existsSync(SINGLEUSER)) return `${SINGLEUSER} not found`;
  if (!existsSync(PROXY)) return `${PROXY} not found`;
  if (process.getuid?.() !== 0) return 'not root: the test creates system users and the hub spawns servers as them';
  for (const tool of ['/usr/sbin/useradd', '/usr/sbin/userdel']) if (!existsSync(tool)) return `${tool} not found`;
  return null;
}

/** describe() for the hub test: skipped with the reason outside CI, a failure naming the fix with CI=true. */
export function requireHub(title: string, body: () => void): void {
  const why = hubAvailable();
  if (why !== null && process.env.CI === 'true') {
    describe(title, () => {
      it('has JupyterHub and configurable-http-proxy in CI', () => {
        throw new Error(`CI=true but JupyterHub cannot run: ${why}\nfix: ${HUB_FIX}`);
      });
    });
    return;
  }
  describe.skipIf(why !== null)(why === null ? title : `${title} (skipped: ${why}; fix: ${HUB_FIX})`, body);
}

export interface Student {
  name: string;
  uid: number;
  home: string;
}

export interface Hub {
  /** http://127.0.0.1:PORT/ : the proxy, as a browser reaches it. */
  readonly url: string;
  /** The admin service's token: starts servers, and reaches every student's server through the proxy. */
  readonly token: string;
  readonly students: Student[];
  readonly proc: ChildProcess;
  /** The hub's log so far. */
  log(): string;
  /** The hub's REST API: path under /hub/api/, e.g. 'users/NAME/server'. */
  api(path: string, init?: RequestInit): Promise<Response>;
  /** A student's single-user server's REST API through the proxy: path under /user/NAME/, e.g. 'api/kernels'. */
  userApi(name: string, path: string, init?: RequestInit): Promise<Response>;
  /** The hub's and the proxy's process ids. */
  pids(): { hub: number; proxy: number | null };
  stop(): Promise<void>;
}

export interface HubOptions {
  students: number;
  /** Copied into each student's home, owned by the student. */
  files?: string[];
  timeoutMs?: number;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr}`);
  return r.stdout;
}

/** Process ids whose real uid is uid. */
export function processesOf(uid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'));
      if (m && Number(m[1]) === uid) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** VmRSS and VmHWM (the peak resident set) of a process, in KiB. */
export function memoryKB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

/** User plus system CPU time a process has used, in seconds (clock ticks of 1/100 s, as on Linux x86-64). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name, in parentheses, may hold spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited already
    }
  }
}

/** Kills a student's processes and removes the account, its home and the per-user caches the kernel made in /tmp. */
function removeStudent(name: string, uid: number): void {
  killAll(processesOf(uid));
  spawnSync('/usr/sbin/userdel', ['-r', '-f', name], { encoding: 'utf8', timeout: 30_000 });
  for (const dir of [`/tmp/servelab-${uid}`, `/tmp/tsx-${uid}`]) rmSync(dir, { recursive: true, force: true });
}

/** Accounts of earlier runs that died before their cleanup (their temporary home is gone): removed. */
function removeStaleStudents(): void {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , uid, , , home] = line.split(':');
    if (name && STUDENT.test(name) && !existsSync(home)) removeStudent(name, Number(uid));
  }
}

const py = (v: unknown) => JSON.stringify(v);

function hubConfig(o: { port: number; hubPort: number; proxyApiPort: number; dir: string; names: string[]; token: string; jupyterPath: string }): string {
  return `# JupyterHub for one test run: loopback only, local users, servers spawned as those users.
c = get_config()  # noqa
c.JupyterHub.ip = ${py(HOST)}
c.JupyterHub.port = ${o.port}
c.JupyterHub.hub_ip = ${py(HOST)}
c.JupyterHub.hub_port = ${o.hubPort}
c.JupyterHub.db_url = ${py(`sqlite:///${join(o.dir, 'jupyterhub.sqlite')}`)}
c.JupyterHub.cookie_secret_file = ${py(join(o.dir, 'cookie_secret'))}
c.JupyterHub.pid_file = ${py(join(o.dir, 'hub.pid'))}
c.ConfigurableHTTPProxy.command = [${py(PROXY)}]
c.ConfigurableHTTPProxy.api_url = ${py(`http://${HOST}:${o.proxyApiPort}`)}
c.ConfigurableHTTPProxy.pid_file = ${py(join(o.dir, 'proxy.pid'))}
c.ConfigurableHTTPProxy.auth_token = ${py(randomBytes(24).toString('hex'))}
# Logins are not what is tested: servers are started through the REST API. A class uses PAM (docs/course.md).
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allowed_users = set(${py(o.names)})
c.JupyterHub.spawner_class = 'localprocess'
c.Spawner.cmd = [${py(SINGLEUSER)}]
c.Spawner.notebook_dir = '~'
c.Spawner.default_url = '/tree'
c.Spawner.environment = {'JUPYTER_PATH': ${py(o.jupyterPath)}, 'SERVELAB_DEVICE': 'cpu', 'PYTHONNOUSERSITE': '1', 'PYTHONDONTWRITEBYTECODE': '1'}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{'name': 'course-admin', 'api_token': ${py(o.token)}}]
c.JupyterHub.load_roles = [{'name': 'course-admin', 'services': ['course-admin'], 'scopes': ['admin:users', 'admin:servers', 'access:servers', 'list:users', 'read:users']}]
`;
}

/** Creates the students, writes a config and starts the hub; returns once its API answers the admin token. */
export async function startHub(opts: HubOptions): Promise<Hub> {
  removeStaleStudents();
  const tag = randomBytes(2).toString('hex');
  const root = mkdtempSync('/tmp/servelab-hub-');
  // Students must reach their homes and the kernelspec below this folder; the hub's own files stay root's.
  chmodSync(root, 0o755);
  const hubDir = join(root, 'hub');
  mkdirSync(hubDir, { mode: 0o700 });
  const homes = join(root, 'home');
  mkdirSync(homes, { mode: 0o755 });
  const students: Student[] = [];
  let proc: ChildProcess | null = null;
  let output = '';

  const stop = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      // SIGTERM: the hub stops every server (cleanup_servers) and its proxy.
      proc.kill('SIGTERM');
      if (!(await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)]))) {
        proc.kill('SIGKILL');
        await Promise.race([exited, sleep(5000)]);
      }
    }
    const proxyPid = readPid(join(hubDir, 'proxy.pid'));
    if (proxyPid && cmdline(proxyPid).includes('configurable-http-proxy')) killAll([proxyPid]);
    for (const s of students) removeStudent(s.name, s.uid);
    rmSync(root, { recursive: true, force: true });
  };

  try {
    for (let i = 1; i <= opts.students; i++) {
      const name = `servelab-${tag}-s${String(i).padStart(2, '0')}`;
      const home = join(homes, name);
      run('/usr/sbin/useradd', ['--create-home', '--home-dir', home, '--shell', '/usr/sbin/nologin', '--user-group', name]);
      const uid = Number(run('/usr/bin/id', ['-u', name]).trim());
      const gid = Number(run('/usr/bin/id', ['-g', name]).trim());
      students.push({ name, uid, home });
      for (const f of opts.files ?? []) {
        const to = join(home, f.split('/').pop()!);
        copyFileSync(f, to);
        chownSync(to, uid, gid);
      }
    }

    // The kernelspec, where every student's server finds it (a class installs it under /usr/local instead).
    const prefix = join(root, 'prefix');
    const r = spawnSync(process.execPath, [join(REPO, 'bin', 'servelab.js'), 'kernel', 'install', '--prefix', prefix], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`servelab kernel install --prefix failed: ${r.stdout}${r.stderr}`);

    const [port, hubPort, proxyApiPort] = [await freePort(), await freePort(), await freePort()];
    const token = randomBytes(24).toString('hex');
    const config = join(hubDir, 'jupyterhub_config.py');
    writeFileSync(config, hubConfig({ port, hubPort, proxyApiPort, dir: hubDir, names: students.map((s) => s.name), token, jupyterPath: join(prefix, 'share', 'jupyter') }));
    const env: NodeJS.ProcessEnv = { ...process.env, PYTHONNOUSERSITE: '1', PYTHONDONTWRITEBYTECODE: '1' };
    for (const k of ['JUPYTER_CONFIG_DIR', 'JUPYTER_DATA_DIR', 'JUPYTER_RUNTIME_DIR', 'JUPYTER_PATH', 'JUPYTERHUB_API_TOKEN']) delete env[k];
    proc = spawn(JUPYTERHUB, ['-f', config], { cwd: hubDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    proc.stderr!.on('data', (b: Buffer) => (output += b.toString()));

    const url = `http://${HOST}:${port}/`;
    const auth = (init: RequestInit = {}): RequestInit => ({ ...init, headers: { Authorization: `token ${token}`, ...(init.headers as Record<string, string> | undefined) }, signal: init.signal ?? AbortSignal.timeout(30_000) });
    const hub: Hub = {
      url,
      token,
      students,
      proc,
      log: () => output,
      api: (path, init) => fetch(`${url}hub/api/${path}`, auth(init)),
      userApi: (name, path, init) => fetch(`${url}user/${name}/${path}`, auth(init)),
      pids: () => ({ hub: proc!.pid!, proxy: readPid(join(hubDir, 'proxy.pid')) }),
      stop,
    };
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`jupyterhub exited (code ${proc.exitCode}) before answering:\n${output}`);
      const ok = await hub.api('users', { signal: AbortSignal.timeout(2000) }).then((res) => res.ok, () => false);
      if (ok) return hub;
      if (Date.now() > deadline) throw new Error(`jupyterhub did not answer ${url}hub/api within ${opts.timeoutMs ?? 60_000} ms:\n${output}`);
      await sleep(250);
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

function readPid(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
