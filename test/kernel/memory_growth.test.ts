/**
 * The kernel's footprint over a long notebook: hundreds of small cells through the real kernel, its resident set
 * and its type checker's process sampled as they run: it stays flat after warm-up (a checker that kept a file per cell
 * or left each cell's program behind grew by about 1.4 MB a cell).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { growthCell, slope } from '../../bench/kernel.ts';
import { treeRss } from '../../kernel/client/process_tree.ts';
import { TestClient } from './client.ts';

const CELLS = 600;
const EVERY = 30;
/**
 * Cells before the resident set is judged: the old generation and the allocator's arenas find their working size over
 * the first few hundred cells (about 50 MB here), then stay there.
 */
const WARM_UP = 300;
/** MB a cell: above the 0.1 MB goal, for a noisy shared machine; far below the 1.4 MB leak it guards against. */
const BOUND_MB_PER_CELL = 0.25;

/** part -> MiB and count, from lab.kernelMemory() run in a cell. */
async function kernelMemory(k: TestClient): Promise<Map<string, { MiB: number | null; count: number | null }>> {
  const { reply, outputs } = await k.execute('console.log(JSON.stringify(lab.kernelMemory().rows))');
  expect(reply.content.status).toBe('ok');
  const text = outputs.filter((m) => m.header.msg_type === 'stream').map((m) => m.content.text).join('');
  const rows = JSON.parse(text) as [string, number | null, number | null][];
  return new Map(rows.map(([part, MiB, count]) => [part.trim(), { MiB, count }]));
}

describe('kernel memory over a long notebook', () => {
  const k = new TestClient();
  beforeAll(() => k.start(), 60_000);
  afterAll(() => k.stop(), 30_000);

  it(`grows by under ${BOUND_MB_PER_CELL} MB a cell over ${CELLS} small cells after ${WARM_UP} of warm-up, and keeps no per-cell checker files`, async () => {
    const points: { cells: number; mb: number }[] = [];
    let warm: Map<string, { MiB: number | null; count: number | null }> | null = null;
    for (let i = 0; i < CELLS; i++) {
      const { reply } = await k.execute(growthCell(i));
      expect(reply.content.status, growthCell(i)).toBe('ok');
      if ((i + 1) % EVERY === 0) points.push({ cells: i + 1, mb: treeRss(k.proc.pid!) / 1e6 });
      if (i === 2 * EVERY) warm = await kernelMemory(k);
    }
    const end = await kernelMemory(k);
    // Deterministic: seven names redeclared over and over keep at most seven earlier cells in the checker's program,
    // which holds no more files than it did after warm-up.
    expect(end.get('type checker: earlier cells')!.count).toBeLessThanOrEqual(7);
    expect(end.get('type checker (tsgo process)')!.count).toBe(warm!.get('type checker (tsgo process)')!.count);
    expect(end.get('source maps')!.count).toBe(CELLS + 2);
    // Statistical: after warm-up the resident set is flat.
    const perCell = slope(points.filter((p) => p.cells >= WARM_UP));
    expect(perCell, `RSS samples (MB): ${points.map((p) => `${p.cells}:${p.mb.toFixed(0)}`).join(' ')}`).toBeLessThan(BOUND_MB_PER_CELL);
  }, 900_000);
});
