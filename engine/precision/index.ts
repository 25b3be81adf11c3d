/** Precision experiments (lecture part 2, "Numerical Precision" and "Computational Errors"): plain data for plots. */
export { floatToBits, bitsToFloat, roundToDtype, nextRepresentable, largestFinite } from './bits.ts';
export { FLOAT_DTYPES, formatFacts, formatTable, ulpAt, ulpSeries, type FormatFacts, type UlpSeries } from './formats.ts';
export { classifyValue, overflowTable, arithmeticOverflow, OVERFLOW_VALUES, type ValueKind, type ValueRow, type ArithmeticRow } from './overflow.ts';
export { relativeRoundingError, roundingErrors, type RoundingStats, type RoundingResult, type RoundingOptions } from './rounding.ts';
export {
  SUM_METHODS, sequentialSum, compensatedSum, stagnationPoint, accumulationError,
  type SumPrecision, type SumMethod, type SumMethodResult, type AccumulationResult, type AccumulationOptions,
} from './accumulation.ts';
export { DEFAULT_GEMM_KS, gemmError, type GemmErrorRow, type GemmErrorResult, type GemmErrorOptions } from './gemm_error.ts';
export { WEIGHT_DTYPES, weightMemory, type WeightDType, type WeightMemoryRow, type WeightMemoryResult, type WeightMemoryOptions } from './memory.ts';
export { matmulThroughput, dtypeNote, type ThroughputRow, type ThroughputResult, type ThroughputOptions } from './throughput.ts';
export { mulberry32At, uniform01, sampleValues, sampleRange, DISTRIBUTIONS, type Distribution } from './random.ts';
export { logSpace } from './util.ts';
