/** int8 quantization (absmax, zero-point, vector-wise, LLM.int8 outlier decomposition; Dettmers et al. 2022): the public API of engine/quant. */
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
export { LLM_INT8_VARIANTS, addLlmInt8Matmul, type LlmInt8Variant, type LlmInt8Nodes, type LlmInt8WeightValues, type OutlierValues } from './llm_int8_nodes.ts';
export { DEFAULT_THRESHOLD, checkThreshold, findOutlierDims, scanColumnsHost, type OutlierScan, type ScanSite } from './outlier_scan.ts';
export {
  FP16_MAX, quantizeLlmInt8Weight, disposeLlmInt8Weight, llmInt8Matmul, llmInt8MatmulParts,
  type LlmInt8Weight, type LlmInt8Options, type LlmInt8Stats, type LlmInt8Result, type LlmInt8Parts,
} from './llm_int8.ts';
export { quantizeWeightInt4, dequantizeInt4, type Int4Weight } from './int4_blockwise.ts';
export { syntheticActivations, columnStats, type SyntheticActivationOptions, type SyntheticActivations, type ColumnStats } from './outlier_data.ts';
export {
  DEFAULT_THRESHOLDS, outlierExperiment, outlierCountSweep,
  type ProductError, type ThresholdPoint, type OutlierExperimentResult, type OutlierExperimentOptions, type OutlierCountPoint,
} from './outliers.ts';
