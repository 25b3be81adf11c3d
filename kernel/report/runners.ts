/**
 * Two ways to run a notebook's cells through the real kernel: a kernel this process starts itself (DirectClient), or
 * one started by a running Jupyter server through @jupyterlab/services, the client JupyterLab itself uses.
 */
import { DirectClient } from '../client/direct.ts';

export interface IOPubMessage {
  header: { msg_type: string; msg_id: string };
  parent_header: Partial<{ msg_id: string }>;
  content: Record<string, unknown>;
}

export interface CellReply {
  status: 'ok' | 'error' | 'aborted';
  executionCount: number | null;
}

export interface CellRunner {
  readonly description: string;
  start(): Promise<void>;
  /** Runs one cell; every iopub message of it reaches onMessage before the promise resolves. */
  run(code: string, onMessage: (m: IOPubMessage) => void): Promise<CellReply>;
  interrupt(): Promise<void>;
  stop(): Promise<void>;
}

export class DirectRunner implements CellRunner {
  private readonly client: DirectClient;
  readonly description = 'a servelab kernel started directly';

  constructor(opts: { cwd?: string } = {}) {
    this.client = new DirectClient({ cwd: opts.cwd });
  }

  start(): Promise<void> {
    return this.client.start();
  }

  async run(code: string, onMessage: (m: IOPubMessage) => void): Promise<CellReply> {
    const { reply } = await this.client.execute(code, 600_000, (m) => onMessage(m as unknown as IOPubMessage));
    return { status: reply.content.status as CellReply['status'], executionCount: (reply.content.execution_count as number) ?? null };
  }

  interrupt(): Promise<void> {
    return this.client.interrupt();
  }

  stop(): Promise<void> {
    return this.client.stop();
  }
}

export class ServerRunner implements CellRunner {
  private kernel: import('@jupyterlab/services').Kernel.IKernelConnection | null = null;
  private manager: import('@jupyterlab/services').KernelManager | null = null;
  readonly description: string;

  constructor(
    private readonly url: string,
    private readonly token: string,
  ) {
    this.description = `a servelab kernel started by the Jupyter server at ${url}`;
  }

  async start(): Promise<void> {
    const { KernelManager, ServerConnection } = await import('@jupyterlab/services');
    const { WebSocket } = await import('ws');
    const serverSettings = ServerConnection.makeSettings({ baseUrl: this.url, wsUrl: this.url.replace(/^http/, 'ws'), token: this.token, WebSocket: WebSocket as never, appendToken: true });
    this.manager = new KernelManager({ serverSettings });
    await this.manager.ready;
    this.kernel = await this.manager.startNew({ name: 'servelab' });
    await this.kernel.info;
  }

  async run(code: string, onMessage: (m: IOPubMessage) => void): Promise<CellReply> {
    const future = this.kernel!.requestExecute({ code, stop_on_error: false });
    future.onIOPub = (m) => onMessage(m as unknown as IOPubMessage);
    const reply = await future.done;
    const c = reply.content as { status: string; execution_count?: number };
    return { status: c.status as CellReply['status'], executionCount: c.execution_count ?? null };
  }

  async interrupt(): Promise<void> {
    await this.kernel?.interrupt();
  }

  async stop(): Promise<void> {
    await this.kernel?.shutdown().catch(() => {});
    this.kernel?.dispose();
    this.manager?.dispose();
  }
}
