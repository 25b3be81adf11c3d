/** The connection file Jupyter hands a kernel: transport, ports and the signing key. */
import { readFileSync } from 'node:fs';

export interface ConnectionInfo {
  transport: 'tcp' | 'ipc';
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
}

export function readConnection(path: string): ConnectionInfo {
  let c: Partial<ConnectionInfo>;
  try {
    c = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read connection file ${path}: ${(e as Error).message}`);
  }
  for (const k of ['ip', 'shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'] as const) {
    if (c[k] === undefined) throw new Error(`connection file ${path} lacks '${k}'`);
  }
  return { transport: 'tcp', key: '', signature_scheme: 'hmac-sha256', ...c } as ConnectionInfo;
}

export function endpoint(c: ConnectionInfo, port: number): string {
  return c.transport === 'ipc' ? `ipc://${c.ip}-${port}` : `tcp://${c.ip}:${port}`;
}
