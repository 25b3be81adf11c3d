/** servelab's engine: the public API that lessons and user cells import. */
export * from './dtype/index.ts';
export * from './errors.ts';
export { MemoryTracker, MEMORY_TAGS, type MemoryTag, type MemorySnapshot, type BytesByTag, type Allocation } from './memory/tracker.ts';
export { Tensor, type Storage } from './tensor/tensor.ts';
export { Graph, type Value, type Node } from './graph/graph.ts';
export { OPS, type OpName, type Attrs } from './graph/ops.ts';
export { Device, type TensorOptions } from './device/device.ts';
export { createDevice, getDevice, parseDeviceKind, webgpuUnavailable, type DeviceKind } from './device/select.ts';
export { cpuInfo, derivedPeakGflops, type CpuInfo } from './device/cpu_info.ts';
export { adapterInfo, type AdapterInfo } from './device/adapter.ts';
export type { Backend, BackendName } from './backends/backend.ts';
export * from './functional.ts';
export { withSignal, currentSignal, throwIfAborted } from './abort.ts';
export * from './precision/index.ts';
export * from './quant/index.ts';
export * from './nn/index.ts';
