/**
 * The servelab Jupyter kernel: messaging protocol 5.3 over zeromq. Shell, IOPub and stdin run on the main thread;
 * heartbeat and control on a worker thread (kernel/protocol/control_worker.mjs) so that they answer, and an
 * interrupt lands, while a cell keeps the main thread busy.
 */
import { Worker } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
import { createRequire } from 'node:module';
import { inspect } from 'node:util';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { Publisher, Router } from 'zeromq';
import { decode, encode, header, MalformedMessage, PROTOCOL_VERSION, Signer, type Message } from './protocol/message.ts';
import { endpoint, type ConnectionInfo } from './protocol/connection.ts';
import type { Executor } from './exec/executor.ts';
import { kernelConsole } from './exec/runtime.ts';
import { registerKernelStructures } from './exec/memory.ts';
import { CommRegistry } from './comm.ts';
import { setSink, type DisplayOptions, type MimeBundle } from './display/sink.ts';
import { toMimeBundle, truncateText } from './display/mime.ts';
import { closeLiveCharts } from './display/live.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const VERSION = '0.1.0';
/** The type checker's version for kernel_info, read from its package.json (its client module loads with the executor). */
const TS_VERSION = (createRequire(import.meta.url)('@typescript/native-preview/package.json') as { version: string }).version;
/** Heap growth allowed past the live size before a full collection (V8 picks up to 300% on its own). */
const HEAP_GROWING_PERCENT = 20;
/** Stream output one cell may print before the rest is cut with a notice (a runaway print loop must not flood the client). */
const STREAM_LIMIT = 1 << 20;

type Parent = Message;

/** Serializes sends: a zeromq socket takes one send at a time. */
class Outbox {
  private chain: Promise<void> = Promise.resolve();
  constructor(private readonly sock: { send(frames: Buffer[]): Promise<void> }) {}
  send(frames: Buffer[]): Promise<void> {
    this.chain = this.chain.then(() => this.sock.send(frames)).catch((e) => kernelConsole.error(`servelab kernel: send failed: ${(e as Error).message}`));
    return this.chain;
  }
  /** Resolves once everything queued so far has been handed to zeromq. */
  drain(): Promise<void> {
    return this.chain;
  }
}

export interface KernelOptions {
  cwd?: string;
  /** Extra declarations every cell is type-checked with (the globals the lab installs). */
  prelude?: string;
  globals?: Record<string, unknown>;
}

export class Kernel {
  private readonly signer: Signer;
  private readonly session = randomUUID();
  private readonly shell = new Router();
  private readonly iopub = new Publisher();
  private readonly stdin = new Router();
  private readonly shellOut = new Outbox(this.shell);
  private readonly iopubOut = new Outbox(this.iopub);
  private worker!: Worker;
  private executorP: Promise<Executor> | null = null;
  private executorModule: Promise<typeof import('./exec/executor.ts')> | null = null;
  private executor: Executor | null = null;
  private readonly cwd: string;
  private readonly prelude: string;
  readonly comms: CommRegistry;
  private executionCount = 0;
  /** [session, line, input, output text] of every stored execution. */
  private readonly history: [number, number, string, string | null][] = [];
  private commParent: Parent | null = null;
  private queue: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(
    private readonly conn: ConnectionInfo,
    opts: KernelOptions = {},
  ) {
    this.signer = new Signer(conn.key, conn.signature_scheme);
    this.cwd = opts.cwd ?? process.cwd();
    this.prelude = opts.prelude ?? '';
    Object.assign(globalThis, opts.globals ?? {});
    registerKernelStructures(() => ({
      executionCount: this.executionCount,
      history: { entries: this.history.length, chars: this.history.reduce((n, [, , input, output]) => n + input.length + (output?.length ?? 0), 0) },
      ...(this.executor?.structures() ?? { sourceMaps: { cells: 0, chars: 0 }, checker: null }),
    }));
    this.comms = new CommRegistry({ send: (type, content) => this.commParent && this.publish(type, content, this.commParent) });
  }

