/**
 * A soak run of the kernel: many cells of every kind a lesson produces (engine experiments, out-of-memory errors,
 * display updates, live charts, interrupts of busy loops and of pending timers, type and runtime errors, one
 * restart) sent to a real `servelab kernel start` process over ZeroMQ, each checked for its reply, its idle status
 * and every line it printed, in order; the resident memory of the kernel and its children sampled after every cell.
 *
 * Usage: npm run soak -- [--cells N] [--seed S] [--cell-timeout SECONDS] [--max-growth-kb KB] [--quiet | --verbose]
 * Prints a JSON summary; exits 1 on a lost, out-of-order or late output, a hang, a cell that did not end as its
 * kind must, or RSS growing faster than --max-growth-kb per cell.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DirectClient } from '../kernel/client/direct.ts';
import type { Message } from '../kernel/protocol/message.ts';
import { Rng } from '../engine/index.ts';
import { treeRss } from '../kernel/client/process_tree.ts';
import { CELL_KINDS, cellFor, schedule, SETUP, type CellKind, type CellPlan } from './soak_cells.ts';

export { CELL_KINDS, schedule, type CellKind } from './soak_cells.ts';

export interface SoakOptions {
  /** Cells to run, the setup cell of each kernel not counted. */
  cells?: number;
  /** Seeds the order of cell kinds. */
  seed?: number;
  /** A cell without execute_reply and idle in this time is a hang (the first cell of a kernel gets 3x). */
  cellTimeoutMs?: number;
  /** The cell before which the kernel is restarted (shutdown_request with restart, then a new process). */
  restartAt?: number;
  /**
   * How long after a busy loop's busy status its SIGINT comes, ms: uniform in [min, max). Default [0, 150): it may
   * land while the cell is still type-checked or just as it starts to run. Node 20's vm breakOnSigint misses a
   * SIGINT that arrives at the very moment a script starts (and every later one for that script: a loop that cannot
   * be interrupted); a min past the type check (500 ms) interrupts loops that are already running.
   */
  busyInterruptDelayMs?: readonly [number, number];
  /** Progress lines. */
  log?: (line: string) => void;
  /** A line before every cell. */
  verbose?: (line: string) => void;
}

export interface SoakSummary {
  cells: number;
  /** Printed lines that never arrived. */
  lostOutputs: number;
  /** Lines, displays or updates that arrived out of the order the cell made them. */
  outOfOrder: number;
  /** Output of an interrupted cell that arrived after its reply (its timers should have been cancelled). */
  lateOutputs: number;
  /** Cells that ended otherwise than their kind must (an error where none was due, the wrong error name). */
  wrongOutcomes: number;
  hangs: number;
  interrupts: number;
  /** SIGINTs that stopped nothing and had to be sent again (one that lands before the cell starts running is lost). */
  repeatedInterrupts: number;
  restarts: number;
  errors: { type: number; runtime: number; oom: number };
  byKind: Record<CellKind, number>;
  rssMB: { start: number; end: number; peak: number };
  /** Least-squares slope of the kernel's RSS per cell after warm-up, the largest over the kernel processes run. */
  growthPerCellKB: number;
  /** Each kernel process in turn: cells it ran, RSS after its first and last, and its own growth (null: under 50 cells). */
  kernels: { cells: number; startMB: number; endMB: number; growthPerCellKB: number | null }[];
  /** Median and largest time from execute_request to idle, interrupted cells excluded. */
  cellMs: { median: number; max: number };
  seconds: number;
  /** The first few problems, for a reader. */
  problems: string[];
}


/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Fewer cells than this in one kernel process give no growth figure: its first cells grow the heap by megabytes. */
const MIN_GROWTH_CELLS = 50;

/** Stops a kernel, and kills it when stopping does not end within 20 s: a soak must never wait on its client. */
async function stopKernel(k: DirectClient): Promise<void> {
  await Promise.race([k.stop().catch(() => {}), sleep(20_000)]);
  if (k.proc.exitCode === null && k.proc.signalCode === null) k.proc.kill('SIGKILL');
}
const text = (m: Message) => String((m.content as { text?: string }).text ?? '');
const displayId = (m: Message) => (m.content as { transient?: { display_id?: string } }).transient?.display_id;

