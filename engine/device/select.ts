/** Device selection: SERVELAB_DEVICE=auto|cpu|webgpu|reference, with auto taking a WebGPU adapter when one works. */
import { BACKENDS, type Backend, type BackendName } from '../backends/backend.ts';
import { OrtBackend } from '../backends/ort.ts';
import { ReferenceBackend } from '../backends/reference/reference.ts';
import { Device, type DeviceOptions } from './device.ts';
import { DeviceError } from '../errors.ts';
import { Graph } from '../graph/graph.ts';

export type DeviceKind = BackendName | 'auto';
const KINDS: readonly DeviceKind[] = ['auto', ...BACKENDS];

export function parseDeviceKind(s: string): DeviceKind {
  const k = s.trim().toLowerCase();
  if (!(KINDS as readonly string[]).includes(k)) throw new DeviceError(`unknown device '${s}'; expected one of ${KINDS.join(', ')}`);
  return k as DeviceKind;
}

function makeBackend(kind: BackendName): Backend {
  return kind === 'reference' ? new ReferenceBackend() : new OrtBackend(kind);
}

let webgpuProbe: Promise<string | null> | null = null;

/** Null when onnxruntime's WebGPU provider runs a kernel here; otherwise why it does not. Probed once per process. */
export function webgpuUnavailable(): Promise<string | null> {
  webgpuProbe ??= (async () => {
    const dev = new Device('probe', new OrtBackend('webgpu'));
    try {
      const g = new Graph('probe');
      const x = g.input('x', 'fp32', [1, 4]);
      g.output(g.op('Add', [x, x])[0]);
      const [y] = await dev.run(g, [dev.tensor([1, 2, 3, 4], [1, 4])]);
      return y.toArray()[3] === 8 ? null : 'the WebGPU provider computed a wrong result';
    } catch (e) {
      const msg = (e as Error).message;
      const adapter = /Failed to get a WebGPU adapter[^\n]*/.exec(msg)?.[0];
      return adapter ? `${adapter.trim()} (without a GPU: run scripts/webgpu-deps.sh, then . .cache/vulkan/env.sh before node)` : msg;
    } finally {
      await dev.dispose();
    }
  })();
  return webgpuProbe;
}

const created: Record<string, number> = {};

/**
 * A new device with its own memory tracker. `auto` picks webgpu when an adapter works, else cpu;
 * asking for webgpu where none works is an error that says why.
 */
export async function createDevice(kind: DeviceKind | string = process.env.SERVELAB_DEVICE ?? 'auto', opts: DeviceOptions & { name?: string } = {}): Promise<Device> {
  let k = parseDeviceKind(kind);
  if (k === 'auto') k = (await webgpuUnavailable()) === null ? 'webgpu' : 'cpu';
  if (k === 'webgpu') {
    const why = await webgpuUnavailable();
    if (why !== null) throw new DeviceError(`webgpu is not available: ${why}`);
  }
  const n = (created[k] = (created[k] ?? 0) + 1);
  return new Device(opts.name ?? (n === 1 ? k : `${k}:${n - 1}`), makeBackend(k), opts);
}

let defaultDevice: Promise<Device> | null = null;

/** The process-wide default device, chosen by SERVELAB_DEVICE (default auto). */
export function getDevice(): Promise<Device> {
  defaultDevice ??= createDevice();
  return defaultDevice;
}
