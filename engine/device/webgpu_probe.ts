/**
 * Whether onnxruntime's WebGPU provider works here, asked without letting Dawn (its WebGPU implementation) write
 * to this process's stderr: where no adapter exists, Dawn prints native warnings with C++ source paths ("Couldn't
 * load Vulkan: libvulkan.so.1 ...", "vkCreateInstance: Found no drivers!") that no JavaScript can intercept.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { lowerGraph } from '../backends/onnx/lower.ts';
import { Graph } from '../graph/graph.ts';

const NO_GPU_HINT = 'without a GPU: run scripts/webgpu-deps.sh, then . .cache/vulkan/env.sh before node';
/** A software adapter compiles its first shaders with LLVM: seconds, not minutes. */
const PROBE_TIMEOUT_MS = 60_000;

/**
 * Dawn reaches a GPU on Linux only through the Vulkan loader. Without one there is nothing to probe, and no reason to
 * start Dawn at all. Null when the loader can be loaded, or elsewhere than Linux.
 */
export function vulkanLoaderMissing(): string | null {
  if (process.platform !== 'linux') return null;
  try {
    // process.dlopen searches LD_LIBRARY_PATH, ld.so.cache and the system folders as Dawn's dlopen does. A library
    // that loads but is no Node addon fails afterwards, with another message.
    process.dlopen({ exports: {} }, 'libvulkan.so.1');
  } catch (e) {
    if (/cannot open shared object file/.test((e as Error).message)) {
      return `no Vulkan loader (libvulkan.so.1) on this machine, so no GPU adapter (with a GPU, install its driver's Vulkan support; ${NO_GPU_HINT})`;
    }
  }
  return null;
}

// Plain CommonJS, so the child starts in about 0.1 s: onnxruntime and one session, no TypeScript and no engine.
const CHILD = `
const [ortPath, model, input, output] = process.argv.slice(1);
const ort = require(ortPath);
(async () => {
  try {
    const s = await ort.InferenceSession.create(Buffer.from(model, 'base64'), { executionProviders: ['webgpu'], logSeverityLevel: 3 });
    const r = await s.run({ [input]: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [1, 4]) });
    process.stdout.write(JSON.stringify({ y3: r[output].data[3] }));
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e && e.message || e) }));
  }
})();
`;

/** Dawn's own messages among a child's stderr, without the C++ locations that follow them. */
export function dawnMessages(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => /^Warning: (.*)$/.exec(l.trim())?.[1].trim())
    .filter((m): m is string => !!m);
}

/** Null when the WebGPU provider computes x + x correctly in a child process; otherwise why it does not. */
export async function probeWebgpu(): Promise<string | null> {
  const noLoader = vulkanLoaderMissing();
  if (noLoader) return noLoader;
  const g = new Graph('probe');
  const x = g.input('x', 'fp32', [1, 4]);
  g.output(g.op('Add', [x, x])[0]);
  const lowered = lowerGraph(g, { nativeFp16: true, u8s8Saturates: false });
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  const args = ['-e', CHILD, ortPath, Buffer.from(lowered.bytes).toString('base64'), lowered.inputNames[0], lowered.outputNames[0]];
  const { stdout, stderr, failure } = await new Promise<{ stdout: string; stderr: string; failure: string | null }>((resolve) => {
    execFile(process.execPath, args, { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const e = err as (Error & { killed?: boolean; signal?: string | null; code?: number | null }) | null;
      const failure = !e ? null : e.killed ? `the WebGPU probe did not finish in ${PROBE_TIMEOUT_MS / 1000} s` : `the WebGPU probe ended with ${e.signal ? `signal ${e.signal}` : `exit code ${e.code}`}`;
      resolve({ stdout, stderr, failure });
    });
  });
  const dawn = dawnMessages(stderr);
  const said = dawn.length ? ` (Dawn: ${dawn.slice(0, 2).join('; ')})` : '';
  let result: { y3?: number; error?: string } = {};
  try {
    result = JSON.parse(stdout) as typeof result;
  } catch {
    return `${failure ?? 'the WebGPU probe printed no result'}${said}`;
  }
  if (result.error !== undefined) {
    const adapter = /Failed to get a WebGPU adapter[^\n]*/.exec(result.error)?.[0];
    return adapter ? `${adapter.trim()}${said} (${NO_GPU_HINT})` : `${result.error}${said}`;
  }
  return result.y3 === 8 ? null : 'the WebGPU provider computed a wrong result';
}
