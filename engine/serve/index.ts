/** Serving: request traces, the scheduler (continuous or static batching, preemption), the engine that runs the model, and its metrics. */
export { poissonTrace, sharedPrefixTrace, scaledMeans, DATASETS, PAPER_CONTEXT, TraceError, type PoissonTraceOptions, type SharedPrefixTraceOptions, type TraceRequest, type Dataset, type TraceErrorReason } from './trace.ts';
export { loadTrace, saveTrace, type TraceLineError } from './trace_file.ts';
export { traceStats, type LengthStats, type TraceStats } from './trace_stats.ts';
export { Scheduler, Sequence, type Batching, type Preemption, type SchedulerOptions, type ScheduledStep, type SeqStatus } from './scheduler.ts';
export { ServingEngine, type EngineOptions, type EngineRequest, type ReplayOptions, type ServeResult } from './engine.ts';
export { serveMetrics, quantileOf, ttft, tpot, e2e, type RequestRecord, type StepLog as ServeStepLog, type ServeMetrics, type Percentiles } from './metrics.ts';
