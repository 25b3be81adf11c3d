/**
 * Optimizer states on disk between steps (ZeRO-Infinity, Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU
 * Memory Wall for Extreme Scale Deep Learning": the NVMe tier; DeepSpeed's offload_optimizer { device: 'nvme' }).
 * Host memory then holds the fp32 master, m and v only while the update runs; each step reads them all and writes
 * them all, 12 bytes per param in mixed precision.
 */
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ServelabError } from '../errors.ts';
import type { Tensor } from '../tensor/tensor.ts';

/** Bytes moved by a spill file: written after an update, read back for the next. */
export interface SpillStats {
  writtenBytes: number;
  readBytes: number;
}

/**
 * Optimizer states kept in a file between steps (DeepSpeed's offload_optimizer device 'nvme'): per param its fp32
 * master (when it has one), m and v, at fixed offsets. A save writes a new file and renames it over the old one, so
 * the file always holds the states of one whole step.
 */
export class StateSpill {
  readonly path: string;
  private readonly tmp: string;
  /** Byte offset of each param's states; each state is numel * 4 bytes. */
  private readonly offsets: number[];
  readonly bytes: number;

  private constructor(
    dir: string,
    numel: readonly number[],
    hasMaster: boolean,
  ) {
    this.path = join(dir, 'optimizer_states.bin');
    this.tmp = `${this.path}.tmp`;
    let off = 0;
    this.offsets = numel.map((k) => {
      const at = off;
      off += (hasMaster ? 3 : 2) * 4 * k;
      return at;
    });
    this.bytes = off;
  }

  /** A spill in `dir` (made if missing), checked writable now (a file is created there), so a bad directory fails before training. */
  static async create(dir: string, numel: readonly number[], hasMaster: boolean): Promise<StateSpill> {
    if (typeof dir !== 'string' || dir === '') throw new ServelabError(`offload: spill must be a directory path, got ${JSON.stringify(dir)}`);
    const s = new StateSpill(dir, numel, hasMaster);
    let fh: FileHandle | null = null;
    try {
      await mkdir(dir, { recursive: true });
      fh = await open(s.tmp, 'w');
    } catch (e) {
      throw new ServelabError(`offload: cannot write optimizer states to the spill directory '${dir}': ${(e as Error).message}`);
    } finally {
      await fh?.close();
    }
    await rm(s.tmp, { force: true });
    return s;
  }

  /** Writes every param's states (tensors in [master?, m, v] order per param) and makes them the file's content. */
  async save(states: readonly (readonly Tensor[])[], stats: SpillStats): Promise<void> {
    const fh = await open(this.tmp, 'w');
    try {
      for (let i = 0; i < states.length; i++) {
        let at = this.offsets[i];
        for (const t of states[i]) {
          const d = t.data as Float32Array;
          await fh.write(d, 0, d.byteLength, at);
          at += d.byteLength;
          stats.writtenBytes += d.byteLength;
        }
      }
    } finally {
      await fh.close();
    }
    await rename(this.tmp, this.path);
  }

  /** Reads every param's states into the given tensors (fp32 host tensors, same order as save). */
  async load(states: readonly (readonly Tensor[])[], stats: SpillStats): Promise<void> {
    const fh = await open(this.path, 'r');
    try {
      for (let i = 0; i < states.length; i++) {
        let at = this.offsets[i];
        for (const t of states[i]) {
          const d = t.data as Float32Array;
          const { bytesRead } = await fh.read(d, 0, d.byteLength, at);
          if (bytesRead !== d.byteLength) throw new ServelabError(`offload: the spill file ${this.path} is truncated at param ${i}`);
          t.touch();
          at += d.byteLength;
          stats.readBytes += d.byteLength;
        }
      }
    } finally {
      await fh.close();
    }
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
    await rm(this.tmp, { force: true });
  }
}
