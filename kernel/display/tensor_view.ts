/** A tensor as a learner reads it: dtype, shape, device, exact bytes and tag, and its first values as text and a small table. */
import type { Tensor } from '../../engine/tensor/tensor.ts';
import { fp16ToFp32 } from '../../engine/dtype/fp16.ts';
import { bf16ToFp32 } from '../../engine/dtype/bf16.ts';
import type { MimeBundle } from './sink.ts';
import { escapeHtml, formatBytes, formatNumber, groupDigits } from './format.ts';

const TEXT_VALUES = 16;
const TABLE_ROWS = 8;
const TABLE_COLS = 10;

/**
 * Structural, not instanceof: a cell may reach the engine through another module instance (the package name
 * versus a relative path), and its tensors must display all the same.
 */
export function isTensorLike(x: unknown): x is Tensor {
  if (typeof x !== 'object' || x === null) return false;
  const t = x as Partial<Tensor>;
  return (
    Array.isArray(t.shape) && typeof t.dtype === 'string' && typeof t.numel === 'number' && typeof t.bytes === 'number' &&
    typeof t.disposed === 'boolean' && typeof t.device === 'object' && t.device !== null && typeof t.device.name === 'string'
  );
}

/**
 * count values from flat index start, decoded one by one so that a 1 GB weight never gets copied to show 16
 * numbers. Packed 4-bit tensors show their codes: without the block scales there is no value to show.
 */
function readValues(t: Tensor, start: number, count: number): number[] {
  const d = t.data;
  const out: number[] = [];
  const end = Math.min(t.numel, start + count);
  for (let i = start; i < end; i++) {
    switch (t.dtype) {
      case 'fp16':
        out.push(fp16ToFp32(d[i]));
        break;
      case 'bf16':
        out.push(bf16ToFp32(d[i]));
        break;
      case 'nf4':
      case 'int4': {
        const b = d[i >>> 1];
        const nibble = (i & 1) === 0 ? b & 0x0f : b >>> 4;
        out.push(t.dtype === 'int4' ? (nibble << 28) >> 28 : nibble);
        break;
      }
      default:
        out.push(d[i]);
    }
  }
  return out;
}

function header(t: Tensor): string {
  const label = t.label ? ` '${t.label}'` : '';
  const bytes = t.bytes < 1024 ? `${t.bytes} B` : `${groupDigits(t.bytes)} B (${formatBytes(t.bytes)})`;
  return `Tensor ${t.dtype}[${t.shape.join(', ')}] on ${t.device.name}: ${bytes}, ${t.tag}${label}`;
}

export function tensorBundle(t: Tensor): MimeBundle {
  if (t.disposed) {
    const text = `Tensor ${t.dtype}[${t.shape.join(', ')}] on ${t.device.name} (disposed)`;
    return { 'text/plain': text, 'text/html': `<code>${escapeHtml(text)}</code>` };
  }
  // Showing a device-resident tensor's values would be a transfer the cell did not ask for (and one that is counted).
  if (t.location === 'device') {
    const text = `${header(t)}\nin device memory: await t.values() to read it back`;
    return { 'text/plain': text, 'text/html': `<div class="servelab-tensor" style="font-family:monospace">${escapeHtml(text).replace('\n', '<br>')}</div>` };
  }
  const what = t.dtype === 'nf4' || t.dtype === 'int4' ? 'codes' : 'values';
  const first = readValues(t, 0, TEXT_VALUES).map((v) => formatNumber(v, 5));
  const shown = t.numel <= TEXT_VALUES ? `${what}: [${first.join(', ')}]` : `first ${TEXT_VALUES} of ${groupDigits(t.numel)} ${what}: [${first.join(', ')}, ...]`;
  return { 'text/plain': `${header(t)}\n${shown}`, 'text/html': tensorHtml(t, what) };
}

/** The tensor viewed as [rows, last dim]; leading indices label the rows, so a 3-D tensor reads slice by slice. */
function tensorHtml(t: Tensor, what: string): string {
  const cols = t.shape.length === 0 ? 1 : t.shape[t.shape.length - 1];
  const rows = cols === 0 ? 0 : t.numel / cols;
  const lead = t.shape.slice(0, -1);
  const rowLabel = (r: number): string => {
    if (lead.length <= 1) return String(r);
    const idx: number[] = [];
    for (let k = lead.length - 1, rem = r; k >= 0; k--) {
      idx.unshift(rem % lead[k]);
      rem = Math.floor(rem / lead[k]);
    }
    return `[${idx.join(', ')}]`;
  };
  const nc = Math.min(cols, TABLE_COLS);
  const cut = (n: number, max: number) => n > max;
  let body = '';
  for (let r = 0; r < Math.min(rows, TABLE_ROWS); r++) {
    const cells = readValues(t, r * cols, nc).map((v) => `<td>${escapeHtml(formatNumber(v, 5))}</td>`);
    if (cut(cols, TABLE_COLS)) cells.push('<td>&hellip;</td>');
    body += `<tr><th>${escapeHtml(rowLabel(r))}</th>${cells.join('')}</tr>`;
  }
  if (cut(rows, TABLE_ROWS)) body += `<tr><th>&vellip;</th>${'<td></td>'.repeat(nc + (cut(cols, TABLE_COLS) ? 1 : 0))}</tr>`;
  const head = Array.from({ length: nc }, (_, c) => `<th>${c}</th>`).join('') + (cut(cols, TABLE_COLS) ? '<th>&hellip;</th>' : '');
  const note = t.numel === 0 ? '<div>(no elements)</div>' : what === 'codes' ? '<div>4-bit codes; values need the block scales</div>' : '';
  return (
    `<div class="servelab-tensor"><div style="font-family:monospace">${escapeHtml(header(t))}</div>${note}` +
    (t.numel === 0 ? '' : `<table style="font-family:monospace;text-align:right"><thead><tr><th></th>${head}</tr></thead><tbody>${body}</tbody></table>`) +
    '</div>'
  );
}
