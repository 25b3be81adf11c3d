/** Jupyter messaging protocol 5.3: message envelopes, HMAC signing and the multipart wire format. */
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

export const PROTOCOL_VERSION = '5.3';
const DELIM = '<IDS|MSG>';

export interface Header {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
}

export interface Message<C = Record<string, unknown>> {
  identities: Buffer[];
  header: Header;
  parent_header: Partial<Header>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

/** Why a frame set is not a valid message; the kernel logs it and carries on. */
export class MalformedMessage extends Error {
  override name = 'MalformedMessage';
}

export class Signer {
  private readonly key: Buffer;
  constructor(
    key: string,
    scheme = 'hmac-sha256',
  ) {
    if (key && scheme !== 'hmac-sha256') throw new Error(`unsupported signature scheme '${scheme}'; expected hmac-sha256`);
    this.key = Buffer.from(key, 'utf8');
  }

  sign(parts: readonly Buffer[]): string {
    // An empty key turns signing off, as the spec allows.
    if (this.key.length === 0) return '';
    const h = createHmac('sha256', this.key);
    for (const p of parts) h.update(p);
    return h.digest('hex');
  }

  verify(signature: string, parts: readonly Buffer[]): boolean {
    const want = Buffer.from(this.sign(parts));
    const got = Buffer.from(signature);
    return want.length === got.length && timingSafeEqual(want, got);
  }
}

export function decode(frames: readonly Buffer[], signer: Signer): Message {
  const i = frames.findIndex((f) => f.length === DELIM.length && f.toString() === DELIM);
  if (i < 0) throw new MalformedMessage('no <IDS|MSG> delimiter');
  if (frames.length < i + 6) throw new MalformedMessage(`${frames.length - i - 1} frames after the delimiter; at least 5 are needed`);
  const [sig, h, p, m, c, ...buffers] = frames.slice(i + 1);
  if (!signer.verify(sig.toString(), [h, p, m, c])) throw new MalformedMessage('bad signature');
  const parse = (b: Buffer, what: string) => {
    try {
      const v = JSON.parse(b.toString('utf8'));
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      return v;
    } catch (e) {
      throw new MalformedMessage(`${what} is not a JSON object: ${(e as Error).message}`);
    }
  };
  const header = parse(h, 'header') as Header;
  if (typeof header.msg_type !== 'string' || typeof header.msg_id !== 'string') throw new MalformedMessage('header lacks msg_type or msg_id');
  return { identities: frames.slice(0, i), header, parent_header: parse(p, 'parent_header'), metadata: parse(m, 'metadata'), content: parse(c, 'content'), buffers };
}

export function encode(msg: Omit<Message, 'buffers'> & { buffers?: Buffer[] }, signer: Signer): Buffer[] {
  const parts = [msg.header, msg.parent_header, msg.metadata, msg.content].map((x) => Buffer.from(JSON.stringify(x), 'utf8'));
  return [...msg.identities, Buffer.from(DELIM), Buffer.from(signer.sign(parts)), ...parts, ...(msg.buffers ?? [])];
}

export function header(msgType: string, session: string): Header {
  return { msg_id: randomUUID(), session, username: 'servelab', date: new Date().toISOString(), msg_type: msgType, version: PROTOCOL_VERSION };
}
