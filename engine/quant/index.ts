/** Quantization (int8 absmax, zero-point, vector-wise, LLM.int8 outlier decomposition, Dettmers et al. 2022; 4-bit NF4, FP4 and double quantization, QLoRA 2023): the public API of engine/quant. */
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
export {
  PACKINGS, NonFiniteBlockError, codebookQuantize, codebookDequantize, packNibbles, unpackNibbles, repack,
  type Packing, type Codebook4, type Quantized4, type Quantize4Options,
} from './codebook4.ts';
export { NF4_CODE, NF4_PIVOTS, NF4, nf4Quantize, nf4Dequantize } from './nf4.ts';
export { FP4_CODE, FP4_PIVOTS, FP4, fp4Quantize, fp4Dequantize } from './fp4.ts';
export { INT4_CODE, INT4_ABSMAX, int4AbsmaxQuantize, int4AbsmaxDequantize } from './int4_absmax.ts';
export {
  DYNAMIC_MAP, encodeDynamic, doubleQuantize, doubleDequantize, bitsPerParameter,
  type DoubleQuantized, type BitsOptions, type BitsPerParameter,
} from './double_quant.ts';
export {
  NF4_FORMATS, quantizeNf4Weight, nf4WeightBytes, nf4WeightTensors, disposeNf4Weight, addNf4Weight, addNf4Absmax, addBlockScale,
  type Nf4Format, type Nf4Weight, type Nf4WeightOptions, type Nf4DoubleQuant, type Nf4Binding,
} from './nf4_nodes.ts';
export { CODEBOOKS_4BIT, quant4Error, compare4bit, type Quant4Error } from './quant4_error.ts';
