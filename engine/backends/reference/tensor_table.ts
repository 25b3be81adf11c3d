/** Reference kernels of the tensor ops (engine/graph/ops_tensor.ts). */
import type { RefKernel } from './kernel.ts';
import { reduceAxes, keepDims } from '../../graph/ops_quant.ts';
import * as K from './kernels.ts';
import * as T from './tensor_kernels.ts';

export const TENSOR_KERNELS = {
  ReduceSum: ({ inputs: [x], attrs }) => [T.reduceSum(x!.f(), x!.shape, reduceAxes(x!.shape, attrs.axes, 'ReduceSum'), keepDims(attrs))],
  Expand: ({ inputs: [x], outputs: [o] }) => {
    const idx = K.broadcastIndex(x!.shape, o.shape);
    const v = x!.f();
    return [Float64Array.from(idx, (i) => v[i])];
  },
} satisfies Record<string, RefKernel>;
