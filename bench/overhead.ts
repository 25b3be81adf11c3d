/** The engine's per-call cost over a raw onnxruntime-node session.run of the very same compiled session. */
import * as ort from 'onnxruntime-node';
import { Graph, type Device } from '../engine/index.ts';
import { OrtBackend } from '../engine/backends/ort.ts';
import { median, timeIt } from './stats.ts';

/** us per call of one batch of `inner` calls. */
async function batchUs(fn: () => Promise<unknown>, inner: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < inner; i++) await fn();
  return ((performance.now() - t0) * 1000) / inner;
}

export interface Overhead {
  what: string;
  engineUs: number;
  rawUs: number;
}

async function measure(dev: Device, graph: Graph, shapes: number[][], inner: number, batches: number): Promise<Overhead> {
  if (!(dev.backend instanceof OrtBackend)) throw new Error(`overhead is measured against onnxruntime; ${dev.kind} is not an onnxruntime backend`);
  const feeds = shapes.map((s) => dev.tensor(new Float32Array(s.reduce((p, d) => p * d, 1)).fill(0.5), s));
  // A second session of the same model, run raw; the engine runs the one its compile cache holds.
  const exe = await dev.backend.compile(graph);
  const { session, inputNames } = exe;
  const raw: Record<string, ort.Tensor> = {};
  inputNames.forEach((nm, i) => (raw[nm] = new ort.Tensor('float32', feeds[i].data as Float32Array, shapes[i])));
  const engine = async () => {
    for (const o of await dev.run(graph, feeds)) o.dispose();
  };
  const rawRun = () => session.run(raw);
  // Batches of the two interleaved, the order alternating, and the median of each: load on a shared machine comes
  // and goes within a second, and a batch of one right beside a batch of the other sees the same.
  await batchUs(rawRun, inner);
  await batchUs(engine, inner);
  const raws: number[] = [];
  const engines: number[] = [];
  for (let b = 0; b < 2 * batches; b++) {
    if (b % 2 === 0) {
      raws.push(await batchUs(rawRun, inner));
      engines.push(await batchUs(engine, inner));
    } else {
      engines.push(await batchUs(engine, inner));
      raws.push(await batchUs(rawRun, inner));
    }
  }
  const engineUs = median(engines);
  const rawUs = median(raws);
  for (const f of feeds) f.dispose();
  await exe.release();
  return { what: graph.name, engineUs, rawUs };
}

/** A tiny op (Add of two [1, 4] vectors), where fixed per-call costs are all there is. */
export function tinyOpOverhead(dev: Device): Promise<Overhead> {
  const g = new Graph('Add [1,4]');
  const a = g.input('a', 'fp32', [1, 4]);
  const b = g.input('b', 'fp32', [1, 4]);
  g.output(g.op('Add', [a, b])[0]);
  return measure(dev, g, [[1, 4], [1, 4]], 500, 15);
}

/** A 1024 fp32 GEMM: per-call costs against 2 GFLOP of work. */
export function gemmOverhead(dev: Device): Promise<Overhead> {
  const g = new Graph('MatMul 1024');
  const a = g.input('a', 'fp32', [1024, 1024]);
  const b = g.input('b', 'fp32', [1024, 1024]);
  g.output(g.op('MatMul', [a, b])[0]);
  return measure(dev, g, [[1024, 1024], [1024, 1024]], 3, 9);
}

export { timeIt };
