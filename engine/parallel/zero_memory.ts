/**
 * ZeRO's accounting (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
 * sections 3.1, 5 and 7): the model-state memory each of N data-parallel devices holds when training Ψ parameters
 * with mixed-precision Adam, and the elements each step communicates.
 *
 * Every device of plain data parallelism keeps 2Ψ bytes of 16-bit weights, 2Ψ of 16-bit gradients and KΨ of optimizer
 * state (K = 12: fp32 master, momentum and variance), the (2 + 2 + K)Ψ of engine/train/memory_formula.ts. ZeRO-DP
 * partitions them across the N devices in three stages:
 *
 *   stage 0  plain data parallel   (2 + 2 + K)Ψ
 *   stage 1  Pos                   2Ψ + 2Ψ + KΨ/N
 *   stage 2  Pos+g                 2Ψ + (2 + K)Ψ/N
 *   stage 3  Pos+g+p               (2 + 2 + K)Ψ/N
 *
 * Figure 1's example, Ψ = 7.5B, N = 64, K = 12: 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per device.
 *
 * Communication (section 7): plain data parallelism all-reduces the gradients, a reduce-scatter then an all-gather, 2Ψ
 * elements; stages 1 and 2 reduce-scatter the gradients and all-gather the updated weights, the same 2Ψ; stage 3
 * all-gathers the weights once for the forward pass and once for the backward pass and reduce-scatters the gradients,
 * 3Ψ. Those are the paper's round figures; a ring collective over N devices makes each device send (N - 1)/N of them.
 * Activations and temporary buffers are not model states and are excluded.
 */
import { ServelabError } from '../errors.ts';
import type { BytesByTag } from '../memory/tracker.ts';
import { adamStateBytes, mixedPrecisionAdam } from '../train/memory_formula.ts';

/** 0: plain data parallel; 1: Pos (optimizer states sharded); 2: Pos+g (and gradients); 3: Pos+g+p (and weights). */
export type ZeroStage = 0 | 1 | 2 | 3;

export const ZERO_STAGE_NAMES: Readonly<Record<ZeroStage, string>> = { 0: 'data parallel', 1: 'Pos', 2: 'Pos+g', 3: 'Pos+g+p' };

export interface ZeroMemoryOptions {
  /** Ψ, the model's parameter count. */
  params: number;
  /** N, the data-parallel degree. */
  workers: number;
  stage: ZeroStage;
  /** Optimizer-state bytes per parameter; 12 for mixed-precision Adam (fp32 master, m, v). */
  k?: number;
}

export interface ZeroMemory extends Pick<BytesByTag, 'weights' | 'grads' | 'optimizer'> {
  stage: ZeroStage;
  /** weights + grads + optimizer, bytes on each device. */
  total: number;
  /** How the figure was made, for a table's caption. */
  formula: string;
}

function checkParams(params: number): number {
  if (!Number.isSafeInteger(params) || params < 0) throw new ServelabError(`ZeRO: params must be a non-negative integer count of parameters, got ${params}`);
  return params;
}

function checkWorkers(workers: number): number {
  if (!Number.isSafeInteger(workers) || workers < 1) throw new ServelabError(`ZeRO: workers must be an integer >= 1 (the data-parallel degree N), got ${workers}`);
  return workers;
}

function checkStage(stage: number): ZeroStage {
  if (stage !== 0 && stage !== 1 && stage !== 2 && stage !== 3) throw new ServelabError(`ZeRO: stage must be 0, 1, 2 or 3 (none, Pos, Pos+g, Pos+g+p), got ${JSON.stringify(stage)}`);
  return stage;
}

function checkK(k: number): number {
  if (typeof k !== 'number' || !Number.isFinite(k) || k < 0) throw new ServelabError(`ZeRO: k (optimizer bytes per parameter) must be a finite number >= 0, got ${k}`);
  return k;
}

const FORMULAS: Record<ZeroStage, string> = {
  0: '(2 + 2 + K) bytes x Ψ',
  1: '2Ψ + 2Ψ + KΨ/N bytes',
  2: '2Ψ + (2 + K)Ψ/N bytes',
  3: '(2 + 2 + K)Ψ/N bytes',
};

/** Model-state bytes on each device at a ZeRO stage, by the tracker's tags; the paper's Ψ/N, not rounded to whole elements. */
export function zeroMemoryBytes(opts: ZeroMemoryOptions): ZeroMemory {
  const P = checkParams(opts.params);
  const N = checkWorkers(opts.workers);
  const stage = checkStage(opts.stage);
  const K = checkK(opts.k ?? adamStateBytes('bf16'));
  // The unsharded mixed-precision baseline: 16-bit weights and gradients, K bytes of optimizer state per parameter.
  const full = mixedPrecisionAdam(P);
  const optimizer = (K * P) / (stage >= 1 ? N : 1);
  const grads = full.grads / (stage >= 2 ? N : 1);
  const weights = full.weights / (stage >= 3 ? N : 1);
  return {
    stage,
    weights,
    grads,
    optimizer,
    total: weights + grads + optimizer,
    formula: `ZeRO stage ${stage} (${ZERO_STAGE_NAMES[stage]}): ${FORMULAS[stage]}, K = ${K}, N = ${N}; activations excluded`,
  };
}

/** The fraction of plain data parallelism's model-state memory a stage saves on each device: 1 - total(stage) / total(0). */
export function zeroSavings(stage: ZeroStage, workers: number, k: number = adamStateBytes('bf16')): number {
  const N = checkWorkers(workers);
  const K = checkK(k);
  const s = checkStage(stage);
  const per = zeroMemoryBytes({ params: 1, workers: N, stage: s, k: K }).total;
  return 1 - per / (4 + K);
}

export interface ZeroCollective {
  name: 'reduce-scatter' | 'all-gather';
  /** What moves: gradients, or weights (for the optimizer step, the forward pass or the backward pass). */
  of: string;
  /** Ψ: the whole tensor's elements, the paper's unit. */
  elements: number;
}

export interface ZeroComm {
  stage: ZeroStage;
  /** The paper's figure, elements per step: 2Ψ for stages 0 to 2, 3Ψ for stage 3. */
  paper: number;
  /** Elements each device sends per step with ring collectives: paper x (N - 1)/N; null when workers is not given. */
  ring: number | null;
  /** The collectives of one step, in order. */
  collectives: ZeroCollective[];
  formula: string;
}

/** Elements communicated per training step at a ZeRO stage (section 7). Multiply by the element size for bytes. */
export function zeroCommElements(opts: { params: number; stage: ZeroStage; workers?: number }): ZeroComm {
  const P = checkParams(opts.params);
  const stage = checkStage(opts.stage);
  const N = opts.workers === undefined ? null : checkWorkers(opts.workers);
  const collectives: ZeroCollective[] =
    stage === 3
      ? [
          { name: 'all-gather', of: 'weights, forward pass', elements: P },
          { name: 'all-gather', of: 'weights, backward pass', elements: P },
          { name: 'reduce-scatter', of: 'gradients', elements: P },
        ]
      : [
          { name: 'reduce-scatter', of: 'gradients', elements: P },
          { name: 'all-gather', of: stage === 0 ? 'summed gradients (the all-reduce\'s second half)' : 'updated weights', elements: P },
        ];
  const paper = collectives.reduce((s, c) => s + c.elements, 0);
  const times = collectives.length;
  return {
    stage,
    paper,
    ring: N === null ? null : (paper * (N - 1)) / N,
    collectives,
    formula: `${times}Ψ elements${N === null ? '' : `; ring: ${times}Ψ(N - 1)/N sent per device, N = ${N}`}`,
  };
}
