/**
 * Gradient checking (the numerical check of cs231n and of every autograd engine's test suite): the gradients
 * backward() builds, against central differences (f(x + h) - f(x - h)) / 2h of the forward graph, element by element,
 * on the reference backend.
 *
 * A function with several or non-scalar outputs is reduced to one scalar by a fixed random projection,
 * loss = sum_k sum(out_k * w_k), w uniform in [-1, 1): unlike a plain sum it cannot hide a wrong gradient that sums to
 * zero (softmax's outputs sum to 1 whatever the input).
 *
 * Precision: the reference backend computes each op in float64 and rounds its result once to the value's dtype, so
 * with fp32 values every op adds a relative error of at most 2^-24. A central difference divides the change in the
 * loss by 2h: the loss's own rounding alone is worth ulp(loss) / 2h (6e-5 of |loss| at h = 1e-3), which is added to
 * the allowed error; the rest of the defaults (h = 1e-3, rtol 1e-2, atol 1e-4) leave room for the rounding of the
 * intermediate values a step changes and for the O(h^2) truncation error of smooth functions. Inputs must keep
 * 2h clear of kinks (Abs at 0, Clip at its bounds, ties of ReduceMax), where no derivative exists.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import { createDevice } from '../device/select.ts';
import { isFloat, type DType } from '../dtype/dtype.ts';
import { numelOf, type Tensor } from '../tensor/tensor.ts';
import { uniform01 } from '../precision/random.ts';
import { ServelabError } from '../errors.ts';
import { backward } from './backward.ts';

export interface CheckInput {
  name?: string;
  /** Default fp32. */
  dtype?: DType;
  shape: readonly number[];
  values: ArrayLike<number>;
  /** Whether d loss / d this input is checked; default: for float inputs. */
  wrt?: boolean;
}

export interface GradCheckOptions {
  /** The step h; default 1e-3. */
  eps?: number;
  /** |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|) + ulp(loss) / 2h. Defaults 1e-2 and 1e-4. */
  rtol?: number;
  atol?: number;
  /** At most this many elements of each input are checked, a seeded sample of larger inputs; default 32. */
  maxElements?: number;
  seed?: number;
  /** Where to run; default a new reference device (disposed after). */
  device?: Device;
}

export interface ElementCheck {
  input: string;
  index: number;
  analytic: number;
  numeric: number;
  error: number;
  allowed: number;
}

export interface GradCheckResult {
  ok: boolean;
  /** Elements compared, over every checked input. */
  checked: number;
  loss: number;
  /** The element with the largest error relative to what was allowed. */
  worst: ElementCheck | null;
  failures: ElementCheck[];
  /** One line per failure (at most 10), or a line saying all passed. */
  describe(): string;
}

export type Build = (g: Graph, inputs: Value[]) => Value | readonly Value[];

