/**
 * A class on JupyterHub: twelve local students, each one's single-user server started through the hub's REST API
 * and running as that student, a servelab kernel in each, and the first code cells of lesson 00 run by all of them
 * at once over the kernels' WebSockets (@jupyterlab/services through the hub's proxy). Prints each student's memory
 * (kernel and server RSS) and cell latencies under that load, and how many students a 24 GiB machine holds.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { KernelAPI, KernelConnection, ServerConnection } from '@jupyterlab/services';
import { WebSocket } from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseLesson } from '../../kernel/lesson/parse.ts';
import { REPO } from './jupyter_env.ts';
import { cmdline, cpuSeconds, memoryKB, processesOf, requireHub, startHub, type Hub, type Student } from './jupyterhub.ts';
import { MACHINE_GIB, RESERVED_GIB, studentsPerMachine } from '../../bench/kernel.ts';
import { processTree } from '../../kernel/client/process_tree.ts';

const STUDENTS = 12;
const LESSON = '00-why-serving-is-costly';
/** The lesson's first code cells: a table and a plot, the 4096 x 4096 layer's weights, and its fp32, fp16 and 4-bit copies on the device. */
const CELLS = parseLesson(readFileSync(join(REPO, 'lessons', `${LESSON}.md`), 'utf8'), `${LESSON}.md`)
  .cells.filter((c) => c.kind === 'code')
  .slice(0, 3);

interface Run {
  student: Student;
  kernel?: Kernel.IKernelConnection;
  /** From the request to start a kernel to its first kernel_info reply, in ms. */
  kernelStartMs?: number;
  /** Wall time of each cell, from request to reply, in ms. */
  cellMs: number[];
  status: string[];
  errors: string[];
  serverStartMs?: number;
}