  async start(): Promise<void> {
    // Each cell leaves garbage that lived long enough to reach the old generation (its script, outputs, the objects
    // of its experiments). V8 lets the heap grow to several times what is live before collecting it; a smaller growth
    // factor collects sooner and keeps the resident set flat across a long notebook (more, shorter collections).
    setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
    // SIGINT (from the worker, or from a Jupyter client in signal mode) interrupts the running cell; without a
    // handler it would end the process.
    process.on('SIGINT', () => this.executor?.interrupt());
    process.on('uncaughtException', (e) => this.orphanError(e));
    process.on('unhandledRejection', (e) => this.orphanError(e));
    // The executor's modules load while the sockets are bound and the control thread boots.
    this.executorModule = import('./exec/executor.ts');
    // The control thread boots (its own isolate, its own zeromq) while this one binds its sockets and warms the
    // checker: a control request sent meanwhile waits in the client's queue until the control socket is bound.
    this.worker = new Worker(new URL('./protocol/control_worker.mjs', import.meta.url), {
      workerData: { controlUrl: endpoint(this.conn, this.conn.control_port), hbUrl: endpoint(this.conn, this.conn.hb_port) },
    });
    const controlReady = new Promise<void>((res, rej) => {
      this.worker.once('message', (m: { type: string; error?: string }) => (m.type === 'ready' ? res() : rej(new Error(m.error ?? 'the control thread failed to start'))));
      this.worker.once('error', rej);
    });
    // Awaited after the binds below; a failure meanwhile is not an orphan error.
    controlReady.catch(() => {});
    // A port taken meanwhile (the client chose it free, another process bound it first) ends the start with the
    // channel and address named: Jupyter starts a kernel that dies before it answers again on fresh ports.
    const bind = (sock: { bind(url: string): Promise<void> }, channel: string, port: number) => {
      const url = endpoint(this.conn, port);
      return sock.bind(url).catch((e: Error) => {
        throw new Error(`cannot bind the ${channel} channel to ${url}: ${e.message}`);
      });
    };
    await Promise.all([bind(this.shell, 'shell', this.conn.shell_port), bind(this.iopub, 'iopub', this.conn.iopub_port), bind(this.stdin, 'stdin', this.conn.stdin_port)]);
    this.publish('status', { execution_state: 'starting' }, null);
    // The first request is read once the checker is warm (its process started, its first program built, about
    // 0.15 s) and the control thread is up: a kernel that answers kernel_info runs a cell at once, and a client's
    // first cell does not wait behind the warm-up. Requests sent meanwhile wait in the socket.
    await Promise.all([this.cells(), controlReady]);
    void this.shellLoop();
    this.worker.on('message', (m: { type: string; frames?: Uint8Array[] }) => {
      if (m.type === 'message') this.receive(m.frames!.map((f) => Buffer.from(f)), 'control');
    });
  }

  /**
   * The executor with a warm type checker: the compiler's process started, its first program (lib files,
   * @types/node, the prelude) built and a cell checked and converted. Made once, at start.
   */
  private cells(): Promise<Executor> {
    this.executorP ??= (async () => {
      const { Executor } = await (this.executorModule ?? import('./exec/executor.ts'));
      const ex = new Executor(this.cwd, { servelab: join(ROOT, 'engine', 'index.ts') }, this.prelude);
      try {
        ex.warm();
      } catch (e) {
        // Only the head start is lost: the first cell builds what the warm-up did not.
        kernelConsole.error('servelab kernel: warm-up failed:', e);
      }
      this.executor = ex;
      return ex;
    })();
    return this.executorP;
  }

  private async shellLoop(): Promise<void> {
    for await (const frames of this.shell) {
      if (this.closing) break;
      this.receive(frames as Buffer[], 'shell');
    }
  }

  /** Decodes and queues a request; a malformed or badly signed one is logged and dropped, never fatal. */
  private receive(frames: Buffer[], channel: 'shell' | 'control'): void {
    let msg: Message;
    try {
      msg = decode(frames, this.signer);
    } catch (e) {
      if (e instanceof MalformedMessage) {
        kernelConsole.error(`servelab kernel: ignored a message on ${channel}: ${e.message}`);
        return;
      }
      throw e;
    }
    // Control requests jump the queue: an interrupt or a shutdown must not wait for the cell it is about.
    if (channel === 'control') void this.handle(msg, channel);
    else this.queue = this.queue.then(() => this.handle(msg, channel));
  }

  /**
   * Replies go out after every output published so far has left the IOPub socket: a client that reads the reply
   * and then waits briefly for the outputs (as jupyter_kernel_test does) finds them all there.
   */
  private reply(msg: Parent, channel: 'shell' | 'control', type: string, content: Record<string, unknown>): void {
    void this.iopubOut.drain().then(() => this.sendReply(msg, channel, type, content));
  }

  private sendReply(msg: Parent, channel: 'shell' | 'control', type: string, content: Record<string, unknown>): void {
    const frames = encode({ identities: msg.identities, header: header(type, this.session), parent_header: msg.header, metadata: {}, content }, this.signer);
    if (channel === 'shell') void this.shellOut.send(frames);
    else this.worker.postMessage({ type: 'send', frames });
  }

  publish(type: string, content: Record<string, unknown>, parent: Parent | null, metadata: Record<string, unknown> = {}): void {
    const frames = encode({ identities: [Buffer.from(`kernel.${this.session}.${type}`)], header: header(type, this.session), parent_header: parent?.header ?? {}, metadata, content }, this.signer);
    void this.iopubOut.send(frames);
  }

