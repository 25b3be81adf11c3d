/**
 * Device selection: SERVELAB_DEVICE=auto|cpu|webgpu|reference. auto takes a WebGPU adapter when one works and is a
 * GPU; a software adapter (lavapipe, SwiftShader: the GPU API on the CPU, correct but slower than the cpu backend) only
 * when asked for by name.
 */
import { BACKENDS, type Backend, type BackendName } from '../backends/backend.ts';
import { OrtBackend } from '../backends/ort.ts';
import { ReferenceBackend } from '../backends/reference/reference.ts';
import { Device, type DeviceOptions } from './device.ts';
import { DeviceError } from '../errors.ts';
import { probeWebgpu } from './webgpu_probe.ts';
import { adapterInfo } from './adapter.ts';

export type DeviceKind = BackendName | 'auto';
const KINDS: readonly DeviceKind[] = ['auto', ...BACKENDS];

export function parseDeviceKind(s: string): DeviceKind {
  const k = s.trim().toLowerCase();
  if (!(KINDS as readonly string[]).includes(k)) throw new DeviceError(`unknown device '${s}'; expected one of ${KINDS.join(', ')}`);
  return k as DeviceKind;
}

function makeBackend(kind: BackendName, threads?: number): Backend {
  if (kind === 'reference') return new ReferenceBackend();
  return new OrtBackend(kind, threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {});
}

let webgpuProbe: Promise<string | null> | null = null;

/**
 * Null when onnxruntime's WebGPU provider runs a kernel here; otherwise why it does not. Probed once per process,
 * in a child process (webgpu_probe.ts), so that a machine without a GPU adapter hears it from us in one line.
 */
export function webgpuUnavailable(): Promise<string | null> {
  webgpuProbe ??= probeWebgpu();
  return webgpuProbe;
}

let autoChoice: Promise<{ kind: 'webgpu' | 'cpu'; why: string | null }> | null = null;

/** What auto picks here, and why not webgpu when it does not: no working adapter, or a software one. */
export function autoDevice(): Promise<{ kind: 'webgpu' | 'cpu'; why: string | null }> {
  autoChoice ??= (async () => {
    const why = await webgpuUnavailable();
    if (why !== null) return { kind: 'cpu' as const, why };
    const a = adapterInfo();
    if (a?.software) return { kind: 'cpu' as const, why: `the WebGPU adapter, ${a.name}, is a software one (the GPU API run on the CPU: slower than the cpu backend); SERVELAB_DEVICE=webgpu uses it anyway` };
    return { kind: 'webgpu' as const, why: null };
  })();
  return autoChoice;
}

const created: Record<string, number> = {};

/**
 * A new device with its own memory tracker. `auto` picks webgpu when a GPU adapter works, else cpu;
 * asking for webgpu where none works is an error that says why. `threads` caps onnxruntime's threads per run
 * (default: one per core), for several devices sharing one machine's cores (engine/parallel).
 */
export async function createDevice(kind: DeviceKind | string = process.env.SERVELAB_DEVICE ?? 'auto', opts: DeviceOptions & { name?: string; threads?: number } = {}): Promise<Device> {
  let k = parseDeviceKind(kind);
  if (k === 'auto') k = (await autoDevice()).kind;
  if (k === 'webgpu') {
    const why = await webgpuUnavailable();
    if (why !== null) throw new DeviceError(`webgpu is not available: ${why}`);
  }
  const n = (created[k] = (created[k] ?? 0) + 1);
  return new Device(opts.name ?? (n === 1 ? k : `${k}:${n - 1}`), makeBackend(k, opts.threads), opts);
}

let defaultDevice: Promise<Device> | null = null;

/** The process-wide default device, chosen by SERVELAB_DEVICE (default auto). */
export function getDevice(): Promise<Device> {
  defaultDevice ??= createDevice();
  return defaultDevice;
}
