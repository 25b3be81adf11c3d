/**
 * The kernel as JupyterLab reaches it: @jupyterlab/services (the client JupyterLab itself uses, with ws for
 * WebSockets in Node) against a real `jupyter server` started from a scratch Jupyter home. Kernelspecs, execution,
 * display updates, an interrupt through the server's REST API (a signal to the kernel), restart and shutdown;
 * then `servelab report --server` (ServerRunner) against the same server.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kernel, KernelMessage, ServerConnection as SC } from '@jupyterlab/services';
import { KernelManager, KernelSpecManager, ServerConnection } from '@jupyterlab/services';
import { WebSocket } from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { REPO, requireJupyter, scratchJupyter, type ScratchJupyter } from './jupyter_env.ts';
import { startJupyterServer, type JupyterServer, type StopResult } from './jupyter_server.ts';
import { runCommand } from '../helpers/process.ts';

type IOPub = KernelMessage.IIOPubMessage;

interface Executed {
  reply: KernelMessage.IExecuteReplyMsg;
  iopub: IOPub[];
}

/** Runs code, collecting every iopub message of the request until its reply (the kernel publishes all before idle). */
async function execute(kernel: Kernel.IKernelConnection, code: string, timeoutMs = 30_000, onIOPub?: (m: IOPub) => void): Promise<Executed> {
  const iopub: IOPub[] = [];
  const future = kernel.requestExecute({ code, stop_on_error: false, store_history: true });
  future.onIOPub = (m) => {
    iopub.push(m);
    onIOPub?.(m);
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`no execute_reply within ${timeoutMs} ms for:\n${code}`)), timeoutMs);
  });
  try {
    const reply = (await Promise.race([future.done, timeout])) as KernelMessage.IExecuteReplyMsg;
    return { reply, iopub };
  } finally {
    clearTimeout(timer);
  }
}

const ofType = (ms: IOPub[], t: string) => ms.filter((m) => m.header.msg_type === t);
const resultText = (e: Executed) => {
  const r = ofType(e.iopub, 'execute_result')[0];
  return r ? String((r.content as { data: Record<string, unknown> }).data['text/plain']) : undefined;
};

