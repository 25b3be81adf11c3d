/**
 * int8 quantization as graph nodes (absmax and zero-point, Dettmers et al. 2022, section 2.1), so that a tensor is
 * quantized on its backend in the same session as the ops around it: ReduceMax(Abs(x)) -> scale -> QuantizeLinear.
 * A quantized Linear or LLM.int8 adds these nodes to its own step graph.
 */
import { Graph, type Value } from '../graph/graph.ts';
import type { Device } from '../device/device.ts';
import type { DType } from '../dtype/dtype.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { DeviceError } from '../errors.ts';
import type { Shape } from '../graph/dims.ts';
import type { Layout } from './layout.ts';
import { QuantizationError } from './errors.ts';

/**
 * The floor of every scale: the smallest normal fp32, 2^-126. A zero group (absmax 0, or a zero range) then gets
 * this scale and codes equal to its zero point, so it dequantizes to exactly 0 with no 0/0. It also keeps scales out
 * of the subnormals, which GPUs may flush to zero. No group with absmax of 1.5e-36 or more is affected.
 */
export const MIN_SCALE = 2 ** -126;

/** The device a tensor was created on (tensors only know a DeviceRef; graphs need the device that runs them). */
export function deviceOf(t: Tensor, op: string): Device {
  const dev = t.device as Device;
  if (typeof dev.run !== 'function') throw new DeviceError(`${op}: tensor #${t.id} was not created on a device`);
  return dev;
}

const perDevice = new WeakMap<Device, Map<string, Tensor>>();

/**
 * The constants a quantization graph needs (127, 255, -1, a zero-point base). A scalar is one tensor per device and
 * value, so a graph built twice has the same signature and reuses its compiled session; a constant with a shape is
 * that scalar expanded to it at run time, so it follows the graph's symbolic dims.
 */
export class Consts {
  private readonly values = new Map<string, Value>();
  constructor(
    readonly g: Graph,
    readonly device: Device,
  ) {}

  f32(v: number): Value {
    return this.fill('fp32', [], v);
  }

  fill(dtype: DType, shape: Shape, v: number): Value {
    const key = `${dtype}[${shape.join(',')}]=${v}`;
    let val = this.values.get(key);
    if (!val) {
      if (shape.length === 0) val = this.scalar(dtype, v);
      // onnxruntime 1.30's WebGPU provider takes a uint8 Expand and fails when it runs.
      else if (dtype === 'uint8') throw new QuantizationError(`a uint8 constant of shape [${shape.join(', ')}] cannot be expanded on every backend; divide by the scales first and use a scalar zero point`);
      else val = this.g.op('Expand', [this.fill(dtype, [], v)], { shape })[0];
      this.values.set(key, val);
    }
    return val;
  }

  private scalar(dtype: DType, v: number): Value {
    const key = `${dtype}[]=${v}`;
    let tensors = perDevice.get(this.device);
    if (!tensors) perDevice.set(this.device, (tensors = new Map()));
    let t = tensors.get(key);
    if (!t || t.disposed) {
      t = this.device.tensor([v], [], dtype, { tag: 'other', label: `quant.const ${dtype}[]=${v}` });
      tensors.set(key, t);
    }
    return this.g.constant(`const ${key}`, t);
  }
}

const one = (g: Graph, ...args: Parameters<Graph['op']>) => g.op(...args)[0];

/** x (perm, then reshape) as the layout's 2-D view. */
export function toView(g: Graph, x: Value, l: Layout): Value {
  let v = l.perm ? one(g, 'Transpose', [x], { perm: l.perm }) : x;
  if (v.shape.length !== 2 || v.shape[0] !== l.view[0] || v.shape[1] !== l.view[1]) v = one(g, 'Reshape', [v], { shape: l.view });
  return v;
}

/** The inverse of toView: back to `shape`. */
export function fromView(g: Graph, v: Value, l: Layout, shape: readonly number[]): Value {
  const permuted = l.perm ? l.perm.map((p) => shape[p]) : shape;
  let x = permuted.join() === v.shape.join() ? v : one(g, 'Reshape', [v], { shape: permuted });
  if (l.perm) x = one(g, 'Transpose', [x], { perm: l.perm }); // swapping two axes is its own inverse
  return x;
}

export interface QuantNodes {
  /** Codes in the view's layout. */
  q: Value;
  /** fp32 [numScales]. */
  scale: Value;
  zeroPoint?: Value;
}

/**
 * Absmax (symmetric): scale = max(absmax / 127, MIN_SCALE), q = round(x / scale) in [-127, 127], int8. The view
 * is fp32 [R, C]; groups run along reduceAxis.
 */
export function addAbsmax(c: Consts, view: Value, reduceAxis: 0 | 1): QuantNodes {
  const scale = addAbsmaxScale(c, view, reduceAxis);
  const q = one(c.g, 'QuantizeLinear', [view, scale, null], { axis: 1 - reduceAxis, outputDtype: 'int8' });
  return { q, scale };
}

/** max(absmax / 127, MIN_SCALE) per group: fp32 [numScales]. */
export function addAbsmaxScale(c: Consts, view: Value, reduceAxis: 0 | 1): Value {
  const g = c.g;
  const absmax = one(g, 'ReduceMax', [one(g, 'Abs', [view])], { axes: [reduceAxis], keepdims: false });
  return one(g, 'Clip', [one(g, 'Div', [absmax, c.f32(127)])], { min: MIN_SCALE });
}

/**
 * Zero-point (asymmetric) over [lo, hi] = [min(0, min x), max(0, max x)]: scale = max((hi - lo) / 255, MIN_SCALE),
 * zeroPoint = round(-lo / scale) (minus 128 for int8 codes), q = saturate(round(x / scale) + zeroPoint). The range
 * holds 0, as in ONNX DynamicQuantizeLinear, so the zero point fits the codes' dtype (ONNX requires it) and 0 is
 * exact, which padding and ReLU zeros need. fp32 arithmetic throughout, step by step as written.
 */
export function addZeroPoint(c: Consts, view: Value, reduceAxis: 0 | 1, dtype: 'int8' | 'uint8'): QuantNodes {
  const g = c.g;
  const max = (v: Value) => one(g, 'Clip', [one(g, 'ReduceMax', [v], { axes: [reduceAxis], keepdims: false })], { min: 0 });
  const hi = max(view);
  const negLo = max(one(g, 'Mul', [view, c.f32(-1)]));
  const scale = one(g, 'Clip', [one(g, 'Div', [one(g, 'Add', [hi, negLo]), c.f32(255)])], { min: MIN_SCALE });
  // QuantizeLinear itself rounds and saturates -lo / scale into the codes' range; int8 shifts it by -128.
  const base = dtype === 'int8' ? c.fill('int8', scale.shape, -128) : null;
  const zeroPoint = one(g, 'QuantizeLinear', [negLo, scale, base], { axis: 0, outputDtype: dtype });
  const q = one(g, 'QuantizeLinear', [view, scale, zeroPoint], { axis: 1 - reduceAxis });
  return { q, scale, zeroPoint };
}

/** (q - zeroPoint) * scale in fp32, in the view's layout; scale (and zero point) are [numScales]. */
export function addDequantize(g: Graph, q: Value, scale: Value, zeroPoint: Value | null, reduceAxis: 0 | 1): Value {
  return one(g, 'DequantizeLinear', [q, scale, zeroPoint], { axis: 1 - reduceAxis });
}