/** Checks one cell's iopub messages against its plan; returns its problems. */
function check(c: number, plan: CellPlan, reply: Message, iopub: Message[]): { lost: number; outOfOrder: number; wrongOutcome: boolean; problems: string[] } {
  const problems: string[] = [];
  let lost = 0;
  let outOfOrder = 0;
  const status = (reply.content as { status: string; ename?: string }).status;
  const ename = (reply.content as { ename?: string }).ename ?? null;
  const wrongOutcome = (plan.ename === null && status !== 'ok') || (plan.ename !== null && ename !== plan.ename);
  if (wrongOutcome) {
    problems.push(`cell ${c}: expected ${plan.ename ?? 'ok'}, got ${status} ${ename ?? ''} ${JSON.stringify((reply.content as { evalue?: string }).evalue ?? '')}`);
  }
  // Sequence numbers in the order the lines arrived, from this cell's stdout only.
  const seq: number[] = [];
  for (const m of iopub.filter((m) => m.header.msg_type === 'stream')) {
    for (const line of text(m).split('\n')) {
      const hit = /^@(\d+)\.(\d+)$/.exec(line);
      if (!hit) continue;
      if (Number(hit[1]) !== c) problems.push(`cell ${c}: a line of cell ${hit[1]} arrived with it: ${line}`);
      else seq.push(Number(hit[2]));
    }
  }
  for (let i = 1; i < seq.length; i++) if (seq[i] <= seq[i - 1]) outOfOrder++;
  lost = plan.lines - new Set(seq.filter((k) => k < plan.lines)).size;
  if (lost) problems.push(`cell ${c}: ${lost} of ${plan.lines} lines lost (got ${seq.join(',')})`);
  if (outOfOrder) problems.push(`cell ${c}: lines out of order: ${seq.join(',')}`);
  const types = iopub.map((m) => m.header.msg_type);
  if (types[0] !== 'status' || (iopub[0].content as { execution_state?: string }).execution_state !== 'busy') problems.push(`cell ${c}: the first message is not busy: ${types.join(',')}`);
  if (types.at(-1) !== 'status') problems.push(`cell ${c}: the last message is not idle: ${types.join(',')}`);

  if (plan.displays) {
    // A live chart's first display in a kernel may be plotly.js itself, without a display_id.
    const shown = iopub.filter((m) => m.header.msg_type === 'display_data' && displayId(m));
    const updated = iopub.filter((m) => m.header.msg_type === 'update_display_data');
    const id = shown[0] ? displayId(shown[0]) : undefined;
    if (shown.length !== 1 || !id) {
      lost++;
      problems.push(`cell ${c}: expected one display_data with a display_id, got ${shown.length}`);
    } else {
      if (plan.displays === 'update' && updated.length !== 1) {
        lost++;
        problems.push(`cell ${c}: expected one update_display_data, got ${updated.length}`);
      }
      if (updated.some((m) => displayId(m) !== id)) problems.push(`cell ${c}: an update for another display_id`);
      const first = iopub.indexOf(shown[0]);
      if (updated.some((m) => iopub.indexOf(m) < first)) {
        outOfOrder++;
        problems.push(`cell ${c}: an update arrived before its display`);
      }
      if (plan.displays === 'update') {
        const after = String((updated[0]?.content as { data?: Record<string, unknown> } | undefined)?.data?.['text/markdown'] ?? '');
        if (!after.includes(`cell ${c}: after`)) problems.push(`cell ${c}: the update carries ${JSON.stringify(after)}`);
      }
    }
  }
  return { lost, outOfOrder, wrongOutcome, problems };
}