  private async handle(msg: Message, channel: 'shell' | 'control'): Promise<void> {
    const type = msg.header.msg_type;
    this.publish('status', { execution_state: 'busy' }, msg);
    try {
      const c = msg.content as Record<string, unknown>;
      switch (type) {
        case 'kernel_info_request':
          this.reply(msg, channel, 'kernel_info_reply', this.info());
          break;
        case 'execute_request':
          await this.execute(msg, channel);
          break;
        case 'complete_request': {
          const code = String(c.code ?? '');
          const { matches, start, end } = (await this.cells()).completions(code, Number(c.cursor_pos ?? code.length));
          this.reply(msg, channel, 'complete_reply', { status: 'ok', matches, cursor_start: start, cursor_end: end, metadata: {} });
          break;
        }
        case 'inspect_request': {
          const code = String(c.code ?? '');
          const text = (await this.cells()).inspect(code, Number(c.cursor_pos ?? code.length));
          this.reply(msg, channel, 'inspect_reply', { status: 'ok', found: text !== null, data: text ? { 'text/plain': text } : {}, metadata: {} });
          break;
        }
        case 'is_complete_request':
          this.reply(msg, channel, 'is_complete_reply', (await import('./exec/complete.ts')).isComplete(String(c.code ?? '')));
          break;
        case 'history_request':
          this.reply(msg, channel, 'history_reply', { status: 'ok', history: this.historyFor(c) });
          break;
        case 'comm_info_request':
          this.reply(msg, channel, 'comm_info_reply', { status: 'ok', comms: this.comms.list(c.target_name as string | undefined) });
          break;
        case 'comm_open':
          this.commParent = msg;
          this.comms.open(String(c.comm_id), String(c.target_name), c.data);
          break;
        case 'comm_msg':
          this.commParent = msg;
          this.comms.msg(String(c.comm_id), c.data);
          break;
        case 'comm_close':
          this.comms.close(String(c.comm_id), c.data);
          break;
        case 'interrupt_request':
          this.executor?.interrupt();
          this.reply(msg, channel, 'interrupt_reply', { status: 'ok' });
          break;
        case 'shutdown_request':
          this.reply(msg, channel, 'shutdown_reply', { status: 'ok', restart: Boolean(c.restart) });
          this.publish('status', { execution_state: 'idle' }, msg);
          await this.shutdown();
          return;
        default:
          kernelConsole.error(`servelab kernel: unsupported request '${type}' on ${channel}`);
          if (type.endsWith('_request')) this.reply(msg, channel, type.replace(/_request$/, '_reply'), { status: 'error', ename: 'NotImplemented', evalue: `${type} is not supported`, traceback: [] });
      }
    } catch (e) {
      kernelConsole.error(`servelab kernel: ${type} failed:`, e);
    } finally {
      if (!this.closing) this.publish('status', { execution_state: 'idle' }, msg);
    }
  }

  private info(): Record<string, unknown> {
    return {
      status: 'ok',
      protocol_version: PROTOCOL_VERSION,
      implementation: 'servelab',
      implementation_version: VERSION,
      language_info: {
        name: 'typescript',
        version: TS_VERSION,
        mimetype: 'text/typescript',
        file_extension: '.ts',
        pygments_lexer: 'typescript',
        codemirror_mode: { name: 'javascript', typescript: true },
      },
      banner: `servelab ${VERSION}: TypeScript ${TS_VERSION} on Node ${process.versions.node}, cells type-checked against earlier cells`,
      help_links: [],
      debugger: false,
    };
  }

