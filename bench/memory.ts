/**
 * The memory tracker against the process's resident set: layers of several formats and a decoder block, run at
 * several shapes and all kept, then the tracker's growth (tensors, and compiled sessions as the compile cache counts
 * them) is set against the resident set's growth. Run in a fresh process: one that has freed memory before reuses it
 * without growing, which would hide real allocations.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createDevice, Graph, Linear } from '../engine/index.ts';
import { makeBlock } from './block.ts';
import { randomTensor } from './random.ts';

export interface MemoryCheck {
  /** Growth of the device tracker's live bytes over the workload (tensors and compiled sessions). */
  trackerBytes: number;
  /** Growth of the process's resident set over the same workload, after garbage collection. */
  rssBytes: number;
  /** trackerBytes / rssBytes. */
  ratio: number;
  /** Growth of the tracker's live bytes by tag over the workload. */
  byTag: Record<string, number>;
  steps: number;
}

/**
 * Full garbage collections, so that freed tensors and the sessions' transient buffers leave the resident set; V8
 * releases a dead buffer's memory after the collection that finds it, so each collection is followed by a turn of
 * the event loop.
 */
export async function collectGarbage(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 2; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

/** The workload, in this process; null where sessions do not live in host memory (webgpu, reference). */
export async function memoryVsRss(kind: string, quick: boolean): Promise<MemoryCheck | null> {
  const dev = await createDevice(kind);
  try {
    if (!dev.backend.measuresHostMemory) return null;
    // onnxruntime's one-time start (about 25 MB) comes before the baseline: no device counts it.
    const warm = new Graph('start');
    warm.output(warm.op('Add', [warm.input('x', 'fp32', [1]), warm.input('y', 'fp32', [1])])[0]);
    await dev.run(warm, [dev.tensor([1], [1]), dev.tensor([2], [1])]);
    const S = quick ? 1024 : 2048;
    // The weights' source values are the benchmark's data, not the engine's: made before the baseline.
    const src = randomTensor(dev, [S, S], 11);
    await collectGarbage();
    const rss0 = process.memoryUsage.rss();
    const live0 = dev.memory.live;
    const byTag0 = { ...dev.memory.liveByTag() } as Record<string, number>;
    const keep: { dispose(): void }[] = [];
    let steps = 0;
    for (const format of ['fp32', 'fp16', 'int8', 'int4'] as const) {
      const lin = await Linear.fromWeights(dev, src, { format, label: `memory.${format}` });
      keep.push(lin);
      for (const shape of quick ? [[1, S], [32, S], [2, 16, S]] : [[1, S], [16, S], [128, S], [4, 64, S]]) {
        const x = randomTensor(dev, shape, steps++);
        const xs = format === 'fp16' ? dev.tensor(x.toFloat32(), shape, 'fp16') : x;
        (await lin.forward(xs)).dispose();
        if (xs !== x) xs.dispose();
        x.dispose();
      }
    }
    const H = quick ? 256 : 512;
    const block = await makeBlock(dev, { hidden: H, heads: 8, mlp: ['int8', 'int4'] });
    keep.push(block);
    const g = block.build('batch', 'seq');
    for (const [b, s] of [[1, 1], [4, 64]]) {
      const x = randomTensor(dev, [b, s, H], steps++);
      (await dev.run(g, [x]))[0].dispose();
      x.dispose();
    }
    await collectGarbage();
    const trackerBytes = dev.memory.live - live0;
    const rssBytes = process.memoryUsage.rss() - rss0;
    const byTag = Object.fromEntries(Object.entries(dev.memory.liveByTag()).map(([t, b]) => [t, b - byTag0[t]]));
    for (const k of keep) k.dispose();
    src.dispose();
    return { trackerBytes, rssBytes, ratio: trackerBytes / rssBytes, byTag, steps };
  } finally {
    await dev.dispose();
  }
}

const self = fileURLToPath(import.meta.url);

/** The workload in a child process (node with tsx's loader), its result read from the child's stdout as JSON. */
export function memoryInFreshProcess(kind: string, quick: boolean): Promise<MemoryCheck | null> {
  return inFreshProcess<MemoryCheck | null>(self, [kind, quick ? 'quick' : 'full'], FREED_MEMORY_RETURNS);
}

/**
 * glibc raises its mmap threshold to the size of each large block freed, and keeps later blocks of that size in its
 * heap after they are freed: buffers already dropped (lowering's temporaries, onnxruntime-node's copies of outputs)
 * would stay resident as memory the allocator holds but nothing uses. With the threshold fixed, freed blocks go back
 * to the system, and the resident set is what is in use.
 */
export const FREED_MEMORY_RETURNS = { MALLOC_MMAP_THRESHOLD_: String(128 * 1024) };

/**
 * V8's young generation at its full size from the start (16 MiB semi-spaces, its default limit on 64-bit): it grows
 * with the allocation rate, and 16 MiB of growth landing inside the measured window or before it moved the tracker's
 * share of the resident growth between 89% and 97.5% from one run to the next; fixed, 97.3-98.7%.
 */
export const FIXED_YOUNG_GENERATION = ['--min-semi-space-size=16', '--max-semi-space-size=16'];

/** Runs `script` (a module that prints one JSON line last) in a fresh node process with tsx's loader. */
export function inFreshProcess<T>(script: string, args: string[], env: Record<string, string> = {}): Promise<T> {
  return new Promise((done, fail) => {
    // --expose-gc: the compile cache then measures each session from a collected heap (engine/device/compile_cache.ts).
    const child = spawn(process.execPath, ['--expose-gc', ...FIXED_YOUNG_GENERATION, '--import', import.meta.resolve('tsx'), script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', fail);
    child.on('close', (code) => {
      if (code !== 0) return fail(new Error(`${script} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      try {
        done(JSON.parse(out.trim().split('\n').pop()!) as T);
      } catch (e) {
        fail(new Error(`${script} printed no result: ${(e as Error).message}; ${err.trim().split('\n').slice(-3).join(' | ')}`));
      }
    });
  });
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const [kind = 'cpu', mode = 'quick'] = process.argv.slice(2);
  process.stdout.write(`${JSON.stringify(await memoryVsRss(kind, mode === 'quick'))}\n`);
}