async function waitFor(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

requireJupyter('@jupyterlab/services against jupyter server 1.23', () => {
  let scratch: ScratchJupyter | undefined;
  let server: JupyterServer | undefined;
  let settings: SC.ISettings;
  let manager: KernelManager | undefined;
  let kernel: Kernel.IKernelConnection | undefined;
  let stopped: StopResult | undefined;

  beforeAll(async () => {
    scratch = scratchJupyter();
    server = await startJupyterServer(scratch);
    settings = ServerConnection.makeSettings({
      baseUrl: server.url,
      wsUrl: server.url.replace(/^http/, 'ws'),
      token: server.token,
      appendToken: true,
      WebSocket: WebSocket as unknown as typeof globalThis.WebSocket,
    });
  }, 60_000);

  afterAll(async () => {
    kernel?.dispose();
    manager?.dispose();
    stopped = await server?.stop();
    scratch?.cleanup();
    // The server shut every kernel down itself before exiting: none had to be killed afterwards.
    if (stopped) expect(stopped.leftover, `kernels left running by jupyter server:\n${server!.log()}`).toEqual([]);
  }, 40_000);

  it('lists the servelab kernelspec as "TypeScript (servelab)"', async () => {
    const specs = new KernelSpecManager({ serverSettings: settings });
    try {
      await specs.ready;
      const servelab = specs.specs?.kernelspecs.servelab;
      expect(servelab, `kernelspecs: ${Object.keys(specs.specs?.kernelspecs ?? {}).join(', ')}`).toBeDefined();
      expect(servelab!.display_name).toBe('TypeScript (servelab)');
      expect(servelab!.language).toBe('typescript');
    } finally {
      specs.dispose();
    }
  });

  it('starts a servelab kernel and executes a cell', async () => {
    manager = new KernelManager({ serverSettings: settings });
    await manager.ready;
    kernel = await manager.startNew({ name: 'servelab' });
    const info = await kernel.info;
    expect(info.implementation).toBe('servelab');
    expect(info.language_info.name).toBe('typescript');

    const e = await execute(kernel, "const greeting: string = 'hello';\nconsole.log(greeting);\n6 * 7");
    expect(e.reply.content.status).toBe('ok');
    expect(ofType(e.iopub, 'execute_input')).toHaveLength(1);
    expect(ofType(e.iopub, 'stream').map((m) => (m.content as { text: string }).text).join('')).toBe('hello\n');
    expect(resultText(e)).toBe('42');
    const listed = (await (await server!.api('api/kernels')).json()) as { id: string; name: string }[];
    expect(listed.map((k) => [k.id, k.name])).toEqual([[kernel.id, 'servelab']]);
  }, 60_000);

  it('receives display_data with a display_id and then update_display_data for it', async () => {
    const e = await execute(kernel!, 'const h = display(md`a`, { displayId: true });\nh.update(md`b`);\nh.displayId');
    expect(e.reply.content.status).toBe('ok');
    const shown = ofType(e.iopub, 'display_data');
    const updated = ofType(e.iopub, 'update_display_data');
    expect(shown).toHaveLength(1);
    expect(updated).toHaveLength(1);
    const id = (shown[0].content as { transient?: { display_id?: string } }).transient?.display_id;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect((updated[0].content as { transient?: { display_id?: string } }).transient?.display_id).toBe(id);
    expect((shown[0].content as { data: Record<string, unknown> }).data['text/markdown']).toBe('a');
    expect((updated[0].content as { data: Record<string, unknown> }).data['text/markdown']).toBe('b');
    expect(resultText(e)).toBe(`'${id}'`);
    // The update comes after the display it replaces, and both before the reply (the request is idle after them).
    const order = e.iopub.map((m) => m.header.msg_type);
    expect(order.indexOf('display_data')).toBeLessThan(order.indexOf('update_display_data'));
    expect(order.at(-1)).toBe('status');
  });

  it('kernel.interrupt() stops a long engine experiment: KeyboardInterrupt within a second', async () => {
    const code = [
      "import { createDevice, matmul } from 'servelab';",
      "const cpu = await createDevice('cpu');",
      'const m = cpu.empty([128, 128]);',
      'let steps = 0;',
      "console.log('running');",
      'for (;;) { (await matmul(m, m)).dispose(); steps++; }',
    ].join('\n');
    let running = false;
    const pending = execute(kernel!, code, 30_000, (m) => {
      if (m.header.msg_type === 'stream') running = true;
    });
    await waitFor('the experiment to start', () => running, 20_000);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = performance.now();
    await kernel!.interrupt();
    const e = await pending;
    const ms = performance.now() - t0;
    expect(e.reply.content).toMatchObject({ status: 'error', ename: 'KeyboardInterrupt' });
    expect(ms, `reply ${ms.toFixed(0)} ms after the interrupt`).toBeLessThan(1000);
    expect(ofType(e.iopub, 'error')).toHaveLength(1);
    // It ran a while, then stopped for good: the step counter no longer moves, and the kernel takes new work.
    const s1 = await execute(kernel!, 'steps');
    await new Promise((r) => setTimeout(r, 300));
    const s2 = await execute(kernel!, 'steps');
    expect(Number(resultText(s1))).toBeGreaterThan(0);
    expect(resultText(s2)).toBe(resultText(s1));
  }, 60_000);

  it('restarts the kernel: execution works again and the old variables are gone', async () => {
    const before = await execute(kernel!, "(globalThis as any).servelabMarker = 'before restart';\ngreeting");
    expect(resultText(before)).toBe("'hello'");
    await kernel!.restart();
    await waitFor('the restarted kernel to be idle', () => kernel!.status === 'idle', 30_000);
    const info = await kernel!.requestKernelInfo();
    expect(info?.content.status).toBe('ok');

    const e = await execute(kernel!, 'typeof (globalThis as any).servelabMarker');
    expect(e.reply.content.status).toBe('ok');
    expect(resultText(e)).toBe("'undefined'");
    expect(e.reply.content.execution_count).toBe(1);
    const gone = await execute(kernel!, 'greeting');
    expect(gone.reply.content).toMatchObject({ status: 'error' });
    expect(JSON.stringify(gone.reply.content)).toMatch(/Cannot find name 'greeting'/);
    expect(resultText(await execute(kernel!, '1 + 2'))).toBe('3');
  }, 60_000);

  it('shuts the kernel down: the server lists no kernels', async () => {
    await kernel!.shutdown();
    expect(kernel!.isDisposed || kernel!.status === 'dead').toBe(true);
    const listed = (await (await server!.api('api/kernels')).json()) as unknown[];
    expect(listed).toEqual([]);
  }, 30_000);

  it('servelab report --server runs a notebook through this server (ServerRunner) and writes the HTML', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-report-'));
    try {
      const nb = {
        nbformat: 4,
        nbformat_minor: 5,
        metadata: { kernelspec: { name: 'servelab', display_name: 'TypeScript (servelab)', language: 'typescript' } },
        cells: [
          { cell_type: 'markdown', id: 'intro', metadata: {}, source: '# Through the server\n\nA report made over the REST and WebSocket API.' },
          { cell_type: 'code', id: 'sum', metadata: {}, execution_count: null, outputs: [], source: "const xs = [1, 2, 3];\nconsole.log('sum', xs.reduce((a, b) => a + b));" },
          { cell_type: 'code', id: 'plot', metadata: {}, execution_count: null, outputs: [], source: "display(plot({ x: xs, y: xs.map((v) => v * v), name: 'squares' }, { title: { text: 'squares' } }));\nmd`**done**`" },
        ],
      };
      const input = join(dir, 'via-server.ipynb');
      writeFileSync(input, JSON.stringify(nb));
      const out = join(dir, 'out');
      const r = await runCommand(process.execPath, [join(REPO, 'bin', 'servelab.js'), 'report', input, '--server', server!.url.replace(/\/$/, ''), '--token', server!.token, '-o', out], { env: scratch!.env, cwd: REPO, timeoutMs: 90_000 });
      expect(r.code, r.output).toBe(0);
      const html = join(out, 'via-server.html');
      expect(existsSync(html), r.output).toBe(true);
      expect(existsSync(join(out, 'index.html'))).toBe(true);
      const page = readFileSync(html, 'utf8');
      expect(page).toContain(`started by the Jupyter server at ${server!.url.replace(/\/$/, '')}`);
      expect(page).toContain('sum 6');
      expect(page).toContain('<strong>done</strong>');
      expect(page).toMatch(/Plotly\.newPlot\("plot-0"/);
      // The report's kernel was shut down when it finished.
      const listed = (await (await server!.api('api/kernels')).json()) as unknown[];
      expect(listed).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
