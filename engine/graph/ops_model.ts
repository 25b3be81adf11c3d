/**
 * Ops of a Llama-style decoder and its training: rotary position embedding, grouped-query attention over a KV cache,
 * and the softmax cross-entropy loss (names and semantics from onnxruntime's com.microsoft domain where it has them).
 */
import type { OpSpec } from './infer.ts';

export const MODEL_OPS = {} satisfies Record<string, OpSpec>;