/** Checks backward() on the function `build` makes of `inputs`, at those input values. */
export async function gradCheck(build: Build, inputs: readonly CheckInput[], opts: GradCheckOptions = {}): Promise<GradCheckResult> {
  const eps = opts.eps ?? 1e-3;
  const rtol = opts.rtol ?? 1e-2;
  const atol = opts.atol ?? 1e-4;
  const maxElements = opts.maxElements ?? 32;
  const seed = opts.seed ?? 1;
  const dev = opts.device ?? (await createDevice('reference'));
  const owned: Tensor[] = [];
  const tensor = (values: ArrayLike<number>, shape: readonly number[], dtype: DType) => {
    const t = dev.tensor(values, shape, dtype);
    owned.push(t);
    return t;
  };
  try {
    const { forward, loss, wrt, projections } = projected(build, inputs, seed);
    const grads = backward(forward, loss, wrt.map((i) => forward.inputs[i])).graph;
    const base = inputs.map((c) => tensor(c.values, c.shape, c.dtype ?? 'fp32'));
    const proj = projections.map((p) => tensor(p.values, p.shape, p.dtype));
    const [lossT, ...gradTs] = await dev.run(grads, [...base, ...proj]);
    owned.push(lossT, ...gradTs);
    const lossValue = lossT.toFloat32()[0];
    const lossAt = async (i: number, index: number, v: number): Promise<[number, number]> => {
      const c = inputs[i];
      const values = Array.from(c.values);
      values[index] = v;
      const moved = dev.tensor(values, c.shape, c.dtype ?? 'fp32');
      try {
        const [out] = await dev.run(forward, [...base.map((t, j) => (j === i ? moved : t)), ...proj]);
        const l = out.toFloat32()[0];
        out.dispose();
        return [moved.toFloat32()[index], l];
      } finally {
        moved.dispose();
      }
    };

    const checks: ElementCheck[] = [];
    for (const [k, i] of wrt.entries()) {
      const analytic = gradTs[k].toFloat32();
      for (const index of sample(numelOf(inputs[i].shape), maxElements, seed + i)) {
        const x = Number(inputs[i].values[index]);
        const [xp, lp] = await lossAt(i, index, x + eps);
        const [xm, lm] = await lossAt(i, index, x - eps);
        const h = xp - xm;
        const numeric = (lp - lm) / h;
        const a = analytic[index];
        const allowed = atol + rtol * Math.max(Math.abs(a), Math.abs(numeric)) + ulp(Math.max(Math.abs(lp), Math.abs(lm))) / h;
        checks.push({ input: forward.inputs[i].name, index, analytic: a, numeric, error: Math.abs(a - numeric), allowed });
      }
    }
    const failures = checks.filter((c) => !(c.error <= c.allowed));
    const worst = checks.reduce<ElementCheck | null>((w, c) => (!w || c.error / c.allowed > w.error / w.allowed ? c : w), null);
    return {
      ok: failures.length === 0,
      checked: checks.length,
      loss: lossValue,
      worst,
      failures,
      describe: () =>
        failures.length === 0
          ? `${checks.length} elements agree (worst ${worst ? fmt(worst) : 'none'})`
          : failures.slice(0, 10).map(fmt).join('\n') + (failures.length > 10 ? `\n... ${failures.length - 10} more` : ''),
    };
  } finally {
    for (const t of owned) t.dispose();
    if (!opts.device) await dev.dispose();
  }
}

interface Projection {
  shape: readonly number[];
  dtype: DType;
  values: Float64Array;
}

/** The forward graph: the function's inputs, one projection weight per float output, and the scalar loss. */
function projected(build: Build, inputs: readonly CheckInput[], seed: number) {
  const forward = new Graph('gradcheck');
  const xs = inputs.map((c, i) => forward.input(c.name ?? `x${i}`, c.dtype ?? 'fp32', c.shape));
  const outs = [build(forward, xs)].flat().filter((v) => isFloat(v.dtype));
  if (outs.length === 0) throw new ServelabError('gradCheck: the function has no float output to differentiate');
  const projections: Projection[] = [];
  let loss: Value | null = null;
  outs.forEach((o, k) => {
    if (!o.shape.every((d) => typeof d === 'number')) throw new ServelabError(`gradCheck: output '${o.name}' has a symbolic shape`);
    const shape = o.shape as readonly number[];
    const wide = o.dtype === 'fp32' ? o : forward.op('Cast', [o], { to: 'fp32' })[0];
    const w = forward.input(`w${k}`, 'fp32', shape);
    projections.push({ shape, dtype: 'fp32', values: uniform01(numelOf(shape), seed * 7919 + k).map((u) => 2 * u - 1) });
    let term = forward.op('Mul', [wide, w])[0];
    if (shape.length > 0) term = forward.op('ReduceSum', [term], { keepdims: false })[0];
    loss = loss ? forward.op('Add', [loss, term])[0] : term;
  });
  forward.output(loss!);
  const wrt = inputs.flatMap((c, i) => ((c.wrt ?? isFloat(c.dtype ?? 'fp32')) ? [i] : []));
  if (wrt.length === 0) throw new ServelabError('gradCheck: no input to check (every input is an integer or has wrt: false)');
  return { forward, loss: loss!, wrt, projections };
}

/** Every index when n <= k, else k distinct indices drawn with a seeded partial Fisher-Yates shuffle. */
function sample(n: number, k: number, seed: number): number[] {
  const idx = [...Array(n).keys()];
  if (n <= k) return idx;
  const u = uniform01(k, seed);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(u[i] * (n - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, k).sort((a, b) => a - b);
}

/** The spacing of fp32 values around |x|. */
function ulp(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return 2 ** -149;
  return 2 ** (Math.floor(Math.log2(Math.abs(x))) - 23);
}

const fmt = (c: ElementCheck) =>
  `${c.input}[${c.index}]: backward ${c.analytic.toPrecision(7)}, central difference ${c.numeric.toPrecision(7)} (error ${c.error.toExponential(2)}, allowed ${c.allowed.toExponential(2)})`;
