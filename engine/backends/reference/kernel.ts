/** The shape of a reference kernel: concrete operands in, float64 values (or exact storage) out, one per output. */
import type { DType } from '../../dtype/dtype.ts';
import type { Attrs } from '../../graph/ops.ts';
import type { Storage } from '../../tensor/tensor.ts';

export interface RefOperand {
  readonly dtype: DType;
  /** Concrete: the run's binding of every symbol applied. */
  readonly shape: readonly number[];
  /** Raw storage in the Tensor layout of its dtype (fp16/bf16 as bit patterns). */
  readonly data: Storage;
  /** The values decoded to float64 (fp16/bf16 exactly). */
  f(): Float64Array;
}

export interface RefContext {
  readonly inputs: readonly (RefOperand | null)[];
  readonly attrs: Attrs;
  /** Each output's dtype and concrete shape. */
  readonly outputs: readonly { readonly dtype: DType; readonly shape: readonly number[] }[];
}

/**
 * One result per output: float64 values (or any numbers), rounded once to the output's dtype; or storage already
 * in the output's exact layout (quantized codes), taken as it is.
 */
export type RefKernel = (ctx: RefContext) => (ArrayLike<number> | Storage)[];
