/** IOPub messages of one execution -> nbformat 4 outputs, as a notebook frontend would keep them. */
import type { Message } from '../protocol/message.ts';

export type Output =
  | { output_type: 'stream'; name: 'stdout' | 'stderr'; text: string }
  | { output_type: 'display_data'; data: Record<string, unknown>; metadata: Record<string, unknown> }
  | { output_type: 'execute_result'; data: Record<string, unknown>; metadata: Record<string, unknown>; execution_count: number | null }
  | { output_type: 'error'; ename: string; evalue: string; traceback: string[] };

/**
 * Applies one message to a cell's outputs. `displays` maps display ids to the outputs showing them, across
 * cells: update_display_data may update an output of an earlier cell.
 */
export function applyIOPub(outputs: Output[], m: Message, displays: Map<string, Output[]>, pendingClear: { wait: boolean }): void {
  const c = m.content as Record<string, unknown>;
  const type = m.header.msg_type;
  if (pendingClear.wait && ['stream', 'display_data', 'execute_result', 'error'].includes(type)) {
    outputs.length = 0;
    pendingClear.wait = false;
  }
  switch (type) {
    case 'stream': {
      const last = outputs[outputs.length - 1];
      if (last?.output_type === 'stream' && last.name === c.name) last.text += String(c.text);
      else outputs.push({ output_type: 'stream', name: c.name as 'stdout' | 'stderr', text: String(c.text) });
      break;
    }
    case 'display_data': {
      const o: Output = { output_type: 'display_data', data: (c.data as Record<string, unknown>) ?? {}, metadata: (c.metadata as Record<string, unknown>) ?? {} };
      outputs.push(o);
      const id = (c.transient as { display_id?: string } | undefined)?.display_id;
      if (id) displays.set(id, [...(displays.get(id) ?? []), o]);
      break;
    }
    case 'update_display_data': {
      const id = (c.transient as { display_id?: string } | undefined)?.display_id;
      for (const o of (id && displays.get(id)) || []) {
        if (o.output_type === 'display_data') {
          o.data = (c.data as Record<string, unknown>) ?? {};
          o.metadata = (c.metadata as Record<string, unknown>) ?? {};
        }
      }
      break;
    }
    case 'execute_result':
      outputs.push({ output_type: 'execute_result', data: (c.data as Record<string, unknown>) ?? {}, metadata: (c.metadata as Record<string, unknown>) ?? {}, execution_count: (c.execution_count as number) ?? null });
      break;
    case 'error':
      outputs.push({ output_type: 'error', ename: String(c.ename), evalue: String(c.evalue), traceback: (c.traceback as string[]) ?? [] });
      break;
    case 'clear_output':
      if (c.wait) pendingClear.wait = true;
      else outputs.length = 0;
      break;
  }
}
