/** Tables of measurements: an HTML table for the notebook and an aligned text table for terminals and text exports. */
import { inspect } from 'node:util';
import type { MimeBundle } from './sink.ts';
import { MIME } from './mime.ts';
import { escapeHtml, formatNumber, groupDigits } from './format.ts';

export type Row = Readonly<Record<string, unknown>> | readonly unknown[];

export interface TableOptions {
  /** Which keys, in which order (object rows); the header names (array rows). Default: every key, first seen first. */
  columns?: readonly string[];
  caption?: string;
  /** Significant digits of non-integer numbers. */
  digits?: number;
  /** Rows shown; the rest are counted in a last line. */
  maxRows?: number;
}

export class Table {
  readonly columns: readonly string[];
  readonly rows: readonly (readonly unknown[])[];

  constructor(
    rows: readonly Row[],
    readonly options: TableOptions = {},
  ) {
    if (!Array.isArray(rows)) throw new TypeError(`table() takes an array of rows, got ${inspect(rows, { depth: 0 })}`);
    const arrays = rows.length > 0 && rows.every((r) => Array.isArray(r));
    if (arrays) {
      const width = rows.reduce((w: number, r) => Math.max(w, (r as unknown[]).length), 0);
      this.columns = options.columns ?? Array.from({ length: width }, (_, i) => String(i));
      this.rows = rows.map((r) => this.columns.map((_, i) => (r as unknown[])[i]));
    } else {
      const keys = options.columns ?? [...new Set(rows.flatMap((r) => Object.keys(r ?? {})))];
      this.columns = keys;
      this.rows = rows.map((r) => keys.map((k) => (r as Record<string, unknown>)?.[k]));
    }
  }

  private cell(v: unknown): string {
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') return formatNumber(v, this.options.digits ?? 6);
    if (typeof v === 'string') return v;
    if (typeof v === 'bigint' || typeof v === 'boolean') return String(v);
    return inspect(v, { colors: false, depth: 1, breakLength: Infinity });
  }

  /** A column is right-aligned when all its filled cells are numbers, so digits line up. */
  private numeric(): boolean[] {
    return this.columns.map((_, c) => {
      const filled = this.rows.map((r) => r[c]).filter((v) => v !== null && v !== undefined);
      return filled.length > 0 && filled.every((v) => typeof v === 'number' || typeof v === 'bigint');
    });
  }

  [MIME](): MimeBundle {
    const max = this.options.maxRows ?? 1000;
    const shown = this.rows.slice(0, max);
    const more = this.rows.length - shown.length;
    const cells = shown.map((r) => r.map((v) => this.cell(v)));
    const right = this.numeric();
    const moreNote = more > 0 ? `... ${groupDigits(more)} more rows (${groupDigits(this.rows.length)} in all)` : '';

    const widths = this.columns.map((h, c) => cells.reduce((w, r) => Math.max(w, r[c].length), h.length));
    const line = (r: readonly string[]) => r.map((s, c) => (right[c] ? s.padStart(widths[c]) : s.padEnd(widths[c]))).join('  ').trimEnd();
    const text = [
      ...(this.options.caption ? [this.options.caption] : []),
      line(this.columns),
      widths.map((w) => '-'.repeat(w)).join('  '),
      ...cells.map(line),
      ...(moreNote ? [moreNote] : []),
    ].join('\n');

    const align = (c: number) => (right[c] ? ' style="text-align:right"' : ' style="text-align:left"');
    const head = this.columns.map((h, c) => `<th${align(c)}>${escapeHtml(h)}</th>`).join('');
    const body = cells.map((r) => `<tr>${r.map((s, c) => `<td${align(c)}>${escapeHtml(s)}</td>`).join('')}</tr>`).join('');
    const caption = this.options.caption ? `<caption>${escapeHtml(this.options.caption)}</caption>` : '';
    const foot = moreNote ? `<tfoot><tr><td colspan="${this.columns.length}">${escapeHtml(moreNote)}</td></tr></tfoot>` : '';
    const htmlTable = `<table class="servelab-table">${caption}<thead><tr>${head}</tr></thead><tbody>${body}</tbody>${foot}</table>`;
    return { 'text/html': htmlTable, 'text/plain': text };
  }
}

/** table([{ dtype: 'fp32', bytes: 4096 }, ...]) or table([['fp32', 4096]], { columns: ['dtype', 'bytes'] }). */
export function table(rows: readonly Row[], options: TableOptions = {}): Table {
  return new Table(rows, options);
}
