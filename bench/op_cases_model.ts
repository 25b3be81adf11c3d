/** Op suite cases of the model ops (engine/graph/ops_model.ts). */
import type { OpCase } from './op_cases.ts';

export const MODEL_CASES: OpCase[] = [];
