/** ONNX lowerings of the tensor ops (engine/graph/ops_tensor.ts). */
import { keepDims, reduceAxes } from '../../graph/ops_quant.ts';
import { attr } from './emitter.ts';
import type { Lowering } from './table.ts';

export const TENSOR_LOWERINGS = {
  ReduceSum: (e, n, ins) => [e.node('ReduceSum', [ins[0], e.int64(reduceAxes(n.inputs[0]!.shape, n.attrs.axes, 'ReduceSum'))], [attr('keepdims', keepDims(n.attrs) ? 1 : 0)])],
  Expand: (e, n, ins) => [e.node('Expand', [ins[0], e.shape(n.outputs[0].shape)])],
} satisfies Record<string, Lowering>;
