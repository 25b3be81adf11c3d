import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', './test/summary_reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // onnxruntime sessions and WebGPU devices are process-wide; one fork keeps memory and threads predictable on 2 cores.
    pool: 'forks',
    fileParallelism: false,
    // The memory tests compare the tracker with process.memoryUsage() and collect garbage first.
    execArgv: ['--expose-gc'],
  },
});