/** Runs the soak against fresh kernel processes; never throws for a kernel's misbehaviour, it counts it. */
export async function soak(opts: SoakOptions = {}): Promise<SoakSummary> {
  const cells = opts.cells ?? 1000;
  const seed = opts.seed ?? 1;
  const timeoutMs = opts.cellTimeoutMs ?? 30_000;
  const restartAt = opts.restartAt ?? Math.floor(cells / 2);
  const log = opts.log ?? (() => {});
  const kinds = schedule(cells, seed);
  const delays = new Rng(seed + 1);
  const t0 = performance.now();
  const s: SoakSummary = {
    cells: 0,
    lostOutputs: 0,
    outOfOrder: 0,
    lateOutputs: 0,
    wrongOutcomes: 0,
    hangs: 0,
    interrupts: 0,
    repeatedInterrupts: 0,
    restarts: 0,
    errors: { type: 0, runtime: 0, oom: 0 },
    byKind: Object.fromEntries(CELL_KINDS.map((k) => [k, 0])) as Record<CellKind, number>,
    rssMB: { start: 0, end: 0, peak: 0 },
    growthPerCellKB: 0,
    kernels: [],
    cellMs: { median: 0, max: 0 },
    seconds: 0,
    problems: [],
  };
  const problem = (p: string) => {
    if (s.problems.length < 20) s.problems.push(p);
    log(`PROBLEM ${p}`);
  };
  // RSS after each cell, per kernel process.
  const segments: { cell: number; kb: number }[][] = [];
  const durations: number[] = [];
  // Lines of interrupted cells, which must never arrive: watched on every message from then on.
  const silenced = new Set<number>();
  let kernel: DirectClient;

  const watch = (m: Message) => {
    if (m.header.msg_type !== 'stream') return;
    for (const line of text(m).split('\n')) {
      const hit = /^@(\d+)\.late$/.exec(line);
      if (hit && silenced.has(Number(hit[1]))) {
        s.lateOutputs++;
        problem(`cell ${hit[1]}: output after the interrupt: ${line}`);
      }
    }
  };

  const startKernel = async () => {
    kernel = new DirectClient({ env: { ...process.env, SERVELAB_DEVICE: 'cpu' } });
    await kernel.start();
    const r = await kernel.execute(SETUP, timeoutMs * 3, watch);
    if ((r.reply.content as { status: string }).status !== 'ok') throw new Error(`the setup cell failed: ${JSON.stringify(r.reply.content)}`);
    segments.push([]);
  };

  const sample = (c: number) => {
    // The kernel and its children (the type checker's process).
    const kb = treeRss(kernel.proc.pid!) / 1024;
    segments.at(-1)!.push({ cell: c, kb });
    if (s.rssMB.start === 0) s.rssMB.start = kb / 1024;
    s.rssMB.end = kb / 1024;
    s.rssMB.peak = Math.max(s.rssMB.peak, kb / 1024);
  };

  await startKernel();
  try {
    for (let c = 0; c < cells; c++) {
      if (c === restartAt && c > 0) {
        const old = kernel!;
        const exited = new Promise((r) => (old.proc.exitCode !== null ? r(null) : old.proc.once('exit', r)));
        const reply = await old.request('shutdown_request', { restart: true }, 'control', 10_000);
        if (!(reply.content as { restart?: boolean }).restart) problem('shutdown_reply did not echo restart: true');
        await Promise.race([exited, sleep(15_000)]);
        await stopKernel(old);
        await startKernel();
        s.restarts++;
        log(`restarted before cell ${c}`);
      }
      const kind = kinds[c];
      const plan = cellFor(kind, c);
      opts.verbose?.(`cell ${c}: ${kind}`);
      s.byKind[kind]++;
      const started = performance.now();
      let sawBusy = false;
      let sawLine = false;
      const onMessage = (m: Message) => {
        watch(m);
        if (m.header.msg_type === 'status') sawBusy = true;
        if (m.header.msg_type === 'stream' && text(m).includes(`@${c}.0`)) sawLine = true;
      };
      const pending = kernel!.execute(plan.code, c === 0 || c === restartAt ? timeoutMs * 3 : timeoutMs, onMessage);
      // Awaited below; a rejection meanwhile (a hang while the interrupt waits) must not end the process.
      pending.catch(() => {});
      if (plan.interrupt) {
        // Signal mode, as the kernelspec says: Jupyter sends SIGINT to the kernel process. A busy loop blocks the
        // kernel's output, so its interrupt comes at a random moment after the busy status (the cell may still be
        // in the type checker); a timer's, once the cell's first line shows it running.
        const ready = () => (plan.interrupt === 'busy' ? sawBusy : sawLine);
        // Bounded well inside the cell's timeout: a line that never comes is counted as lost, not as a hang.
        const deadline = Date.now() + Math.min(5000, timeoutMs / 4);
        while (!ready() && Date.now() < deadline) await sleep(2);
        if (plan.interrupt === 'timer') silenced.add(c);
        const [lo, hi] = opts.busyInterruptDelayMs ?? [0, 150];
        await sleep(plan.interrupt === 'busy' ? lo + delays.uniformInt(hi - lo) : 20);
        let answered = false;
        void pending.then(() => (answered = true), () => (answered = true));
        kernel!.proc.kill('SIGINT');
        s.interrupts++;
        // As a user would: press interrupt again when the first one did nothing.
        for (let k = 0; k < 5 && !answered; k++) {
          for (let t = 0; t < 100 && !answered; t++) await sleep(20);
          if (answered) break;
          s.repeatedInterrupts++;
          log(`cell ${c} (${kind}): no reply 2 s after SIGINT; sent it again`);
          kernel!.proc.kill('SIGINT');
        }
      }
      let result: { reply: Message; outputs: Message[] };
      try {
        result = await pending;
      } catch (e) {
        s.hangs++;
        problem(`cell ${c} (${kind}) hung: ${(e as Error).message}`);
        // A hung kernel is replaced, so that the run goes on and counts whatever else is wrong.
        kernel!.proc.kill('SIGKILL');
        await stopKernel(kernel!);
        await startKernel();
        continue;
      }
      const ms = performance.now() - started;
      if (!plan.interrupt) durations.push(ms);
      s.cells++;
      const checked = check(c, plan, result.reply, result.outputs);
      s.lostOutputs += checked.lost;
      s.outOfOrder += checked.outOfOrder;
      if (checked.wrongOutcome) s.wrongOutcomes++;
      for (const p of checked.problems) problem(p);
      const ename = (result.reply.content as { ename?: string }).ename;
      if (ename === 'TypeScriptError') s.errors.type++;
      else if (ename === 'OutOfMemoryError') s.errors.oom++;
      else if (ename && ename !== 'KeyboardInterrupt') s.errors.runtime++;
      sample(c);
      if ((c + 1) % 50 === 0 || c === cells - 1) log(`cell ${c + 1}/${cells}: ${kind}, ${ms.toFixed(0)} ms, rss ${s.rssMB.end.toFixed(1)} MB`);
    }
    // Timers of the last interrupted cells had time to fire: anything they printed has been counted by watch().
    await sleep(500);
  } finally {
    await stopKernel(kernel!);
  }

  // Growth: the slope after each kernel's first fifth of cells (the compiler and V8's heap still settling), for
  // kernels that ran enough cells for a slope to mean something.
  for (const seg of segments.filter((g) => g.length)) {
    const tail = seg.slice(Math.floor(seg.length / 5));
    const growth = seg.length >= MIN_GROWTH_CELLS ? slope(tail.map((p) => p.cell), tail.map((p) => p.kb)) : null;
    if (growth !== null) s.growthPerCellKB = Math.max(s.growthPerCellKB, growth);
    s.kernels.push({ cells: seg.length, startMB: round(seg[0].kb / 1024), endMB: round(seg.at(-1)!.kb / 1024), growthPerCellKB: growth === null ? null : round(growth) });
  }
  durations.sort((a, b) => a - b);
  s.cellMs = { median: durations[Math.floor(durations.length / 2)] ?? 0, max: durations.at(-1) ?? 0 };
  s.rssMB = { start: round(s.rssMB.start), end: round(s.rssMB.end), peak: round(s.rssMB.peak) };
  s.growthPerCellKB = round(s.growthPerCellKB);
  s.cellMs = { median: round(s.cellMs.median), max: round(s.cellMs.max) };
  s.seconds = round((performance.now() - t0) / 1000);
  return s;
}

