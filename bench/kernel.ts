/**
 * The kernel as a learner meets it, measured the way jupyter_client sees it: start to the first kernel_info reply, the
 * first cell, p50 latency (execute_request to idle, all output received) of a trivial cell, of a cell with new typed
 * declarations and of a trivial cell once servelab is imported, and the resident set of the kernel process tree after
 * start and as cells accumulate.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { DirectClient } from '../kernel/client/direct.ts';
import { treeRss } from '../kernel/client/process_tree.ts';
import { soak, type SoakSummary } from '../scripts/soak.ts';
import { median } from './stats.ts';
import type { Target } from './run.ts';
import { targetLine } from './alone.ts';

export interface KernelBench {
  /** Spawn to the first kernel_info reply with the IOPub subscription live, ms. */
  startMs: number;
  /** `1+1` sent the moment the kernel answered (as jupyter_client's wait_for_ready then execute does). */
  firstCellMs: number;
  /** `1+1` sent after the kernel sat idle for `settleMs` (a person reading the notebook before running it). */
  firstCellSettledMs: number;
  settleMs: number;
  /** p50 of `cells` runs each, ms: `1+1` again and again, and `i+1` with a new i each time. */
  trivialMs: number;
  trivialDistinctMs: number;
  typedDeclMs: number;
  trivialAfterImportMs: number;
  cells: number;
  /** Resident set of the kernel and its children, MB (10^6 bytes, as jupyter tools print): at the first reply, and idle once settled (the type checker warm). */
  rssAtReplyMB: number;
  rssAfterStartMB: number;
  rssAfterCellsMB: { cells: number; mb: number }[];
  /** Growth per cell after warm-up (the first 30% of the run), least-squares over the samples, KB. */
  growthPerCellKB: number;
  /**
   * Kernels of these footprints that fit one 24 GiB class machine, 1 GiB left to the OS, the hub and its proxy: idle
   * and warm, and at the largest reading over the small cells. A lesson's own peak is larger (docs/course.md).
   */
  studentsPer24GiB: { idle: number; afterCells: number };
  /**
   * `npm run soak`'s run (scripts/soak.ts): cells of every kind a lesson makes (engine experiments, displays, live
   * charts, interrupts, out-of-memory, type and runtime errors, a restart), every output checked; null when skipped.
   */
  soak: SoakSummary | null;
  loadAverage: number;
  seconds: number;
}

const WARM_UP_SHARE = 0.3;
export const MACHINE_GIB = 24;
/** Left to the OS, JupyterHub and its proxy on a class machine (the class test measured the hub and proxy at 165 MiB). */
export const RESERVED_GIB = 1;

/** How many students of this footprint (bytes) fit one class machine. */
export const studentsPerMachine = (footprintBytes: number) => Math.floor(((MACHINE_GIB - RESERVED_GIB) * 2 ** 30) / footprintBytes);

/** The cells of the growth run: a declaration redeclared every 7 cells, a print, an expression. */
export const growthCell = (i: number) => (i % 3 === 0 ? `const g${i % 7} = [${i}, 2, 3].map((x) => x * 2);\ng${i % 7}.length` : i % 3 === 1 ? `console.log('cell ${i}')` : `${i} * 2`);

/**
 * Least-squares slope of MB against cells: the collector's sawtooth (garbage piles up, then goes in one collection)
 * would make any two points disagree; the warm-up before the first point is left out by the caller.
 */
export function slope(points: { cells: number; mb: number }[]): number {
  if (points.length < 2) return 0;
  const mx = points.reduce((s, p) => s + p.cells, 0) / points.length;
  const my = points.reduce((s, p) => s + p.mb, 0) / points.length;
  const sxy = points.reduce((s, p) => s + (p.cells - mx) * (p.mb - my), 0);
  const sxx = points.reduce((s, p) => s + (p.cells - mx) ** 2, 0);
  return sxy / sxx;
}

async function timed(k: DirectClient, code: string): Promise<number> {
  const t0 = performance.now();
  const { reply } = await k.execute(code);
  const ms = performance.now() - t0;
  if (reply.content.status !== 'ok') throw new Error(`bench cell failed: ${code}: ${String(reply.content.evalue)}`);
  return ms;
}

const mb = (bytes: number) => bytes / 1e6;

