/** Executes a notebook's code cells in order through a runner, keeping going past a failing cell. */
import { applyIOPub, type Output } from './outputs.ts';
import type { CellRunner } from './runners.ts';

export interface NotebookCell {
  cell_type: 'code' | 'markdown' | 'raw';
  id?: string;
  source: string | string[];
  metadata: Record<string, unknown>;
  outputs?: Output[];
  execution_count?: number | null;
}

export interface Notebook {
  nbformat: number;
  nbformat_minor: number;
  metadata: Record<string, unknown>;
  cells: NotebookCell[];
}

export interface Execution {
  notebook: Notebook;
  failed: { index: number; ename: string; evalue: string }[];
  seconds: number;
}

export const sourceOf = (c: NotebookCell) => (Array.isArray(c.source) ? c.source.join('') : c.source);

export async function executeNotebook(nb: Notebook, runner: CellRunner, onProgress: (done: number, total: number) => void = () => {}): Promise<Execution> {
  const t0 = performance.now();
  const out: Notebook = structuredClone(nb);
  const code = out.cells.filter((c) => c.cell_type === 'code');
  const displays = new Map<string, Output[]>();
  const failed: Execution['failed'] = [];
  let done = 0;
  onProgress(0, code.length);
  for (const cell of out.cells) {
    if (cell.cell_type !== 'code') continue;
    const outputs: Output[] = [];
    const clear = { wait: false };
    const reply = await runner.run(sourceOf(cell), (m) => applyIOPub(outputs, m as never, displays, clear));
    cell.outputs = outputs;
    cell.execution_count = reply.executionCount;
    if (reply.status !== 'ok') {
      const err = outputs.find((o) => o.output_type === 'error');
      failed.push({ index: out.cells.indexOf(cell), ename: err?.output_type === 'error' ? err.ename : reply.status, evalue: err?.output_type === 'error' ? err.evalue : '' });
    }
    onProgress(++done, code.length);
  }
  return { notebook: out, failed, seconds: (performance.now() - t0) / 1000 };
}
