/** The engine's per-call cost over a raw onnxruntime-node session.run of the very same compiled session. */
import * as ort from 'onnxruntime-node';
import { Graph, type Device } from '../engine/index.ts';
import { OrtBackend } from '../engine/backends/ort.ts';
import { timeCallUs, timeIt } from './stats.ts';

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
  // Interleave the two, twice, and keep the better of each: drift on a shared machine hits both alike.
  let engineUs = Infinity;
  let rawUs = Infinity;
  for (let round = 0; round < 2; round++) {
    rawUs = Math.min(rawUs, await timeCallUs(rawRun, inner, batches));
    engineUs = Math.min(engineUs, await timeCallUs(engine, inner, batches));
  }
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
