/** Serving: request traces, the scheduler (continuous or static batching, preemption), the engine that runs the model, and its metrics. */
export { poissonTrace, sharedPrefixTrace, loadTrace, saveTrace, traceStats, scaledMeans, DATASETS, PAPER_CONTEXT, TraceError, type PoissonTraceOptions, type SharedPrefixTraceOptions, type LengthStats, type TraceRequest, type Dataset, type TraceStats, type TraceLineError, type TraceErrorReason } from './trace.ts';
export { Scheduler, Sequence, type Batching, type Preemption, type SchedulerOptions, type ScheduledStep, type SeqStatus } from './scheduler.ts';
export { ServingEngine, type EngineOptions, type EngineRequest, type ReplayOptions, type ServeResult } from './engine.ts';
export { serveMetrics, quantileOf, ttft, tpot, e2e, type RequestRecord, type StepLog as ServeStepLog, type ServeMetrics, type Percentiles } from './metrics.ts';
