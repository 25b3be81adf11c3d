/** Jupyter comms: a registry of targets that cells and the lab register, and the comms opened on them. */

export interface Comm {
  readonly id: string;
  readonly target: string;
  send(data: unknown, metadata?: Record<string, unknown>): void;
  close(data?: unknown): void;
  onMsg(fn: (data: unknown) => void): void;
  onClose(fn: (data: unknown) => void): void;
}

export type CommTarget = (comm: Comm, openData: unknown) => void;

export interface CommTransport {
  send(type: 'comm_msg' | 'comm_close' | 'comm_open', content: Record<string, unknown>): void;
}

export class CommRegistry {
  private readonly targets = new Map<string, CommTarget>();
  private readonly comms = new Map<string, Comm & { msg(d: unknown): void; closed(d: unknown): void }>();

  constructor(private readonly transport: CommTransport) {}

  registerTarget(name: string, fn: CommTarget): void {
    this.targets.set(name, fn);
  }

  unregisterTarget(name: string): void {
    this.targets.delete(name);
  }

  list(targetName?: string): Record<string, { target_name: string }> {
    const out: Record<string, { target_name: string }> = {};
    for (const c of this.comms.values()) if (!targetName || c.target === targetName) out[c.id] = { target_name: c.target };
    return out;
  }

  /** A comm the frontend opened. Returns false when no such target is registered (the frontend is told it closed). */
  open(id: string, target: string, data: unknown): boolean {
    const fn = this.targets.get(target);
    if (!fn) {
      this.transport.send('comm_close', { comm_id: id, data: { error: `no comm target '${target}'` } });
      return false;
    }
    fn(this.make(id, target), data);
    return true;
  }

  msg(id: string, data: unknown): void {
    this.comms.get(id)?.msg(data);
  }

  close(id: string, data: unknown): void {
    this.comms.get(id)?.closed(data);
    this.comms.delete(id);
  }

  private make(id: string, target: string): Comm {
    const onMsg: ((d: unknown) => void)[] = [];
    const onClose: ((d: unknown) => void)[] = [];
    const comm = {
      id,
      target,
      send: (data: unknown, metadata: Record<string, unknown> = {}) => this.transport.send('comm_msg', { comm_id: id, data, metadata }),
      close: (data: unknown = {}) => {
        this.transport.send('comm_close', { comm_id: id, data });
        this.comms.delete(id);
      },
      onMsg: (fn: (d: unknown) => void) => onMsg.push(fn),
      onClose: (fn: (d: unknown) => void) => onClose.push(fn),
      msg: (d: unknown) => onMsg.forEach((f) => f(d)),
      closed: (d: unknown) => onClose.forEach((f) => f(d)),
    };
    this.comms.set(id, comm);
    return comm;
  }
}
