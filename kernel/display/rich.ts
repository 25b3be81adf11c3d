/** Markdown, HTML and images as displayable values: each carries its own MIME bundle under the MIME symbol. */
import { inspect } from 'node:util';
import type { MimeBundle } from './sink.ts';
import { MIME } from './mime.ts';
import { groupDigits } from './format.ts';

export class Markdown {
  constructor(readonly source: string) {}
  [MIME](): MimeBundle {
    return { 'text/markdown': this.source, 'text/plain': this.source };
  }
  toString(): string {
    return this.source;
  }
}

export class Html {
  constructor(readonly source: string) {}
  [MIME](): MimeBundle {
    return { 'text/html': this.source, 'text/plain': htmlToText(this.source) };
  }
  toString(): string {
    return this.source;
  }
}

/** Tags dropped and entities of the common kind decoded: enough for a terminal or a text export to read. */
function htmlToText(s: string): string {
  return s
    .replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, '')
    .replace(/<(br|\/p|\/div|\/tr|\/h\d|\/li)\b[^>]*>/gi, '\n')
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&nbsp;/g, ' ').replace(/&amp;/g, '&')
    .replace(/[ \t]+\n/g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

/**
 * Strips the indentation that all non-blank lines share, and the blank first and last lines: a template written
 * indented inside a cell would otherwise turn into a markdown code block.
 */
export function dedent(s: string): string {
  const lines = s.replace(/^[ \t]*\r?\n/, '').replace(/\r?\n[ \t]*$/, '').split(/\r?\n/);
  const indents = lines.filter((l) => l.trim() !== '').map((l) => /^[ \t]*/.exec(l)![0].length);
  const cut = indents.length ? Math.min(...indents) : 0;
  return lines.map((l) => l.slice(Math.min(cut, /^[ \t]*/.exec(l)![0].length))).join('\n');
}

/**
 * Markdown, as a tagged template or a call: md`# Results: ${n} tokens/s` or md(text). The template is read raw
 * (String.raw) so that LaTeX such as $\frac{a}{b}$ keeps its backslashes, and dedented.
 */
export function md(strings: TemplateStringsArray | string, ...values: unknown[]): Markdown {
  if (typeof strings === 'string') return new Markdown(strings);
  const raw = String.raw({ raw: strings.raw }, ...values.map((v) => (typeof v === 'string' ? v : inspect(v, { colors: false, depth: 2 }))));
  return new Markdown(dedent(raw));
}

/** Markdown from a string, as is. */
export function markdown(source: string): Markdown {
  return new Markdown(String(source));
}

/** HTML from a string, as is (a trusted notebook runs its scripts). */
export function html(source: string): Html {
  return new Html(String(source));
}

export type ImageFormat = 'png' | 'jpeg' | 'svg';

export class Image {
  constructor(
    readonly format: ImageFormat,
    /** base64 for png and jpeg, the markup for svg. */
    readonly data: string,
    readonly byteLength: number,
    readonly size: { width: number; height: number } | null,
  ) {}

  get mimetype(): string {
    return this.format === 'svg' ? 'image/svg+xml' : `image/${this.format}`;
  }

  [MIME](): MimeBundle {
    const dims = this.size ? `, ${this.size.width}x${this.size.height}` : '';
    return { [this.mimetype]: this.data, 'text/plain': `<${this.mimetype}: ${groupDigits(this.byteLength)} bytes${dims}>` };
  }
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * An image from its encoded bytes (a PNG or JPEG file's contents, or SVG markup). A string for png or jpeg is
 * taken as base64 already. The bytes are checked against the format's signature: a wrong format shows nothing.
 */
export function image(bytes: Uint8Array | ArrayBuffer | string, format: ImageFormat): Image {
  if (format === 'svg') {
    const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes).toString('utf8');
    if (!/<svg[\s>]/i.test(text)) throw new TypeError('image(..., "svg"): the data has no <svg> element');
    return new Image('svg', text, Buffer.byteLength(text), null);
  }
  if (format !== 'png' && format !== 'jpeg') throw new TypeError(`image format must be 'png', 'jpeg' or 'svg', got ${JSON.stringify(format)}`);
  const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'base64') : Buffer.from(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes);
  if (format === 'png' && !PNG_SIGNATURE.every((b, i) => buf[i] === b)) throw new TypeError('image(..., "png"): the data does not start with the PNG signature');
  if (format === 'jpeg' && !(buf[0] === 0xff && buf[1] === 0xd8)) throw new TypeError('image(..., "jpeg"): the data does not start with a JPEG SOI marker (FF D8)');
  // PNG's first chunk is IHDR: width and height as big-endian uint32 at bytes 16 and 20.
  const size = format === 'png' && buf.length >= 24 ? { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) } : null;
  return new Image(format, buf.toString('base64'), buf.length, size);
}