export async function benchKernel(opts: { cells?: number; growthCells?: number; settleMs?: number } = {}): Promise<KernelBench> {
  const cells = opts.cells ?? 20;
  const growthCells = opts.growthCells ?? 1000;
  const settleMs = opts.settleMs ?? 3000;
  const t0 = performance.now();
  const loadAverage = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  const k = new DirectClient();
  // A client that connects before the kernel binds retries every reconnectInterval (100 ms by default): that would
  // round the start time up to the next retry.
  for (const s of [k.shell, k.control, k.iopub]) s.reconnectInterval = 5;
  const s0 = performance.now();
  await k.start();
  const startMs = performance.now() - s0;
  const rssAtReply = treeRss(k.proc.pid!);
  let second: DirectClient | null = null;
  try {
    const firstCellMs = await timed(k, '1+1');
    // A second kernel, left idle before its first cell: what the background warm-up buys a person.
    second = new DirectClient();
    await second.start();
    await new Promise((r) => setTimeout(r, settleMs));
    const rssAfterStart = treeRss(second.proc.pid!);
    const firstCellSettledMs = await timed(second, '1+1');
    await second.stop();
    second = null;
    const trivial: number[] = [];
    for (let i = 0; i < cells; i++) trivial.push(await timed(k, '1+1'));
    const distinct: number[] = [];
    for (let i = 0; i < cells; i++) distinct.push(await timed(k, `${i}+1`));
    const typed: number[] = [];
    for (let i = 0; i < cells; i++) typed.push(await timed(k, `interface P${i} { x: number; y: string }\nconst p${i}: P${i} = { x: ${i}, y: 'a' };\nfunction f${i}(q: P${i}): number { return q.x * 2; }\nf${i}(p${i})`));
    await timed(k, "import { createDevice } from 'servelab';");
    const afterImport: number[] = [];
    for (let i = 0; i < cells; i++) afterImport.push(await timed(k, '1+1'));
    // Growth: small cells of the kinds a notebook is made of, RSS sampled as they accumulate.
    const points: { cells: number; mb: number }[] = [];
    const done = 3 + 4 * cells;
    const every = Math.max(1, Math.floor(growthCells / 20));
    for (let i = 0; i < growthCells; i++) {
      await timed(k, growthCell(i));
      if ((i + 1) % every === 0) points.push({ cells: done + i + 1, mb: mb(treeRss(k.proc.pid!)) });
    }
    // The old generation and the allocator's arenas find their working size over the first few hundred cells.
    const growthPerCellKB = slope(points.slice(Math.floor(points.length * WARM_UP_SHARE))) * 1000;
    return {
      startMs,
      firstCellMs,
      firstCellSettledMs,
      settleMs,
      trivialMs: median(trivial),
      trivialDistinctMs: median(distinct),
      typedDeclMs: median(typed),
      trivialAfterImportMs: median(afterImport),
      cells,
      rssAtReplyMB: mb(rssAtReply),
      rssAfterStartMB: mb(rssAfterStart),
      rssAfterCellsMB: points,
      growthPerCellKB,
      studentsPer24GiB: { idle: studentsPerMachine(rssAfterStart), afterCells: studentsPerMachine(Math.max(rssAfterStart, ...points.map((p) => p.mb * 1e6))) },
      soak: null,
      loadAverage,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await second?.stop();
    await k.stop();
  }
}

/** The bench's kernel figures, then the soak (its own kernels, started after the bench's have stopped). */
export async function benchKernelWithSoak(opts: Parameters<typeof benchKernel>[0] & { soakCells?: number } = {}): Promise<KernelBench> {
  const b = await benchKernel(opts);
  const cells = opts.soakCells ?? 1000;
  const t0 = performance.now();
  b.soak = cells > 0 ? await soak({ cells }) : null;
  b.seconds += (performance.now() - t0) / 1000;
  return b;
}

export function kernelTargets(b: KernelBench): Target[] {
  const t = (name: string, value: number, goal: number, unit: string): Target => ({
    name,
    met: value <= goal,
    measured: `${value.toFixed(unit === 'MB' || unit === 's' ? 2 : 1)} ${unit}`,
    goal: `<= ${goal} ${unit}`,
    gap: value <= goal ? undefined : `${(value - goal).toFixed(1)} ${unit} over`,
  });
  return [
    t('kernel start to the first reply', b.startMs / 1000, 0.8, 's'),
    t('kernel: first cell, sent the moment the kernel answered', b.firstCellMs, 250, 'ms'),
    t(`kernel: first cell after ${b.settleMs / 1000} s idle`, b.firstCellSettledMs, 250, 'ms'),
    t('kernel: p50 trivial cell (1+1)', b.trivialMs, 8, 'ms'),
    t('kernel: p50 trivial cell (i+1, a new i each time)', b.trivialDistinctMs, 8, 'ms'),
    t('kernel: p50 cell with new typed declarations', b.typedDeclMs, 20, 'ms'),
    t('kernel: importing servelab slows a trivial cell by', b.trivialAfterImportMs - b.trivialMs, 2, 'ms'),
    t('kernel: resident set at the first reply', b.rssAtReplyMB, 150, 'MB'),
    t('kernel: resident set idle after start, type checker warm', b.rssAfterStartMB, 150, 'MB'),
    t('kernel: resident growth per small cell after warm-up', b.growthPerCellKB, 100, 'KB'),
    ...(b.soak
      ? [
          t(`kernel soak (${b.soak.cells} cells): lost, out-of-order or late outputs, hangs, wrong outcomes`, b.soak.lostOutputs + b.soak.outOfOrder + b.soak.lateOutputs + b.soak.hangs + b.soak.wrongOutcomes, 0, 'events'),
          // A leak of what a cell allocates shows as megabytes a cell; engine cells keep their kernel's allocator and
          // compiled sessions growing for a few hundred cells (npm run soak's own limit).
          t('kernel soak: resident growth per cell after warm-up', b.soak.growthPerCellKB, 200, 'KB'),
        ]
      : []),
  ];
}

export function printKernel(b: KernelBench): string[] {
  return [
    `\nKernel (jupyter protocol over zeromq, p50 of ${b.cells} cells, load average ${b.loadAverage.toFixed(2)} at the start):`,
    `  start to first reply ${b.startMs.toFixed(0)} ms; first cell ${b.firstCellMs.toFixed(0)} ms at once, ${b.firstCellSettledMs.toFixed(0)} ms after ${b.settleMs / 1000} s idle`,
    `  trivial cell ${b.trivialMs.toFixed(1)} ms (1+1), ${b.trivialDistinctMs.toFixed(1)} ms (i+1); typed declarations ${b.typedDeclMs.toFixed(1)} ms; trivial after importing servelab ${b.trivialAfterImportMs.toFixed(1)} ms`,
    `  resident set at the first reply ${b.rssAtReplyMB.toFixed(0)} MB, idle and warm ${b.rssAfterStartMB.toFixed(0)} MB; then ${b.rssAfterCellsMB.map((p) => `${p.mb.toFixed(0)} MB at ${p.cells}`).join(', ')} cells; ${b.growthPerCellKB.toFixed(1)} KB a cell after warm-up`,
    `  students per ${MACHINE_GIB} GiB machine, kernels alone: ${b.studentsPer24GiB.idle} idle and warm, ${b.studentsPer24GiB.afterCells} at the largest footprint over the small cells (a lesson's own peak sets a class's size: docs/course.md)`,
    ...(b.soak
      ? [
          `  soak: ${b.soak.cells} cells in ${b.soak.kernels.length} kernels (${b.soak.interrupts} interrupts, ${b.soak.restarts} restart, errors: ${b.soak.errors.type} type, ${b.soak.errors.runtime} runtime, ${b.soak.errors.oom} out of memory); lost ${b.soak.lostOutputs}, out of order ${b.soak.outOfOrder}, late ${b.soak.lateOutputs}, hangs ${b.soak.hangs}, wrong outcomes ${b.soak.wrongOutcomes}`,
          `        resident set ${b.soak.rssMB.start} MB at the start, ${b.soak.rssMB.end} at the end, ${b.soak.rssMB.peak} at the peak; ${b.soak.growthPerCellKB} KB a cell after warm-up; cell p50 ${b.soak.cellMs.median} ms, largest ${b.soak.cellMs.max} ms (${b.soak.seconds.toFixed(0)} s)`,
        ]
      : []),
    `  (${b.seconds.toFixed(0)} s)`,
  ];
}

// `npx tsx bench/kernel.ts [--cells N] [--growth N] [--settle MS] [--soak N] [--out file.json] [--json]`: this section alone.
if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const args = process.argv.slice(2);
  const num = (flag: string) => (args.includes(flag) ? Number(args[args.indexOf(flag) + 1]) : undefined);
  const kernel = await benchKernelWithSoak({ cells: num('--cells'), growthCells: num('--growth'), settleMs: num('--settle'), soakCells: num('--soak') });
  const targets = kernelTargets(kernel);
  console.log([...printKernel(kernel), '\ntargets:', ...targets.map(targetLine)].join('\n'));
  const out = args.indexOf('--out');
  if (out >= 0) writeFileSync(args[out + 1], JSON.stringify({ kernel, targets }, null, 2) + '\n');
  if (args.includes('--json')) console.log(JSON.stringify(kernel));
}
