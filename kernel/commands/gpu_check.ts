/**
 * `servelab gpu-check`: packs everything the WebGPU check needs (Node's binary, the check bundled into one file,
 * onnxruntime-node's linux-x64 binaries, Debian's Vulkan loader) into one folder for an x86-64 Linux machine
 * with a GPU driver but no Node and no network.
 */
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServelabError } from '../../engine/index.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const LIMIT = 60 * 1024 * 1024;
const log = (s: string) => process.stderr.write(`${s}\n`);

const RUN_SH = `#!/usr/bin/env bash
# Unpacks the servelab GPU check into a temporary folder and runs it on the WebGPU provider.
# usage: bash run.sh [--quick]     result: \${OUT:-this folder}/gpu-check-result.json
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$here/servelab-gpu-check.tar.xz" -C "$work"
out="\${OUT:-$here}"
mkdir -p "$out"
# Debian's Vulkan loader, for machines whose driver ships only its ICD.
export LD_LIBRARY_PATH="$work/lib\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DISABLE_TELEMETRY=1
# A driver installed without its Vulkan manifest (common in containers): point the loader at NVIDIA's ICD.
if [ -z "\${VK_ICD_FILENAMES:-}" ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  lib=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
  if [ -n "$lib" ]; then
    printf '{"file_format_version":"1.0.1","ICD":{"library_path":"%s","api_version":"1.3.0"}}\\n' "$lib" > "$work/nvidia_icd.json"
    export VK_ICD_FILENAMES="$work/nvidia_icd.json"
    echo "using NVIDIA's Vulkan driver at $lib (no ICD manifest was installed)" >&2
  fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
"$work/node" "$work/app.mjs" --out "$out/gpu-check-result.json" "$@"
`;

function du(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? du(p) : statSync(p).size;
  }
  return n;
}

export async function packGpuCheck(opts: { out?: string } = {}): Promise<string> {
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new ServelabError('gpu-check packs linux-x64 binaries; run it on linux-x64');
  const out = resolve(opts.out ?? join(ROOT, 'gpu-check'));
  const vulkanLib = join(ROOT, '.cache', 'vulkan', 'root', 'usr', 'lib', 'x86_64-linux-gnu');
  if (!existsSync(join(vulkanLib, 'libvulkan.so.1'))) {
    log('fetching Debian\'s Vulkan loader (scripts/webgpu-deps.sh) ...');
    execFileSync('bash', [join(ROOT, 'scripts', 'webgpu-deps.sh')], { stdio: 'inherit' });
  }
  const stage = mkdtempSync(join(tmpdir(), 'servelab-gpu-check-'));
  try {
    log('[1/4] bundling the check into one file ...');
    await build({
      entryPoints: [join(ROOT, 'bench', 'gpu_check.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile: join(stage, 'app.mjs'),
      external: ['onnxruntime-node'],
      // Bundled CommonJS dependencies (protobufjs) call require(); give the ES module one.
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
      logLevel: 'error',
    });
    // The peak loops, compiled on the GPU machine where it has a C compiler (bench/peak.ts reads it beside the app).
    cpSync(join(ROOT, 'bench', 'peak.c'), join(stage, 'peak.c'));
    log('[2/4] copying node, onnxruntime-node (linux-x64 only) and libvulkan ...');
    cpSync(process.execPath, join(stage, 'node'));
    const ortSrc = join(ROOT, 'node_modules', 'onnxruntime-node');
    const ortDst = join(stage, 'node_modules', 'onnxruntime-node');
    cpSync(join(ortSrc, 'package.json'), join(ortDst, 'package.json'));
    cpSync(join(ortSrc, 'dist'), join(ortDst, 'dist'), { recursive: true, filter: (p) => !p.endsWith('.map') });
    cpSync(join(ortSrc, 'bin', 'napi-v6', 'linux', 'x64'), join(ortDst, 'bin', 'napi-v6', 'linux', 'x64'), { recursive: true });
    const common = join(ROOT, 'node_modules', 'onnxruntime-common');
    cpSync(common, join(stage, 'node_modules', 'onnxruntime-common'), { recursive: true, filter: (p) => !p.endsWith('.map') && !p.includes(`${common}/lib`) });
    mkdirSync(join(stage, 'lib'));
    for (const f of readdirSync(vulkanLib).filter((n) => n.startsWith('libvulkan.so'))) cpSync(join(vulkanLib, f), join(stage, 'lib', f));
    log(`      staged ${(du(stage) / 2 ** 20).toFixed(1)} MiB`);
    log('[3/4] compressing (xz) ...');
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    const archive = join(out, 'servelab-gpu-check.tar.xz');
    execFileSync('tar', ['-C', stage, '-cf', archive, '--use-compress-program=xz -6 -T0', '.'], { stdio: 'inherit' });
    writeFileSync(join(out, 'run.sh'), RUN_SH);
    chmodSync(join(out, 'run.sh'), 0o755);
    const size = du(out);
    log(`[4/4] ${out}: ${(size / 2 ** 20).toFixed(1)} MiB (limit ${LIMIT / 2 ** 20} MiB)`);
    if (size > LIMIT) throw new ServelabError(`the GPU check is ${(size / 2 ** 20).toFixed(1)} MiB, over its ${LIMIT / 2 ** 20} MiB limit`);
    log(`on the GPU machine: bash ${out}/run.sh   (writes gpu-check-result.json)`);
    return out;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
