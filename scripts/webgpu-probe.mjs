#!/usr/bin/env node
// Checks onnxruntime-node's WebGPU execution provider end to end:
//   1. a tiny MatMul on 'webgpu', checked against the CPU EP;
//   2. which EP each of a list of ops is placed on (from the session profile);
//   3. WebGPU EP options accepted by the Node binding;
//   4. session-creation and 512x512 MatMul timings.
// Models are encoded here as ONNX protobuf bytes; nothing is read from disk.
//
// Usage (Linux without a GPU: source the lavapipe environment first, before node starts):
//   . .cache/vulkan/env.sh && node scripts/webgpu-probe.mjs [--json] [--quick]
// Exit status: 0 when the WebGPU MatMul matches the CPU result, 1 otherwise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';

const argv = new Set(process.argv.slice(2));
const JSON_OUT = argv.has('--json');
const QUICK = argv.has('--quick');
const log = (...a) => { if (!JSON_OUT) console.log(...a); };

// ---------------------------------------------------------------- ONNX encoder
// Field numbers from onnx/onnx.proto (ModelProto, GraphProto, NodeProto, ...).
const utf8 = new TextEncoder();
function varint(v) {
  let n = BigInt.asUintN(64, BigInt(v));
  const out = [];
  do { let b = Number(n & 0x7fn); n >>= 7n; if (n) b |= 0x80; out.push(b); } while (n);
  return out;
}
function concat(parts) {
  const o = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let i = 0;
  for (const p of parts) { o.set(p, i); i += p.length; }
  return o;
}
const tag = (field, wire) => varint((field << 3) | wire);
const int = (field, v) => Uint8Array.from([...tag(field, 0), ...varint(v)]);
const len = (field, b) => {
  const body = typeof b === 'string' ? utf8.encode(b) : b;
  return concat([Uint8Array.from([...tag(field, 2), ...varint(body.length)]), body]);
};
const f32 = (field, v) => {
  const o = new Uint8Array(5);
  o[0] = (field << 3) | 5;
  new DataView(o.buffer).setFloat32(1, v, true);
  return o;
};
const ELEM = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, float16: 10 };

function initializer(name, type, dims, data) {
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return concat([...dims.map((d) => int(1, d)), int(2, ELEM[type]), len(8, name), len(9, raw)]);
}
function valueInfo(name, type, dims) {
  const shape = concat(dims.map((d) => len(1, typeof d === 'string' ? len(2, d) : int(1, d))));
  return concat([len(1, name), len(2, len(1, concat([int(1, ELEM[type]), len(2, shape)])))]);
}
function attribute(name, v) {
  if (Array.isArray(v)) return concat([len(1, name), ...v.map((x) => int(8, x)), int(20, 7)]); // INTS
  if (Number.isInteger(v)) return concat([len(1, name), int(3, v), int(20, 2)]); // INT
  return concat([len(1, name), f32(2, v), int(20, 1)]); // FLOAT
}
// A single-node model: spec = { op, domain?, attrs?, inputs: [[name, type, dims, data?]], outputs: [[name, type, dims]], opset? }
// Inputs with data become initializers; the others are graph inputs fed at run time.
function singleNodeModel(spec) {
  const { op, domain = '', attrs = {}, opset = 21 } = spec;
  const nodeBytes = concat([
    ...spec.inputs.map(([n]) => len(1, n)),
    ...spec.outputs.map(([n]) => len(2, n)),
    len(3, `${op}_node`),
    len(4, op),
    ...Object.entries(attrs).map(([k, v]) => len(5, attribute(k, v))),
    ...(domain ? [len(7, domain)] : []),
  ]);
  const inits = spec.inputs.filter((i) => i[3] && i[4] === 'init');
  const feeds = spec.inputs.filter((i) => !(i[3] && i[4] === 'init') && i[0] !== '');
  const graph = concat([
    len(1, nodeBytes),
    len(2, 'probe'),
    ...inits.map(([n, t, d, data]) => len(5, initializer(n, t, d, data))),
    ...feeds.map(([n, t, d]) => len(11, valueInfo(n, t, d))),
    ...spec.outputs.map(([n, t, d]) => len(12, valueInfo(n, t, d))),
  ]);
  const opsets = [len(8, int(2, opset)), len(8, concat([len(1, 'com.microsoft'), int(2, 1)]))];
  return concat([int(1, 10), len(2, 'servelab-probe'), len(7, graph), ...opsets]);
}

