/** Formatting shared by the display layer: HTML escaping, numbers and byte counts as a learner should read them. */

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/**
 * JSON placed inside a <script> element: `<` written as \u003c so that no `</script>` or `<!--` inside a
 * string can end the element early; the text still parses as the same JSON (and JavaScript).
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** Integers exactly; other numbers to `digits` significant digits, exponent form outside [1e-4, 1e6). */
export function formatNumber(v: number, digits = 6): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? 'Infinity' : '-Infinity';
  if (Object.is(v, -0)) return '-0';
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-4) return v.toExponential(digits - 1).replace(/\.?0+e/, 'e');
  return String(Number(v.toPrecision(digits)));
}

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** Binary units (a KiB is 1024 B), as the memory tracker counts them. */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < BINARY_UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${BINARY_UNITS[u]}`;
}

/** A byte count as an axis label: its largest binary unit, up to 4 significant digits ("96 MiB", "1.25 KiB", "0 B"). */
export function formatBytesShort(n: number): string {
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < BINARY_UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number(v.toPrecision(4))} ${BINARY_UNITS[u]}`;
}

/**
 * Ticks for a byte axis from 0 to at least maxBytes, a power of two apart (0, 32 MiB, 64 MiB, 96 MiB), at most
 * maxIntervals of them. Plotly's own ticks are decimal (a 64 MiB tensor shows as 67MB), so tables in MiB and the
 * chart would disagree. Null when there is nothing to scale (0 or not finite).
 */
export function binaryTicks(maxBytes: number, maxIntervals = 6): { tickvals: number[]; ticktext: string[] } | null {
  if (!(maxBytes > 0 && Number.isFinite(maxBytes))) return null;
  const step = 2 ** Math.max(0, Math.ceil(Math.log2(maxBytes / maxIntervals)));
  const tickvals: number[] = [];
  for (let i = 0; i <= Math.ceil(maxBytes / step); i++) tickvals.push(i * step);
  return { tickvals, ticktext: tickvals.map(formatBytesShort) };
}

/** 1234567 -> "1,234,567": exact counts stay exact but readable. */
export function groupDigits(n: number): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: 20 });
}
