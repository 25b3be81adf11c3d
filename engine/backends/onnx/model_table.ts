/** ONNX lowerings of the model ops (engine/graph/ops_model.ts). */
import type { Lowering } from './table.ts';

export const MODEL_LOWERINGS = {} satisfies Record<string, Lowering>;
