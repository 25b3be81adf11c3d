/** The kernel client for tests: the lab's own DirectClient, plus raw frames for protocol abuse. */
import { DirectClient } from '../../kernel/client/direct.ts';
import { Request } from 'zeromq';

export class TestClient extends DirectClient {
  async sendRaw(frames: Buffer[], channel: 'shell' | 'control' = 'shell'): Promise<void> {
    await (channel === 'shell' ? this.shell : this.control).send(frames);
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
}
