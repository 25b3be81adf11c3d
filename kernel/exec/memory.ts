/**
 * Where the kernel's own memory goes, as `lab.kernelMemory()` shows it: the process (resident set, V8 heap by space,
 * memory outside the heap) next to the structures the kernel keeps per cell (history, source maps, the type
 * checker's program), so a growing notebook can tell its own data from the kernel's bookkeeping.
 */
import { getHeapSpaceStatistics } from 'node:v8';
import { Table } from '../display/table.ts';
import type { CheckerStats } from './typecheck.ts';

/** What the kernel keeps, counted by the kernel itself. */
export interface KernelStructures {
  executionCount: number;
  history: { entries: number; chars: number };
  sourceMaps: { cells: number; chars: number };
  /** null until the first cell (or warm-up) starts the compiler. */
  checker: CheckerStats | null;
}

let source: (() => KernelStructures) | null = null;

/** The running kernel registers how to count its structures. */
export function registerKernelStructures(fn: () => KernelStructures): void {
  source = fn;
}

const MB = 2 ** 20;

export interface KernelMemoryRow {
  part: string;
  MiB: number | null;
  count: number | null;
  note: string;
}

export function kernelMemoryRows(): KernelMemoryRow[] {
  const m = process.memoryUsage();
  const row = (part: string, bytes: number | null, count: number | null, note = ''): KernelMemoryRow => ({ part, MiB: bytes === null ? null : bytes / MB, count, note });
  const rows: KernelMemoryRow[] = [
    row('resident set (RSS)', m.rss, null, 'the whole process: heap, code, native libraries, threads'),
    row('V8 heap, committed', m.heapTotal, null, `${(m.heapUsed / MB).toFixed(1)} MiB of it in use`),
  ];
  for (const s of getHeapSpaceStatistics()) {
    if (s.space_size === 0) continue;
    rows.push(row(`  heap: ${s.space_name.replace(/_space$/, '').replace(/_/g, ' ')}`, s.space_used_size, null, `${(s.space_size / MB).toFixed(1)} MiB committed`));
  }
  rows.push(row('external (outside the heap)', m.external, null, 'buffers, sockets, native objects held from JavaScript'));
  rows.push(row('  of which ArrayBuffers', m.arrayBuffers, null, 'tensor data on the host, zeromq frames'));
  const k = source?.();
  if (k) {
    // Characters of JavaScript strings: one or two bytes each, counted as two.
    rows.push(row('cells run', null, k.executionCount));
    rows.push(row('history', k.history.chars * 2, k.history.entries, 'inputs and outputs of stored executions'));
    rows.push(row('source maps', k.sourceMaps.chars * 2, k.sourceMaps.cells, 'encoded; a cell\'s is decoded only for a traceback through it'));
    const c = k.checker;
    if (c) {
      rows.push(row('type checker (tsgo process)', c.processRss, c.programFiles, 'its own process, outside the RSS above; count: files in its program (lib, @types/node, imported modules, cells)'));
      rows.push(row('type checker: earlier cells', null, c.cellFiles, `${c.liveNames} names live`));
    } else rows.push(row('type checker', null, null, 'not loaded yet'));
  }
  return rows;
}

/** The rows as a table a cell displays. */
export function kernelMemory(): Table {
  return new Table(kernelMemoryRows().map((r) => ({ ...r })), { columns: ['part', 'MiB', 'count', 'note'], caption: 'servelab kernel memory', digits: 3 });
}
