/** The servelab command line: device info as JSON, usage, and clear errors with their exit codes. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const servelab = (...args: string[]) => spawnSync('node', ['bin/servelab.js', ...args], { encoding: 'utf8', env: { ...process.env, SERVELAB_DEVICE: 'cpu' } });

describe('servelab CLI', () => {
  it('device --json describes the selected device and the CPU', () => {
    const r = servelab('device', '--json');
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.selected).toMatchObject({ backend: 'cpu', requested: 'cpu' });
    expect(info.cpu.cores).toBeGreaterThan(0);
    expect(Array.isArray(info.cpu.simd)).toBe(true);
    expect(typeof info.webgpu.available).toBe('boolean');
  });

  it('an unknown command or device is an error naming it', () => {
    const r = servelab('frobnicate');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
    const d = spawnSync('node', ['bin/servelab.js', 'device'], { encoding: 'utf8', env: { ...process.env, SERVELAB_DEVICE: 'tpu' } });
    expect(d.status).toBe(2);
    expect(d.stderr).toMatch(/unknown device 'tpu'; expected one of auto, cpu, webgpu, reference/);
  });

  it('help lists the commands', () => {
    const r = servelab('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/device[\s\S]*bench[\s\S]*gpu-check/);
  });
});
