/**
 * The input shape of a layer's step graph: x [..., K] with every leading dim symbolic ('m' for a 2-D batch of rows,
 * 'd0', 'd1', ... above), so one graph, and one compiled session, serves every batch and sequence length.
 */
import type { Dim } from './dims.ts';

export function rowShape(rank: number, last: number): Dim[] {
  if (rank === 1) return [last];
  if (rank === 2) return ['m', last];
  return [...Array.from({ length: rank - 1 }, (_, i) => `d${i}`), last];
}
