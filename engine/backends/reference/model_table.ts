/** Reference kernels of the model ops (engine/graph/ops_model.ts). */
import type { RefKernel } from './kernel.ts';

export const MODEL_KERNELS = {} satisfies Record<string, RefKernel>;
