/** A minimal Jupyter client for tests: starts `servelab kernel start` on free ports and speaks the protocol to it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer, Request, Subscriber } from 'zeromq';
import { decode, encode, header, Signer, type Message } from '../../kernel/protocol/message.ts';

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export class TestClient {
  readonly key = randomBytes(16).toString('hex');
  readonly signer = new Signer(this.key);
  readonly session = 'test-' + randomBytes(4).toString('hex');
  proc!: ChildProcess;
  shell = new Dealer();
  control = new Dealer();
  iopub = new Subscriber();
  ports!: Record<string, number>;
  stderr = '';
  private iopubMsgs: Message[] = [];
  private replies: Message[] = [];
  private waiters: (() => void)[] = [];

  async start(cwd = process.cwd()): Promise<void> {
    const names = ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'];
    this.ports = {};
    for (const n of names) this.ports[n] = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'servelab-kernel-'));
    const file = join(dir, 'connection.json');
    writeFileSync(file, JSON.stringify({ ...this.ports, ip: '127.0.0.1', transport: 'tcp', key: this.key, signature_scheme: 'hmac-sha256' }));
    this.proc = spawn(process.execPath, [join(process.cwd(), 'bin/servelab.js'), 'kernel', 'start', '-f', file], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d) => (this.stderr += d.toString()));
    this.shell.connect(`tcp://127.0.0.1:${this.ports.shell_port}`);
    this.control.connect(`tcp://127.0.0.1:${this.ports.control_port}`);
    this.iopub.connect(`tcp://127.0.0.1:${this.ports.iopub_port}`);
    this.iopub.subscribe();
    for (const sock of [this.shell, this.control]) {
      void (async () => {
        for await (const frames of sock) {
          this.replies.push(decode(frames as Buffer[], this.signer));
          this.waiters.splice(0).forEach((w) => w());
        }
      })().catch(() => {});
    }
    void (async () => {
      for await (const frames of this.iopub) {
        this.iopubMsgs.push(decode(frames as Buffer[], this.signer));
        this.waiters.splice(0).forEach((w) => w());
      }
    })().catch(() => {});
    // The kernel is up when it answers kernel_info (iopub subscriptions need a moment to connect too).
    for (let i = 0; i < 100; i++) {
      const r = await this.request('kernel_info_request', {}, 'shell', 500).catch(() => null);
      if (r) return;
    }
    throw new Error(`kernel did not start: ${this.stderr}`);
  }

  build(type: string, content: Record<string, unknown>): Message {
    return { identities: [], header: header(type, this.session), parent_header: {}, metadata: {}, content, buffers: [] };
  }

  async sendRaw(frames: Buffer[], channel: 'shell' | 'control' = 'shell'): Promise<void> {
    await (channel === 'shell' ? this.shell : this.control).send(frames);
  }

  /** Sends a request and waits for its reply (other replies, e.g. of earlier timed-out requests, are skipped). */
  async request(type: string, content: Record<string, unknown>, channel: 'shell' | 'control' = 'shell', timeoutMs = 30_000): Promise<Message> {
    const msg = this.build(type, content);
    const sock = channel === 'shell' ? this.shell : this.control;
    await sock.send(encode(msg, this.signer));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const reply = this.replies.find((r) => r.parent_header.msg_id === msg.header.msg_id);
      if (reply) return reply;
      if (Date.now() > deadline) throw new Error(`no reply to ${type} within ${timeoutMs} ms`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }

  /** All iopub messages for a request, up to and including its idle status. */
  async outputs(msgId: string, timeoutMs = 30_000): Promise<Message[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const mine = this.iopubMsgs.filter((m) => m.parent_header.msg_id === msgId);
      if (mine.some((m) => m.header.msg_type === 'status' && m.content.execution_state === 'idle')) return mine;
      if (Date.now() > deadline) throw new Error(`no idle status for ${msgId}; got ${mine.map((m) => m.header.msg_type)}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }

  /** iopub messages for a request that arrive within a time window (late outputs of a finished cell). */
  iopubFor(msgId: string): Message[] {
    return this.iopubMsgs.filter((m) => m.parent_header.msg_id === msgId);
  }

  async execute(code: string, timeoutMs = 60_000): Promise<{ reply: Message; outputs: Message[] }> {
    const reply = await this.request('execute_request', { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false }, 'shell', timeoutMs);
    return { reply, outputs: await this.outputs(reply.parent_header.msg_id!) };
  }

  async heartbeat(timeoutMs = 2000): Promise<boolean> {
    const hb = new Request({ receiveTimeout: timeoutMs });
    hb.connect(`tcp://127.0.0.1:${this.ports.hb_port}`);
    try {
      await hb.send('ping');
      const [r] = await hb.receive();
      return r.toString() === 'ping';
    } catch {
      return false;
    } finally {
      hb.close();
    }
  }

  async stop(): Promise<void> {
    await this.request('shutdown_request', { restart: false }, 'control', 5000).catch(() => {});
    await new Promise((res) => (this.proc.exitCode !== null ? res(null) : this.proc.once('exit', res)));
    for (const s of [this.shell, this.control, this.iopub]) s.close();
  }
}
