/** Low-rank adapters served unmerged (LoRA, Hu et al. 2021): what one holds, and the check that it fits a model's projections. */
import { ServelabError, ShapeError } from '../errors.ts';
import { HF_NAMES, hfShapes, PROJECTIONS, type LlamaConfig, type ProjectionName } from './config.ts';

/** A low-rank adapter kept apart from its projection's weight: A [in, r] and B [r, out] in the engine's layout. */
export interface ProjectionAdapter {
  A: Float32Array;
  B: Float32Array;
  r: number;
  /** alpha / r. */
  scaling: number;
}

/** Refuses, before anything is made, an adapter on no projection of `cfg` or of the wrong shape. */
export function checkAdapters(cfg: LlamaConfig, adapters: ReadonlyMap<string, ProjectionAdapter> | undefined): void {
  if (!adapters) return;
  const shapes = hfShapes(cfg);
  for (const [label, a] of adapters) {
    const m = /^layers\.(\d+)\.(\w+)$/.exec(label);
    if (!m || Number(m[1]) >= cfg.numLayers || !(PROJECTIONS as readonly string[]).includes(m[2])) {
      throw new ServelabError(`adapters: ${JSON.stringify(label)} is not a projection of this ${cfg.numLayers}-layer model (layers.{i}.{${PROJECTIONS.join(',')}})`);
    }
    const [N, K] = shapes.get(HF_NAMES.layer(Number(m[1]))[m[2] as ProjectionName])!;
    if (!Number.isInteger(a.r) || a.r < 1 || a.A.length !== K * a.r || a.B.length !== a.r * N || !Number.isFinite(a.scaling)) {
      throw new ShapeError('adapters', [[a.A.length], [a.B.length]], `${label} needs A [${K}, r] and B [r, ${N}] with r = ${a.r} and a finite scaling`);
    }
  }
}