const round = (x: number) => Math.round(x * 10) / 10;

/** True when the run found no loss, disorder, late output, hang or wrong outcome, and RSS stayed within maxGrowthKB per cell. */
export function soakPassed(s: SoakSummary, maxGrowthKB = Infinity): boolean {
  return s.lostOutputs === 0 && s.outOfOrder === 0 && s.lateOutputs === 0 && s.hangs === 0 && s.wrongOutcomes === 0 && s.growthPerCellKB <= maxGrowthKB;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cells: { type: 'string', default: '1000' },
      seed: { type: 'string', default: '1' },
      'cell-timeout': { type: 'string', default: '30' },
      // Measured (November 2026): about 100 KB per cell in each of two 500-cell kernels; a leak of
      // what a cell allocates shows as megabytes per cell.
      'max-growth-kb': { type: 'string', default: '200' },
      quiet: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
  });
  const maxGrowth = Number(values['max-growth-kb']);
  const summary = await soak({
    cells: Number(values.cells),
    seed: Number(values.seed),
    cellTimeoutMs: Number(values['cell-timeout']) * 1000,
    log: values.quiet ? undefined : (l) => console.error(`soak: ${l}`),
    verbose: values.verbose ? (l) => console.error(`soak: ${l}`) : undefined,
  });
  console.log(JSON.stringify(summary, null, 2));
  const ok = soakPassed(summary, maxGrowth);
  if (!ok) console.error(`soak: FAILED (see problems${summary.growthPerCellKB > maxGrowth ? `; RSS grew ${summary.growthPerCellKB} KB per cell, limit ${maxGrowth}` : ''})`);
  return ok ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) process.exitCode = await main();
