/**
 * How n elements are split among `size` workers: contiguous ranges, the first n % size ranks one element longer (as
 * PyTorch's tensor_split). Every collective and every ZeRO partition uses this one rule, so that rank r's shard of a
 * reduce-scatter is the part of the flattened parameters rank r owns.
 */
import { ServelabError } from '../errors.ts';

export interface Range {
  start: number;
  end: number;
}

export function shardRange(n: number, size: number, rank: number): Range {
  if (!Number.isSafeInteger(n) || n < 0) throw new ServelabError(`shardRange: n must be a non-negative integer, got ${n}`);
  if (!Number.isSafeInteger(size) || size < 1) throw new ServelabError(`shardRange: size must be a positive integer, got ${size}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= size) throw new ServelabError(`shardRange: rank must be in [0, ${size}), got ${rank}`);
  const base = Math.floor(n / size);
  const extra = n % size;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}
