/** A Jupyter client that starts `servelab kernel start` itself on free loopback ports and speaks the protocol to it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Dealer, Subscriber } from 'zeromq';
import { decode, encode, header, Signer, type Message } from '../protocol/message.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'servelab.js');

/** n distinct ports free on the loopback now (each held until all are found, so none is picked twice). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<Server>((res, rej) => {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => res(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((res) => s.close(res))));
  return ports;
}

/** Starts tried on fresh ports when another process took one of the chosen ports before the kernel bound it. */
const START_TRIES = 3;

export class DirectClient {
  readonly key = randomBytes(16).toString('hex');
  readonly signer = new Signer(this.key);
  readonly session = `client-${randomBytes(4).toString('hex')}`;
  proc!: ChildProcess;
  readonly shell = new Dealer();
  readonly control = new Dealer();
  readonly iopub = new Subscriber();
  ports: Record<string, number> = {};
  stderr = '';
  private dir = '';
  private readonly iopubMsgs: Message[] = [];
  private readonly replies: Message[] = [];
  private waiters: (() => void)[] = [];
  /** Listeners by request id, for iopub messages as they arrive (a live chart's late updates included). */
  private readonly listeners = new Map<string, (m: Message) => void>();

  constructor(private readonly opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {}

  /**
   * Starts the kernel and waits until it answers. Ports are free when chosen but bound by the kernel later, so one
   * may be taken meanwhile: the kernel then exits naming it, and the start is tried again on fresh ports.
   */
  async start(timeoutMs = 60_000): Promise<void> {
    // One reader per socket, across tries: a socket's connections change, not the socket.
    for (const sock of [this.shell, this.control]) {
      void (async () => {
        for await (const frames of sock) this.arrived(this.replies, decode(frames as Buffer[], this.signer));
      })().catch(() => {});
    }
    void (async () => {
      for await (const frames of this.iopub) {
        const m = decode(frames as Buffer[], this.signer);
        const id = m.parent_header.msg_id;
        if (id) this.listeners.get(id)?.(m);
        this.arrived(this.iopubMsgs, m);
      }
    })().catch(() => {});
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startOnce(timeoutMs);
      } catch (e) {
        if (attempt >= START_TRIES || !this.exited || !/cannot bind/.test(this.stderr)) throw e;
        this.shell.disconnect(`tcp://127.0.0.1:${this.ports.shell_port}`);
        this.control.disconnect(`tcp://127.0.0.1:${this.ports.control_port}`);
        this.iopub.disconnect(`tcp://127.0.0.1:${this.ports.iopub_port}`);
        rmSync(this.dir, { recursive: true, force: true });
        this.stderr = '';
      }
    }
  }

  private async startOnce(timeoutMs: number): Promise<void> {
    const names = ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'];
    const ports = await freePorts(names.length);
    names.forEach((n, i) => (this.ports[n] = ports[i]));
    this.dir = mkdtempSync(join(tmpdir(), 'servelab-kernel-'));
    const file = join(this.dir, 'connection.json');
    writeFileSync(file, JSON.stringify({ ...this.ports, ip: '127.0.0.1', transport: 'tcp', key: this.key, signature_scheme: 'hmac-sha256' }));
    this.proc = spawn(process.execPath, [BIN, 'kernel', 'start', '-f', file], { cwd: this.opts.cwd ?? process.cwd(), env: this.opts.env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.stderr += d.toString()));
    this.shell.connect(`tcp://127.0.0.1:${this.ports.shell_port}`);
    this.control.connect(`tcp://127.0.0.1:${this.ports.control_port}`);
    this.iopub.connect(`tcp://127.0.0.1:${this.ports.iopub_port}`);
    this.iopub.subscribe();
    // Up when it answers kernel_info and its iopub reaches us (a subscription takes a moment to connect).
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exited) break;
      const r = await this.request('kernel_info_request', {}, 'shell', 500).catch(() => null);
      if (r && this.iopubMsgs.some((m) => m.parent_header.msg_id === r.parent_header.msg_id)) return;
    }
    throw new Error(`the servelab kernel did not start: ${this.stderr.trim() || 'no answer'}`);
  }

  private arrived(list: Message[], m: Message): void {
    list.push(m);
    this.waiters.splice(0).forEach((w) => w());
  }

  /**
   * Whether the kernel process has ended. One killed by a signal (the out-of-memory killer, a crash in a native
   * library) has a signal code and no exit code.
   */
  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  private async until<T>(find: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = find();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
      if (this.exited) {
        throw new Error(`the kernel exited (${this.proc.signalCode ?? `code ${this.proc.exitCode}`}): ${this.stderr.trim()}`);
      }
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }

  build(type: string, content: Record<string, unknown>): Message {
    return { identities: [], header: header(type, this.session), parent_header: {}, metadata: {}, content, buffers: [] };
  }

  async send(msg: Message, channel: 'shell' | 'control' = 'shell'): Promise<void> {
    await (channel === 'shell' ? this.shell : this.control).send(encode(msg, this.signer));
  }

  async request(type: string, content: Record<string, unknown>, channel: 'shell' | 'control' = 'shell', timeoutMs = 30_000): Promise<Message> {
    const msg = this.build(type, content);
    await this.send(msg, channel);
    return this.until(() => this.replies.find((r) => r.parent_header.msg_id === msg.header.msg_id), timeoutMs, `no reply to ${type}`);
  }

  /** Every iopub message of a request, up to and including its idle status. */
  outputs(msgId: string, timeoutMs = 30_000): Promise<Message[]> {
    return this.until(
      () => {
        const mine = this.iopubFor(msgId);
        return mine.some((m) => m.header.msg_type === 'status' && m.content.execution_state === 'idle') ? mine : undefined;
      },
      timeoutMs,
      `no idle status for ${msgId}`,
    );
  }

  iopubFor(msgId: string): Message[] {
    return this.iopubMsgs.filter((m) => m.parent_header.msg_id === msgId);
  }

  /** Runs code; onMessage sees each of its iopub messages as it arrives, including any after the reply. */
  async execute(code: string, timeoutMs = 600_000, onMessage?: (m: Message) => void): Promise<{ reply: Message; outputs: Message[] }> {
    const msg = this.build('execute_request', { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false });
    if (onMessage) this.listeners.set(msg.header.msg_id, onMessage);
    await this.send(msg);
    const reply = await this.until(() => this.replies.find((r) => r.parent_header.msg_id === msg.header.msg_id), timeoutMs, 'no reply to execute_request');
    return { reply, outputs: await this.outputs(msg.header.msg_id, timeoutMs) };
  }

  async interrupt(): Promise<void> {
    await this.request('interrupt_request', {}, 'control', 10_000);
  }

  async stop(): Promise<void> {
    if (this.proc && !this.exited) {
      const exited = new Promise((res) => (this.exited ? res(null) : this.proc.once('exit', res)));
      await this.request('shutdown_request', { restart: false }, 'control', 5000).catch(() => this.proc.kill('SIGKILL'));
      // A kernel that answered but does not exit (a native library's threads that never join) is not waited for forever.
      const kill = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(kill);
    }
    for (const s of [this.shell, this.control, this.iopub]) s.close();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
