/**
 * Two source maps in a row -> one. A cell is converted in two steps (types erased, then the top level rewritten),
 * each with its own map; the kernel keeps one map a cell and looks a traceback's positions up in it.
 */
import type MagicString from 'magic-string';
import { TraceMap, decodedMappings, encodedMap, originalPositionFor, LEAST_UPPER_BOUND, type SourceMapSegment } from '@jridgewell/trace-mapping';

/** Offsets at which the lines of a text begin. */
export function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

/**
 * `s` edited `text`, which `inner` maps back to the cell: the result maps `s`'s output straight to the cell.
 * Every position `inner` names is marked in `s` first, so that the outer map is as fine as the inner one (a
 * call in the middle of a line maps to its own line of the cell, not to where the line began).
 */
export function composeMaps(s: MagicString, text: string, inner: { mappings: string; sources: string[]; names: string[] }, file: string): string {
  const map = new TraceMap({ version: 3, sources: inner.sources, names: inner.names, mappings: inner.mappings });
  const starts = lineStarts(text);
  decodedMappings(map).forEach((line, l) => {
    for (const seg of line) s.addSourcemapLocation(starts[l] + seg[0]);
  });
  const mappings = s.generateDecodedMap({ hires: false }).mappings.map((line) => {
    const out: SourceMapSegment[] = [];
    for (const seg of line) {
      if (seg.length === 1) continue;
      const needle = { line: seg[2] + 1, column: seg[3] };
      // A line that starts with indentation has its first inner position after it.
      let p = originalPositionFor(map, needle);
      if (p.line === null) p = originalPositionFor(map, { ...needle, bias: LEAST_UPPER_BOUND });
      if (p.line === null) continue;
      const prev = out[out.length - 1];
      if (prev && prev[2] === p.line - 1 && prev[3] === p.column) continue;
      out.push([seg[0], 0, p.line - 1, p.column]);
    }
    return out;
  });
  return JSON.stringify(encodedMap(new TraceMap({ version: 3, file, sources: [file], names: [], mappings })));
}
