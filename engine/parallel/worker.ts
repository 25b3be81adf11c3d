/**
 * One worker of a group (engine/parallel/group.ts), in its own thread: its own engine device with its own memory
 * tracker and budget, a Comm over the group's shared memory, and a state that lasts between runs. It runs what the
 * main thread asks: `fn(ctx, args)` of a task module. A task that throws stops the whole group at once (the abort
 * word), so that the other workers' collectives fail instead of waiting for it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createDevice } from '../device/select.ts';
import type { Device } from '../device/device.ts';
import { Comm } from './comm.ts';
import { abortGroup, channel, commWords, writeMemory, type GroupMemory } from './layout.ts';
import { fileURLToPath } from 'node:url';
import { moduleUrl } from '../../load/compiled.mjs';

export interface WorkerContext {
  rank: number;
  size: number;
  dev: Device;
  comm: Comm;
  /** Kept between runs on this worker (parameters, optimizer state). */
  state: Map<string, unknown>;
}

/** What a task module exports: functions of the worker's context and the arguments the main thread passed. */
export type Task<A = unknown, R = unknown> = (ctx: WorkerContext, args: A) => Promise<R> | R;

export interface WorkerInit {
  rank: number;
  memory: GroupMemory;
  device: string;
  budget: number | null;
  threads: number;
}

export type ToWorker = { type: 'run'; id: number; module: string; fn: string; args: unknown };
export type FromWorker =
  | { type: 'ready'; device: string }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; error: { name: string; message: string; stack?: string } };

async function serve(init: WorkerInit): Promise<void> {
  const port = parentPort!;
  const { rank, memory } = init;
  const dev = await createDevice(init.device, { budget: init.budget, name: `worker ${rank}`, threads: init.threads });
  const sync = () => writeMemory(memory, rank, dev.memory);
  dev.memory.subscribe(sync, { intervalMs: 1 });
  const comm = new Comm(
    rank,
    memory.size,
    Array.from({ length: memory.size }, (_, d) => (d === rank ? null : channel(memory, rank, d))),
    Array.from({ length: memory.size }, (_, s) => (s === rank ? null : channel(memory, s, rank))),
    commWords(memory, rank),
  );
  const ctx: WorkerContext = { rank, size: memory.size, dev, comm, state: new Map() };
  port.on('message', async (m: ToWorker) => {
    try {
      // A task module named by its source's file URL runs as the worker's other modules do (load/compiled.mjs).
      const mod = (await import(m.module.startsWith('file:') ? await moduleUrl(fileURLToPath(m.module)) : m.module)) as Record<string, unknown>;
      const fn = mod[m.fn];
      if (typeof fn !== 'function') throw new TypeError(`${m.module} has no exported function ${m.fn}`);
      const value = await (fn as Task)(ctx, m.args);
      sync();
      port.postMessage({ type: 'result', id: m.id, value } satisfies FromWorker);
    } catch (e) {
      abortGroup(memory);
      sync();
      const err = e instanceof Error ? e : new Error(String(e));
      port.postMessage({ type: 'error', id: m.id, error: { name: err.name, message: err.message, stack: err.stack } } satisfies FromWorker);
    }
  });
  port.postMessage({ type: 'ready', device: dev.name } satisfies FromWorker);
}

await serve(workerData as WorkerInit);
