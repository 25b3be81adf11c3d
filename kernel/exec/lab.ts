/**
 * `lab`, the running cell's handle: its AbortSignal, the kernel's comms and the kernel's memory. Apart from the other
 * cell globals, so that the type checker reads this small module for it, not the engine the display helpers import.
 */
import { sink, hasSink } from '../display/sink.ts';
import { kernelMemory } from './memory.ts';
import type { CommRegistry } from '../comm.ts';

let comms: CommRegistry | null = null;

/** The kernel hands its comm registry over once it exists. */
export function attachComms(registry: CommRegistry): void {
  comms = registry;
}

/**
 * `lab.signal` aborts when the user interrupts, so long experiments can stop; `lab.comms.registerTarget(name,
 * (comm, data) => ...)` answers comms a frontend opens; `lab.kernelMemory()` shows where the kernel's memory goes.
 */
export const lab = {
  get signal(): AbortSignal {
    return hasSink() ? sink().signal : new AbortController().signal;
  },
  get comms(): CommRegistry {
    if (!comms) throw new Error('lab.comms exists inside a running kernel only');
    return comms;
  },
  /** Where the kernel's memory goes: the process, the V8 heap by space, and what the kernel keeps per cell. */
  kernelMemory,
};
