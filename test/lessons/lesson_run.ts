/** One lesson's code cells run in order through the real kernel, with helpers to read what they displayed: shared by the lesson tests. */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { expect } from 'vitest';
import { parseLesson } from '../../kernel/lesson/parse.ts';
import type { Message } from '../../kernel/protocol/message.ts';
import { TestClient } from '../kernel/client.ts';

export const PLOTLY = 'application/vnd.plotly.v1+json';

export type Data = Record<string, unknown>;
export interface Trace {
  name?: string;
  x?: unknown[];
  y?: unknown[];
}

/** What one code cell of the lesson's first run left behind. */
export interface RanCell {
  line: number;
  kind: string;
  source: string;
  outputs: Message[];
  ms: number;
}

export const displays = (ms: Message[]) => ms.filter((m) => m.header.msg_type === 'display_data');
export const updates = (ms: Message[]) => ms.filter((m) => m.header.msg_type === 'update_display_data');
export const dataOf = (m: Message) => m.content.data as Data;
export const plotTitle = (d: Data) => ((d[PLOTLY] as { layout: { title?: { text?: string } } }).layout.title?.text ?? '');
export const tracesOf = (d: Data) => (d[PLOTLY] as { data: Trace[] }).data;
export const markdownOf = (ms: Message[]) =>
  ms
    .filter((m) => m.header.msg_type === 'display_data' || m.header.msg_type === 'execute_result')
    .map((m) => String(dataOf(m)['text/markdown'] ?? ''))
    .join('\n');
/** The results a lesson's checks displayed: { check, ok } from their metadata, and the markdown they showed. */
export const feedbackOf = (ms: Message[]) =>
  displays(ms)
    .filter((m) => (m.content.metadata as { servelab?: { check?: string } }).servelab?.check)
    .map((m) => ({ ...(m.content.metadata as { servelab: { check: string; ok: boolean } }).servelab, text: String(dataOf(m)['text/markdown']) }));

/** The traceback of the first error among `outputs`, or '' when there is none. */
const tracebackOf = (outputs: Message[]) => {
  const err = outputs.find((m) => m.header.msg_type === 'error');
  return err ? (err.content.traceback as string[]).join('\n') : '';
};

/**
 * A lesson run through its own kernel. The caller starts and stops `client` (in beforeAll / afterAll),
 * calls `runAll()` once in its first test, and reads `ran` in the tests after it.
 */
/** The reference solutions of a lesson's solutions file (```ts solution <id> blocks), by exercise id. */
export function solutionsOf(file: string): Record<string, string> {
  return Object.fromEntries([...readFileSync(file, 'utf8').matchAll(/```ts solution (\w+)\n([\s\S]*?)```/g)].map((m) => [m[1], m[2]]));
}

export function lessonRun(file: string) {
  const cells = parseLesson(readFileSync(file, 'utf8'), file).cells.filter((c) => c.kind !== 'markdown');
  const client = new TestClient();
  const ran: RanCell[] = [];

  /** Runs `code` in the kernel, expecting it to succeed (the traceback is the failure message). */
  async function run(code: string): Promise<Message[]> {
    const { reply, outputs } = await client.execute(code, 120_000);
    expect(reply.content.status, tracebackOf(outputs)).toBe('ok');
    return outputs;
  }

  /** The value of a JSON-serializable expression, evaluated in the kernel. */
  async function value(expr: string): Promise<unknown> {
    const out = await run(`console.log(JSON.stringify(${expr}))`);
    return JSON.parse(out.filter((m) => m.header.msg_type === 'stream').map((m) => String(m.content.text)).join(''));
  }

  /** The plot with this title, among every output of the lesson's first run. */
  function figure(title: string | RegExp): Data {
    const all = ran.flatMap((r) => displays(r.outputs)).map(dataOf).filter((d) => d[PLOTLY]);
    const found = all.find((d) => (typeof title === 'string' ? plotTitle(d) === title : title.test(plotTitle(d))));
    expect(found, `a plot titled ${String(title)} among: ${all.map(plotTitle).join(' | ')}`).toBeDefined();
    return found!;
  }

  /** Outputs of the first code cell that contains `marker`. */
  const outputsOf = (marker: string) => ran.find((r) => r.source.includes(marker))!.outputs;

  /** The final state of the live chart whose title matches, and how many updates it published. */
  function liveChart(title: RegExp): { traces: Trace[]; text: string; updates: number } {
    const all = ran.flatMap((r) => r.outputs);
    const first = displays(all).find((m) => (m.content.transient as { display_id?: string } | undefined)?.display_id && dataOf(m)[PLOTLY] && title.test(plotTitle(dataOf(m))));
    expect(first, `a live chart titled ${String(title)}`).toBeDefined();
    const id = (first!.content.transient as { display_id: string }).display_id;
    const ups = updates(all).filter((u) => (u.content.transient as { display_id: string }).display_id === id);
    const last = dataOf(ups.at(-1) ?? first!);
    return { traces: tracesOf(last), text: String(last['text/plain']), updates: ups.length };
  }

  /** Runs every code cell in order, expecting each to succeed, records its outputs in `ran`, and logs the timings. */
  async function runAll(): Promise<void> {
    const t0 = performance.now();
    for (const c of cells) {
      const t = performance.now();
      const { reply, outputs } = await client.execute(c.source, 120_000);
      ran.push({ line: c.line, kind: c.kind, source: c.source, outputs, ms: performance.now() - t });
      expect(reply.content.status, `${file}:${c.line}\n${tracebackOf(outputs)}`).toBe('ok');
    }
    const total = (performance.now() - t0) / 1000;
    const device = await value('dev.toString()');
    // Reported, not asserted: time limits belong to benchmarks, and this machine is shared.
    const slowest = [...ran].sort((a, b) => b.ms - a.ms).slice(0, 4).map((r) => `line ${r.line}: ${(r.ms / 1000).toFixed(1)} s`);
    const name = `lesson ${basename(file).split('-')[0]}`;
    console.log(`${name} on ${device}: ${cells.length} code cells in ${total.toFixed(1)} s (slowest: ${slowest.join(', ')})`);
  }

  /** An exercise's check feedback as the lesson's run showed it (the starter code), then after `solution` ran. */
  async function exercise(id: string, solution: string): Promise<{ starter: ReturnType<typeof feedbackOf>; solved: ReturnType<typeof feedbackOf> }> {
    const checkCell = cells.find((c) => c.kind === 'check' && c.id === id)!;
    const starter = feedbackOf(ran.find((c) => c.kind === 'check' && c.source === checkCell.source)!.outputs);
    await run(solution);
    return { starter, solved: feedbackOf(await run(checkCell.source)) };
  }

  return { cells, ran, client, run, value, figure, outputsOf, liveChart, runAll, exercise };
}
