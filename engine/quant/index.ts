/** int8 quantization (absmax, zero-point, vector-wise; Dettmers et al. 2022): the public API of engine/quant. */
export { QuantizationError, NonFiniteError } from './errors.ts';
export { GRANULARITIES, layoutFor, type Granularity, type Layout } from './layout.ts';
export { MIN_SCALE, Consts, addAbsmax, addAbsmaxScale, addZeroPoint, addDequantize, toView, fromView, type QuantNodes } from './nodes.ts';
export {
  SCHEMES, quantize, dequantize, roundTrip, disposeQuantized,
  type QuantScheme, type QuantizeOptions, type QuantizedTensor, type QuantBytes, type RoundTrip,
} from './int8.ts';
export { errorStats, type QuantErrorStats } from './stats.ts';
export {
  X_ZERO_POINT, quantizeWeightVectorwise, vectorwiseMatmul, vectorwiseMatmulParts, addVectorwiseMatmul,
  type Int8Weight, type VectorwiseNodes, type VectorwiseParts,
} from './vectorwise.ts';