async function execute(kernel: Kernel.IKernelConnection, code: string, timeoutMs: number): Promise<{ reply: KernelMessage.IExecuteReplyMsg; errors: string[] }> {
  const errors: string[] = [];
  const future = kernel.requestExecute({ code, stop_on_error: true, store_history: true });
  future.onIOPub = (m) => {
    if (m.header.msg_type === 'error') errors.push(String((m.content as { evalue?: string }).evalue));
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`no execute_reply within ${timeoutMs} ms`)), timeoutMs)));
  try {
    return { reply: (await Promise.race([future.done, timeout])) as KernelMessage.IExecuteReplyMsg, errors };
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (kb: number) => kb / 1024;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

requireHub(`a class of ${STUDENTS} on JupyterHub 3 (LocalProcessSpawner, local users)`, () => {
  let hub: Hub | undefined;
  const runs: Run[] = [];

  beforeAll(async () => {
    hub = await startHub({ students: STUDENTS, files: [join(REPO, 'notebooks', `${LESSON}.ipynb`)] });
    runs.push(...hub.students.map((student) => ({ student, cellMs: [], status: [], errors: [] })));
  }, 90_000);

  afterAll(async () => {
    for (const r of runs) {
      r.kernel?.dispose();
    }
    // The hub's log holds every server's and kernel's output too: SERVELAB_HUB_LOG=FILE keeps it for a failed run.
    if (process.env.SERVELAB_HUB_LOG && hub) writeFileSync(process.env.SERVELAB_HUB_LOG, hub.log());
    await hub?.stop();
  }, 90_000);

  it('starts every student\'s server through the hub\'s REST API, each as its own user', async () => {
    const t0 = performance.now();
    await Promise.all(
      runs.map(async (r) => {
        const res = await hub!.api(`users/${r.student.name}/server`, { method: 'POST' });
        expect([201, 202], `${r.student.name}: ${res.status} ${await res.clone().text()}`).toContain(res.status);
        const deadline = Date.now() + 120_000;
        for (;;) {
          const user = (await (await hub!.api(`users/${r.student.name}`)).json()) as { servers?: Record<string, { ready: boolean }> };
          if (user.servers?.['']?.ready) break;
          if (Date.now() > deadline) throw new Error(`${r.student.name}'s server was not ready within 120 s:\n${hub!.log().slice(-4000)}`);
          await sleep(250);
        }
        r.serverStartMs = performance.now() - t0;
      }),
    );
    for (const r of runs) {
      const servers = processesOf(r.student.uid).filter((p) => cmdline(p).includes('jupyterhub-singleuser'));
      expect(servers, `${r.student.name}'s single-user server processes`).toHaveLength(1);
    }
  }, 150_000);

  it('each server sees the servelab kernelspec and the lesson notebook in the student\'s home', async () => {
    await Promise.all(runs.map(async (r) => {
      const specs = (await (await hub!.userApi(r.student.name, 'api/kernelspecs')).json()) as { kernelspecs: Record<string, { spec: { display_name: string } }> };
      expect(specs.kernelspecs.servelab?.spec.display_name).toBe('TypeScript (servelab)');
      const nb = await hub!.userApi(r.student.name, `api/contents/${LESSON}.ipynb?content=0`);
      expect(nb.status, r.student.name).toBe(200);
      expect(((await nb.json()) as { writable: boolean }).writable).toBe(true);
    }));
  });

  it(`runs lesson ${LESSON}'s first ${CELLS.length} code cells for every student at once`, async () => {
    const t0 = performance.now();
    await Promise.all(
      runs.map(async (r) => {
        const settings = ServerConnection.makeSettings({
          baseUrl: `${hub!.url}user/${r.student.name}/`,
          wsUrl: `${hub!.url.replace(/^http/, 'ws')}user/${r.student.name}/`,
          token: hub!.token,
          appendToken: true,
          WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
        });
        // A KernelManager would poll the kernel list and may declare a kernel dead that the list had not shown yet.
        const k0 = performance.now();
        const model = await KernelAPI.startNew({ name: 'servelab' }, settings);
        r.kernel = new KernelConnection({ model, serverSettings: settings });
        await r.kernel.info;
        r.kernelStartMs = performance.now() - k0;
        for (const cell of CELLS) {
          const c0 = performance.now();
          const e = await execute(r.kernel, cell.source, 150_000);
          r.cellMs.push(performance.now() - c0);
          r.status.push(e.reply.content.status);
          r.errors.push(...e.errors);
          if (e.reply.content.status !== 'ok') break;
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;

    // Memory with every student's kernel alive and the cells' tensors still held, as in class.
    const rows = runs.map((r) => {
      const mine = processesOf(r.student.uid);
      const kernels = mine.filter((p) => /servelab\.js kernel start/.test(cmdline(p)));
      const servers = mine.filter((p) => cmdline(p).includes('jupyterhub-singleuser'));
      // A kernel is its node process and the type checker's process: memory and CPU time are the tree's (the peak is
      // the sum of each process's own peak, an upper bound).
      const tree = kernels.length === 1 ? processTree(kernels[0]) : [];
      const kernel = tree.length ? tree.map(memoryKB).reduce((a, b) => ({ rss: a.rss + b.rss, hwm: a.hwm + b.hwm })) : { rss: NaN, hwm: NaN };
      const cpu = tree.length ? tree.map(cpuSeconds).reduce((a, b) => a + b) : NaN;
      const server = servers.length === 1 ? memoryKB(servers[0]).rss : NaN;
      return { r, kernels, kernel, cpu, server, totalKB: kernel.rss + server };
    });
    const { hub: hubPid, proxy: proxyPid } = hub!.pids();
    const hubKB = memoryKB(hubPid).rss;
    const proxyKB = proxyPid ? memoryKB(proxyPid).rss : 0;

    const pad = (s: string | number, n: number) => String(s).padStart(n);
    const lines = [
      `${STUDENTS} students, lesson ${LESSON}, code cells 1-${CELLS.length}, all at once: ${wallS.toFixed(1)} s`,
      `${'student'.padEnd(22)} ${pad('server up s', 11)} ${pad('kernel up s', 11)} ${CELLS.map((_, i) => pad(`cell ${i + 1} ms`, 10)).join(' ')} ${pad('kernel CPU s', 12)} ${pad('kernel MiB', 10)} ${pad('peak MiB', 9)} ${pad('server MiB', 10)} ${pad('total MiB', 9)}`,
      ...rows.map(({ r, kernel, cpu, server, totalKB }) =>
        `${r.student.name.padEnd(22)} ${pad(((r.serverStartMs ?? NaN) / 1000).toFixed(1), 11)} ${pad(((r.kernelStartMs ?? NaN) / 1000).toFixed(1), 11)} ${CELLS.map((_, i) => pad(r.cellMs[i]?.toFixed(0) ?? '-', 10)).join(' ')} ${pad(cpu.toFixed(1), 12)} ${pad(mb(kernel.rss).toFixed(0), 10)} ${pad(mb(kernel.hwm).toFixed(0), 9)} ${pad(mb(server).toFixed(0), 10)} ${pad(mb(totalKB).toFixed(0), 9)}`,
      ),
    ];
    const footprints = rows.map((x) => x.totalKB * 1024);
    const largest = Math.max(...footprints);
    const fit = studentsPerMachine(largest);
    lines.push(
      `median cell latency: ${CELLS.map((_, i) => `cell ${i + 1} ${median(runs.map((r) => r.cellMs[i] ?? NaN)).toFixed(0)} ms`).join(', ')}`,
      `kernel CPU time to this point: median ${median(rows.map((x) => x.cpu)).toFixed(1)} s per student, ${rows.reduce((a, x) => a + x.cpu, 0).toFixed(0)} s in all on ${availableParallelism()} cores`,
      `hub ${mb(hubKB).toFixed(0)} MiB, proxy ${mb(proxyKB).toFixed(0)} MiB`,
      `per student (kernel + server RSS after the cells): median ${(median(footprints) / 2 ** 20).toFixed(0)} MiB, largest ${(largest / 2 ** 20).toFixed(0)} MiB`,
      `students per ${MACHINE_GIB} GiB machine: ${fit} ((${MACHINE_GIB} GiB - ${RESERVED_GIB} GiB for the OS, hub and proxy) / largest footprint)`,
    );
    console.log(lines.join('\n'));

    for (const { r, kernels } of rows) {
      expect(r.status, `${r.student.name}: ${r.errors.join('; ')}`).toEqual(CELLS.map(() => 'ok'));
      // One kernel per student, running as that student (LocalProcessSpawner's setuid reaches the kernel).
      expect(kernels, `${r.student.name}'s kernel processes`).toHaveLength(1);
    }
    const pids = rows.map((x) => x.kernels[0]);
    expect(new Set(pids).size).toBe(STUDENTS);
    expect(fit).toBeGreaterThan(0);
  }, 400_000);
});