  private async execute(msg: Message, channel: 'shell' | 'control'): Promise<void> {
    const executor = await this.cells();
    const c = msg.content as { code?: string; silent?: boolean; store_history?: boolean };
    const code = String(c.code ?? '');
    const silent = Boolean(c.silent);
    const store = c.store_history ?? !silent;
    if (store) this.executionCount++;
    const count = this.executionCount;
    if (!silent) this.publish('execute_input', { code, execution_count: count }, msg);
    const entry: [number, number, string, string | null] = [1, count, code, null];
    if (store) this.history.push(entry);
    let printed = 0;
    let cut = false;
    const stream = (name: 'stdout' | 'stderr', text: string) => {
      if (silent || cut) return;
      if (printed + text.length > STREAM_LIMIT) {
        cut = true;
        text = `${text.slice(0, Math.max(0, STREAM_LIMIT - printed))}\n[servelab: output truncated after ${STREAM_LIMIT} characters; the cell kept running]\n`;
      }
      printed += text.length;
      this.publish('stream', { name, text }, msg);
    };
    const cellSignal = () => executor.running?.controller.signal ?? new AbortController().signal;
    setSink({
      display: (bundle: MimeBundle, opts: DisplayOptions = {}) => {
        const transient = opts.displayId ? { display_id: opts.displayId } : {};
        this.publish(opts.update ? 'update_display_data' : 'display_data', { data: truncateText(bundle), metadata: opts.metadata ?? {}, transient }, msg);
      },
      clear: (wait = false) => this.publish('clear_output', { wait }, msg),
      get signal() {
        return cellSignal();
      },
    });
    try {
      const out = await executor.execute(code, count, { stream, lateError: (e) => this.lateError(e, msg) });
      // A live chart the cell left open publishes its final state now, before the reply and the idle status.
      closeLiveCharts();
      if (out.status === 'ok') {
        // A string result is shown as a value (quoted), as a REPL does; display(s) shows it as text.
        const data = typeof out.value === 'string' ? { 'text/plain': inspect(out.value) } : toMimeBundle(out.value);
        if (out.hasValue && !silent) this.publish('execute_result', { execution_count: count, data: truncateText(data), metadata: {} }, msg);
        if (out.hasValue) entry[3] = String((data as Record<string, unknown>)['text/plain'] ?? '');
        this.reply(msg, channel, 'execute_reply', { status: 'ok', execution_count: count, user_expressions: {}, payload: [] });
      } else {
        const err = out.status === 'error' ? out : { ename: 'KeyboardInterrupt', evalue: 'the cell was interrupted', traceback: ['KeyboardInterrupt: the cell was interrupted; its timers were cancelled and its AbortSignal aborted'] };
        if (!silent) this.publish('error', { ename: err.ename, evalue: err.evalue, traceback: err.traceback }, msg);
        this.reply(msg, channel, 'execute_reply', { status: 'error', execution_count: count, ename: err.ename, evalue: err.evalue, traceback: err.traceback });
      }
    } finally {
      setSink(null);
    }
  }

  /** An exception in a callback a finished cell left behind: shown under that cell, the kernel carries on. */
  private lateError(e: unknown, parent: Parent): void {
    const err = this.executor!.errorOutcome(e);
    this.publish('stream', { name: 'stderr', text: `${err.traceback.join('\n')}\n` }, parent);
  }

  /** An error nobody caught (a rejected promise nobody awaited): reported, never fatal. */
  private orphanError(e: unknown): void {
    if (!this.executor) {
      kernelConsole.error('servelab kernel: uncaught', e);
      return;
    }
    const err = this.executor.errorOutcome(e);
    kernelConsole.error(`servelab kernel: uncaught ${err.traceback.join('\n')}`);
    const run = this.executor.running;
    if (run && !run.cancelled) run.stream('stderr', `${err.traceback.join('\n')}\n`);
  }

  private historyFor(c: Record<string, unknown>): [number, number, string | [string, string | null]][] {
    const shape = (h: [number, number, string, string | null][]) => h.map(([s, l, input, output]) => [s, l, c.output ? [input, output] : input] as [number, number, string | [string, string | null]]);
    return shape(this.historyEntries(c));
  }

  private historyEntries(c: Record<string, unknown>): [number, number, string, string | null][] {
    const n = Number(c.n ?? 10);
    switch (c.hist_access_type) {
      case 'tail':
        return this.history.slice(-n);
      case 'range': {
        const start = Number(c.start ?? 1);
        const stop = c.stop === undefined || c.stop === null ? Infinity : Number(c.stop);
        return this.history.filter(([, line]) => line >= start && line < stop);
      }
      case 'search': {
        const re = new RegExp(`^${String(c.pattern ?? '*').replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 's');
        let hits = this.history.filter(([, , input]) => re.test(input));
        if (c.unique) hits = hits.filter((h, i) => hits.findIndex((x) => x[2] === h[2]) === i);
        return hits.slice(-n);
      }
      default:
        return [];
    }
  }

  /** Orderly: outputs drained, sockets closed, the control thread gone, then exit (zeromq must not be torn down mid-close). */
  async shutdown(): Promise<void> {
    this.closing = true;
    this.executor?.interrupt();
    // In this order: a reply waits for IOPub to drain, then joins the shell queue.
    await this.iopubOut.drain();
    await this.shellOut.drain();
    this.shell.close();
    this.iopub.close();
    this.stdin.close();
    const exited = new Promise<void>((res) => this.worker.once('exit', () => res()));
    this.worker.postMessage({ type: 'close' });
    await Promise.race([exited, new Promise((res) => setTimeout(res, 2000))]);
    await this.worker.terminate().catch(() => {});
    process.exit(0);
  }
}
