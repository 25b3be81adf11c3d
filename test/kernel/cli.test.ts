/** The servelab command line: device info as JSON, usage (all commands, and each one's own), and clear errors with their exit codes. */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../kernel/commands/usage.ts';

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

  it('every command answers --help and -h with its own usage and options, and does nothing else', () => {
    expect(Object.keys(COMMANDS).sort()).toEqual(['bench', 'build', 'device', 'eval', 'generate', 'gpu-check', 'kernel', 'report', 'serve', 'train']);
    // Options each command's parser accepts: the usage must name every one of them.
    const flags: Record<string, string[]> = {
      kernel: ['--user', '--prefix', '--connection-file'],
      build: ['--check', '--root'],
      report: ['--out', '--all', '--solutions', '--server', '--token'],
      device: ['--json'],
      bench: ['--json', '--out', '--quick', '--device'],
      'gpu-check': ['--out'],
      train: ['--preset', '--out', '--resume', '--stop-after', '--checkpoint-dir'],
      generate: ['--prompt', '--max-tokens', '--temperature', '--top-k', '--top-p', '--seed', '--stop', '--format', '--model', '--json'],
      eval: ['--format', '--model', '--context', '--bytes', '--json'],
      serve: ['--rate', '--duration', '--dataset', '--trace', '--http', '--layout', '--batching', '--budget', '--block-size', '--max-seqs', '--preemption', '--chunked-prefill', '--seed', '--temperature', '--price-per-hour', '--format', '--model', '--json'],
    };
    for (const cmd of Object.keys(COMMANDS)) {
      const r = servelab(cmd, '--help');
      expect(r.status, `${cmd} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout.startsWith(`usage: servelab ${cmd}`), `${cmd} --help`).toBe(true);
      for (const f of flags[cmd]) expect(r.stdout, `${cmd} --help names ${f}`).toContain(f);
      expect(r.stderr).toBe('');
    }
    // -h, after other arguments too, and `servelab help <command>`; gpu-check packs nothing, bench measures nothing.
    expect(servelab('kernel', 'install', '-h').stdout).toMatch(/^usage: servelab kernel install/);
    expect(servelab('report', 'lessons/00-why-serving-is-costly.md', '-h').stdout).toMatch(/^usage: servelab report/);
    const viaHelp = servelab('help', 'bench');
    expect(viaHelp.status).toBe(0);
    expect(viaHelp.stdout).toBe(servelab('bench', '--help').stdout);
    expect(servelab('help', 'frobnicate').status).toBe(2);
  });

  it('a mistyped option is answered with the command\'s usage', () => {
    const r = servelab('report', '--bogus');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^servelab report: Unknown option '--bogus'/);
    expect(r.stderr).toMatch(/usage: servelab report [\s\S]*--solutions/);
  });
});

describe('the WebGPU probe', () => {
  // No Vulkan driver: VK_ICD_FILENAMES names a file that does not exist. With a Vulkan loader installed Dawn then
  // finds no driver; without one there is nothing to load. Either way nothing native reaches our stderr.
  const noDriver = { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' };

  it('without a GPU adapter, auto falls back to the cpu backend and Dawn prints nothing', () => {
    const env: NodeJS.ProcessEnv = { ...noDriver };
    delete env.SERVELAB_DEVICE;
    const r = spawnSync('node', ['bin/servelab.js', 'device', '--json'], { encoding: 'utf8', env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const info = JSON.parse(r.stdout);
    expect(info.selected.backend).toBe('cpu');
    expect(info.webgpu.available).toBe(false);
    expect(info.webgpu.reason).toMatch(/Vulkan loader|WebGPU adapter/);
  });

  it('SERVELAB_DEVICE=webgpu without an adapter is an error that says why and what to do', () => {
    const r = spawnSync('node', ['bin/servelab.js', 'device'], { encoding: 'utf8', env: { ...noDriver, SERVELAB_DEVICE: 'webgpu' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^servelab device: webgpu is not available: (no Vulkan loader \(libvulkan\.so\.1\)|Failed to get a WebGPU adapter)/);
    expect(r.stderr).toMatch(/scripts\/webgpu-deps\.sh/);
    expect(r.stderr).not.toMatch(/\.cpp:\d+|^Warning:/m);
  });
});
