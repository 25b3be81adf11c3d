/** `servelab device`: which device SERVELAB_DEVICE selects, its GPU adapter if any, and the CPU. */
import { adapterInfo, autoDevice, cpuInfo, getDevice, webgpuUnavailable } from '../../engine/index.ts';

export async function printDevice(opts: { json: boolean }): Promise<void> {
  const dev = await getDevice();
  const cpu = cpuInfo();
  const why = await webgpuUnavailable();
  const adapter = adapterInfo();
  const auto = await autoDevice();
  const info = {
    selected: { name: dev.name, backend: dev.kind, requested: process.env.SERVELAB_DEVICE ?? 'auto', ...(auto.why ? { autoPicksCpuBecause: auto.why } : {}) },
    webgpu: why === null ? { available: true, adapter } : { available: false, reason: why, adapter },
    cpu,
    notes: dev.notes(),
  };
  if (opts.json) {
    console.log(JSON.stringify(info, null, 2));
    return;
  }
  console.log(`device:  ${dev.name} (backend ${dev.kind}; SERVELAB_DEVICE=${info.selected.requested})`);
  console.log(`webgpu:  ${why === null ? 'available' : `not available: ${why}`}`);
  if (info.selected.requested === 'auto' && why === null && auto.why) console.log(`auto:    cpu, because ${auto.why}`);
  if (adapter) {
    console.log(`adapter: ${adapter.name} (vendor ${adapter.vendor}, ${adapter.backend}, driver ${adapter.driver})`);
    console.log(`         ${adapter.software ? 'software fallback: a CPU implementation of the GPU API, for correctness, not speed' : 'hardware GPU'}`);
  }
  console.log(`cpu:     ${cpu.model}, ${cpu.cores} cores${cpu.mhz ? `, ${cpu.mhz} MHz` : ''}`);
  console.log(`simd:    ${cpu.simd.join(' ') || 'none detected'}`);
  for (const n of dev.notes()) console.log(`note:    ${n}`);
  await dev.dispose();
}