// ---------------------------------------------------------------- data helpers
let seed = 1234;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const randF32 = (n, scale = 1) => Float32Array.from({ length: n }, () => rand() * scale);
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
function toHalf(v) {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  let e = ((x >>> 23) & 0xff) - 127 + 15;
  let m = x & 0x7fffff;
  if (e <= 0) return sign; // flush tiny values to zero; the probe data stays in the normal range
  if (e >= 31) return sign | 0x7c00;
  const r = m & 0x1fff;
  m >>= 13;
  if (r > 0x1000 || (r === 0x1000 && (m & 1))) { m++; if (m === 0x400) { m = 0; e++; } }
  return sign | (e << 10) | m;
}
function fromHalf(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
const randF16 = (n, scale = 1) => Uint16Array.from({ length: n }, () => toHalf(rand() * scale));
const ORT_TYPE = { float32: 'float32', float16: 'float16', uint8: 'uint8', int8: 'int8', int32: 'int32', int64: 'int64' };
const asNumbers = (t) => (t.type === 'float16' && t.data instanceof Uint16Array ? Array.from(t.data, fromHalf) : Array.from(t.data, Number));

// ---------------------------------------------------------------- op cases
// Shapes are tiny; each case is one node so its placement is unambiguous.
function cases() {
  const B = 1, S = 4, H = 2, D = 8, E = H * D;
  const mk = (op, o) => ({ op, ...o });
  const x = (n, d, t = 'float32') => [n, t, d, t === 'float16' ? randF16(d.reduce((a, b) => a * b, 1)) : randF32(d.reduce((a, b) => a * b, 1))];
  const init = (n, t, d, data) => [n, t, d, data, 'init'];
  // MatMulNBits: A [M,K] x B^T, B stored as [N, K/block, block/2] 4-bit nibbles, one fp32 scale per block.
  const K = 32, N = 16, blk = 32;
  const packed = Uint8Array.from({ length: N * (K / blk) * (blk / 2) }, (_, i) => (i * 37 + 11) & 0xff);
  const scales = Float32Array.from({ length: N * (K / blk) }, (_, i) => 0.01 + i * 0.001);
  return [
    mk('MatMul fp32', { opType: 'MatMul', inputs: [x('a', [4, 8]), x('b', [8, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('MatMul fp16', { opType: 'MatMul', inputs: [x('a', [4, 8], 'float16'), x('b', [8, 16], 'float16')], outputs: [['y', 'float16', [4, 16]]] }),
    mk('MatMulInteger', {
      opType: 'MatMulInteger',
      inputs: [['a', 'uint8', [4, 8], Uint8Array.from({ length: 32 }, (_, i) => (i * 7) & 0xff)], ['b', 'int8', [8, 16], Int8Array.from({ length: 128 }, (_, i) => ((i * 13) % 255) - 127)]],
      outputs: [['y', 'int32', [4, 16]]],
    }),
    mk('DynamicQuantizeLinear', { opType: 'DynamicQuantizeLinear', inputs: [x('x', [4, 8])], outputs: [['y', 'uint8', [4, 8]], ['y_scale', 'float32', []], ['y_zero_point', 'uint8', []]] }),
    mk('MatMulNBits 4-bit (fp32 A)', {
      opType: 'MatMulNBits', domain: 'com.microsoft', attrs: { K, N, bits: 4, block_size: blk },
      inputs: [x('a', [4, K]), init('b', 'uint8', [N, K / blk, blk / 2], packed), init('scales', 'float32', [N * (K / blk)], scales)],
      outputs: [['y', 'float32', [4, N]]],
    }),
    mk('MatMulNBits 4-bit (fp16 A)', {
      opType: 'MatMulNBits', domain: 'com.microsoft', attrs: { K, N, bits: 4, block_size: blk },
      inputs: [x('a', [4, K], 'float16'), init('b', 'uint8', [N, K / blk, blk / 2], packed), init('scales', 'float16', [N * (K / blk)], Uint16Array.from(scales, toHalf))],
      outputs: [['y', 'float16', [4, N]]],
    }),
    mk('Add', { opType: 'Add', inputs: [x('a', [4, 16]), x('b', [16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Mul', { opType: 'Mul', inputs: [x('a', [4, 16]), x('b', [4, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Softmax', { opType: 'Softmax', attrs: { axis: -1 }, inputs: [x('x', [4, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('LayerNormalization', { opType: 'LayerNormalization', attrs: { axis: -1, epsilon: 1e-5 }, inputs: [x('x', [4, 16]), x('g', [16]), x('b', [16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('SimplifiedLayerNormalization', { opType: 'SimplifiedLayerNormalization', attrs: { axis: -1, epsilon: 1e-5 }, inputs: [x('x', [4, 16]), x('g', [16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('SkipSimplifiedLayerNormalization', { opType: 'SkipSimplifiedLayerNormalization', domain: 'com.microsoft', attrs: { epsilon: 1e-5 }, inputs: [x('x', [1, 4, 16]), x('skip', [1, 4, 16]), x('g', [16])], outputs: [['y', 'float32', [1, 4, 16]]] }),
    mk('RMSNormalization (opset 23)', { opType: 'RMSNormalization', opset: 23, attrs: { axis: -1, epsilon: 1e-5 }, inputs: [x('x', [4, 16]), x('g', [16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Gelu (com.microsoft)', { opType: 'Gelu', domain: 'com.microsoft', inputs: [x('x', [4, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Gelu (opset 20)', { opType: 'Gelu', inputs: [x('x', [4, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Sigmoid', { opType: 'Sigmoid', inputs: [x('x', [4, 16])], outputs: [['y', 'float32', [4, 16]]] }),
    mk('Gather (int64 indices)', { opType: 'Gather', attrs: { axis: 0 }, inputs: [x('data', [10, 16]), ['idx', 'int64', [3], BigInt64Array.from([7n, 0n, 3n])]], outputs: [['y', 'float32', [3, 16]]] }),
    mk('Gather (int32 indices)', { opType: 'Gather', attrs: { axis: 0 }, inputs: [x('data', [10, 16]), ['idx', 'int32', [3], Int32Array.from([7, 0, 3])]], outputs: [['y', 'float32', [3, 16]]] }),
    mk('Reshape', { opType: 'Reshape', inputs: [x('x', [4, 16]), init('shape', 'int64', [3], BigInt64Array.from([2n, 2n, 16n]))], outputs: [['y', 'float32', [2, 2, 16]]] }),
    mk('Transpose', { opType: 'Transpose', attrs: { perm: [1, 0] }, inputs: [x('x', [4, 16])], outputs: [['y', 'float32', [16, 4]]] }),
    mk('Cast fp32->fp16', { opType: 'Cast', attrs: { to: 10 }, inputs: [x('x', [4, 16])], outputs: [['y', 'float16', [4, 16]]] }),
    mk('Concat', { opType: 'Concat', attrs: { axis: 0 }, inputs: [x('a', [2, 16]), x('b', [3, 16])], outputs: [['y', 'float32', [5, 16]]] }),
    mk('MultiHeadAttention', {
      opType: 'MultiHeadAttention', domain: 'com.microsoft', attrs: { num_heads: H },
      inputs: [x('q', [B, S, E]), x('k', [B, S, E]), x('v', [B, S, E])], outputs: [['y', 'float32', [B, S, E]]],
    }),
    // Decode step with a shared KV buffer of 2*S slots: S cached tokens + 1 new (seqlens_k = total - 1).
    mk('GroupQueryAttention (decode)', {
      opType: 'GroupQueryAttention', domain: 'com.microsoft', attrs: { num_heads: H, kv_num_heads: 1 },
      inputs: [x('q', [B, 1, E]), x('k', [B, 1, D]), x('v', [B, 1, D]), x('past_k', [B, 1, 2 * S, D]), x('past_v', [B, 1, 2 * S, D]),
        ['seqlens_k', 'int32', [B], Int32Array.from([S])], ['total_len', 'int32', [], Int32Array.from([S + 1])]],
      outputs: [['y', 'float32', [B, 1, E]], ['present_k', 'float32', [B, 1, 2 * S, D]], ['present_v', 'float32', [B, 1, 2 * S, D]]],
      compare: ['y'],
    }),
    mk('RotaryEmbedding (com.microsoft)', {
      opType: 'RotaryEmbedding', domain: 'com.microsoft',
      inputs: [x('x', [B, S, E]), ['pos', 'int64', [B, S], BigInt64Array.from([0n, 1n, 2n, 3n])], x('cos', [S, D / 2]), x('sin', [S, D / 2])],
      outputs: [['y', 'float32', [B, S, E]]], attrs: { num_heads: H },
    }),
  ];
}

// ---------------------------------------------------------------- profiling → placement
const profDir = fs.mkdtempSync(path.join(os.tmpdir(), 'webgpu-probe-'));
let profCount = 0;

function feedsOf(c) {
  const feeds = {};
  for (const [n, t, d, data, kind] of c.inputs) {
    if (kind === 'init' || !data) continue;
    feeds[n] = new ort.Tensor(ORT_TYPE[t], data, d);
  }
  return feeds;
}

/** Runs one case on the given EP list with profiling on; returns outputs and the per-node placement. */
async function runProfiled(c, eps) {
  const prefix = path.join(profDir, `p${profCount++}`);
  const spec = { op: c.opType, domain: c.domain, attrs: c.attrs, inputs: c.inputs, outputs: c.outputs, opset: c.opset };
  const session = await ort.InferenceSession.create(singleNodeModel(spec), {
    executionProviders: eps,
    enableProfiling: true,
    profileFilePrefix: prefix,
  });
  try {
    const out = await session.run(feedsOf(c));
    session.endProfiling(); // returns nothing in onnxruntime-node; the file is <prefix>_<date>.json
    const file = fs.readdirSync(profDir).find((f) => f.startsWith(path.basename(prefix) + '_'));
    const events = JSON.parse(fs.readFileSync(path.join(profDir, file), 'utf8'));
    const nodes = events
      .filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'))
      .map((e) => ({ node: e.name.replace(/_kernel_time$/, ''), op: e.args.op_name, provider: e.args.provider }));
    const gpuPrograms = events.filter((e) => e.cat === 'Api').map((e) => e.name.split('&').pop());
    return { out, nodes, gpuPrograms };
  } finally {
    await session.release();
  }
}

function maxDiff(a, b, names = Object.keys(a)) {
  let m = 0;
  for (const k of names) {
    const x = asNumbers(a[k]);
    const y = asNumbers(b[k]);
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  }
  return m;
}

// ---------------------------------------------------------------- main
const report = { versions: { node: process.version, onnxruntime: ort.env.versions?.node ?? 'unknown' }, env: {}, checks: {} };
for (const k of ['VK_ICD_FILENAMES', 'LD_LIBRARY_PATH', 'LP_NUM_THREADS']) report.env[k] = process.env[k] ?? null;
report.backends = ort.listSupportedBackends();
log('onnxruntime-node', report.versions.onnxruntime, '| backends:', report.backends.map((b) => b.name).join(', '));
if (process.platform === 'linux' && !process.env.VK_ICD_FILENAMES) log('note: VK_ICD_FILENAMES is not set; on a machine without a GPU run `. .cache/vulkan/env.sh` first');

// 1. basic check
const basic = {
  opType: 'MatMul',
  inputs: [['a', 'float32', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6])], ['b', 'float32', [3, 2], Float32Array.from([1, 0, 0, 1, 1, 1])]],
  outputs: [['y', 'float32', [2, 2]]],
};
let ok = false;
try {
  let t0 = performance.now();
  const gpu = await runProfiled(basic, ['webgpu']);
  const firstCreateMs = performance.now() - t0;
  const cpu = await runProfiled(basic, ['cpu']);
  const got = Array.from(gpu.out.y.data);
  const want = Array.from(cpu.out.y.data);
  ok = gpu.nodes.every((n) => n.provider === 'WebGpuExecutionProvider') && maxDiff(gpu.out, cpu.out) < 1e-5;
  report.checks.basic = { ok, webgpu: got, cpu: want, placement: gpu.nodes, firstSessionCreateAndRunMs: +firstCreateMs.toFixed(1) };
  log(`\n[1] MatMul [2x3]x[3x2] on webgpu: ${JSON.stringify(got)}  cpu: ${JSON.stringify(want)}  -> ${ok ? 'OK' : 'MISMATCH'}`);
  log(`    placement: ${gpu.nodes.map((n) => `${n.op}@${n.provider}`).join(', ')}; first webgpu session create+run ${firstCreateMs.toFixed(0)} ms`);
} catch (e) {
  report.checks.basic = { ok: false, error: String(e?.message ?? e) };
  log('\n[1] webgpu session failed:', e?.message ?? e);
}

// 2. placement table
if (ok) {
  log('\n[2] op placement (WebGPU EP, from profiling "Node" events)');
  const rows = [];
  for (const c of cases()) {
    const row = { case: c.op };
    try {
      const gpu = await runProfiled(c, ['webgpu']);
      const main = gpu.nodes.find((n) => n.node === `${c.opType}_node`) ?? gpu.nodes.find((n) => n.op === c.opType);
      row.placement = main ? (main.provider === 'WebGpuExecutionProvider' ? 'GPU' : main.provider === 'CPUExecutionProvider' ? 'CPU' : main.provider) : 'not run';
      const extra = gpu.nodes.filter((n) => n !== main).map((n) => `${n.op}@${n.provider.replace('ExecutionProvider', '')}`);
      if (extra.length) row.extraNodes = extra;
      row.gpuPrograms = [...new Set(gpu.gpuPrograms)];
      try {
        const cpu = await runProfiled(c, ['cpu']);
        row.maxAbsDiffVsCpu = +maxDiff(gpu.out, cpu.out, c.compare).toPrecision(3);
      } catch (e) {
        row.maxAbsDiffVsCpu = `cpu failed: ${String(e?.message ?? e).split('\n')[0].slice(0, 120)}`;
      }
    } catch (e) {
      row.placement = 'error';
      row.error = String(e?.message ?? e).split('\n')[0].slice(0, 200);
    }
    rows.push(row);
    log(`    ${row.case.padEnd(38)} ${String(row.placement).padEnd(6)} ${row.error ?? `diff ${row.maxAbsDiffVsCpu}` + (row.extraNodes ? `  +${row.extraNodes.join(',')}` : '') + (row.gpuPrograms?.length ? `  programs: ${row.gpuPrograms.join(',')}` : '')}`);
  }
  report.checks.placement = rows;

  // 3. EP options
  log('\n[3] WebGPU EP options in onnxruntime-node');
  const opt = {};
  const tryOpts = async (label, eps, extra) => {
    try {
      const s = await ort.InferenceSession.create(singleNodeModel({ op: 'MatMul', inputs: basic.inputs, outputs: basic.outputs }), { executionProviders: eps, ...extra });
      await s.run(feedsOf(basic));
      await s.release();
      opt[label] = 'accepted';
    } catch (e) {
      opt[label] = `rejected: ${String(e?.message ?? e).split('\n')[0].slice(0, 160)}`;
    }
    log(`    ${label.padEnd(60)} ${opt[label]}`);
  };
  await tryOpts("{name:'webgpu', preferredLayout:'NHWC'}", [{ name: 'webgpu', preferredLayout: 'NHWC' }]);
  await tryOpts("{name:'webgpu', validationMode:'disabled'}", [{ name: 'webgpu', validationMode: 'disabled' }]);
  await tryOpts("{name:'webgpu', storageBufferCacheMode:'simple'}", [{ name: 'webgpu', storageBufferCacheMode: 'simple' }]);
  await tryOpts("{name:'webgpu', forceCpuNodeNames:['MatMul_node']}", [{ name: 'webgpu', forceCpuNodeNames: ['MatMul_node'] }]);
  await tryOpts("{name:'webgpu', powerPreference:'high-performance'}", [{ name: 'webgpu', powerPreference: 'high-performance' }]);
  await tryOpts("{name:'webgpu', deviceId: 0}", [{ name: 'webgpu', deviceId: 0 }]);
  report.checks.options = opt;

  // 4. timings
  log('\n[4] timings');
  const t = {};
  const ms = async (fn) => { const t0 = performance.now(); await fn(); return performance.now() - t0; };
  const M = 512;
  const mm = singleNodeModel({ op: 'MatMul', inputs: [['a', 'float32', [M, M]], ['b', 'float32', [M, M]]], outputs: [['y', 'float32', [M, M]]] });
  const feeds = { a: new ort.Tensor('float32', randF32(M * M), [M, M]), b: new ort.Tensor('float32', randF32(M * M), [M, M]) };
  for (const ep of ['webgpu', 'cpu']) {
    let s;
    const create = await ms(async () => { s = await ort.InferenceSession.create(mm, { executionProviders: [ep] }); });
    const first = await ms(() => s.run(feeds));
    const n = QUICK ? 3 : 10;
    let total = 0;
    for (let i = 0; i < n; i++) total += await ms(() => s.run(feeds));
    await s.release();
    const per = total / n;
    t[ep] = { sessionCreateMs: +create.toFixed(1), firstRunMs: +first.toFixed(1), runMs: +per.toFixed(2), gflops: +((2 * M ** 3) / (per * 1e6)).toFixed(2) };
    log(`    ${ep.padEnd(7)} 512x512 MatMul: create ${create.toFixed(0)} ms, first run ${first.toFixed(0)} ms, steady ${per.toFixed(1)} ms/run (${t[ep].gflops} GFLOP/s incl. upload/download)`);
  }
  report.checks.timing = t;
}

fs.rmSync(profDir, { recursive: true, force: true });
if (JSON_OUT) console.log(JSON.stringify(report, null, 2));
log(`\n${ok ? 'webgpu OK' : 'webgpu FAILED'}`);
process.exitCode = ok ? 0 : 1;
