/** The GPU adapter behind the WebGPU provider, read from the Vulkan loader (vulkaninfo) or the NVIDIA driver (nvidia-smi). */
import { execFileSync } from 'node:child_process';

export interface AdapterInfo {
  name: string;
  vendor: string;
  /** The native API Dawn drives: Vulkan on Linux. */
  backend: string;
  driver: string;
  /** A CPU implementation (lavapipe, SwiftShader): correct, not fast. */
  software: boolean;
  source: 'vulkaninfo' | 'nvidia-smi';
}

const VENDORS: Record<string, string> = { '0x10de': 'NVIDIA', '0x1002': 'AMD', '0x8086': 'Intel', '0x10005': 'Mesa', '0x13b5': 'ARM', '0x5143': 'Qualcomm', '0x106b': 'Apple' };

function run(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
  } catch {
    return null;
  }
}

/** The first device of `vulkaninfo --summary`: what Dawn, and so onnxruntime's WebGPU provider, would pick on Linux. */
export function parseVulkanSummary(text: string): AdapterInfo | null {
  const dev = text.split(/^GPU\d+:$/m)[1];
  if (!dev) return null;
  const field = (k: string) => new RegExp(`^\\s*${k}\\s*=\\s*(.*)$`, 'm').exec(dev)?.[1].trim() ?? '';
  const type = field('deviceType');
  return {
    name: field('deviceName'),
    vendor: VENDORS[field('vendorID').toLowerCase()] ?? field('vendorID'),
    backend: `Vulkan ${field('apiVersion')}`,
    driver: field('driverInfo') || field('driverName'),
    software: type === 'PHYSICAL_DEVICE_TYPE_CPU',
    source: 'vulkaninfo',
  };
}

export function adapterInfo(): AdapterInfo | null {
  const vk = run('vulkaninfo', ['--summary']);
  const fromVk = vk ? parseVulkanSummary(vk) : null;
  if (fromVk) return fromVk;
  const smi = run('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader']);
  const line = smi?.split('\n')[0]?.trim();
  if (line) {
    const [name, driver] = line.split(',').map((s) => s.trim());
    return { name, vendor: 'NVIDIA', backend: 'Vulkan', driver: `NVIDIA ${driver}`, software: false, source: 'nvidia-smi' };
  }
  return null;
}
