/** What goes wrong in a group of workers, by what the caller can do about it. */
import { ServelabError } from '../errors.ts';

/** A worker threw: the group stopped, every other worker was told, and this is the first error, with its rank. */
export class WorkerError extends ServelabError {
  override name = 'WorkerError';
  constructor(
    readonly rank: number,
    readonly original: { name: string; message: string; stack?: string },
  ) {
    super(`worker ${rank} failed: ${original.name}: ${original.message}`);
  }
}

/** A collective could not finish because another worker of the group failed (or the group was closed). */
export class GroupAbortedError extends ServelabError {
  override name = 'GroupAbortedError';
}
