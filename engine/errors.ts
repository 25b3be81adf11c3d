/** Typed engine errors: each names what was wrong so a learner can fix the cell, not debug the engine. */

export class ServelabError extends Error {
  override name = 'ServelabError';
}

/** Operands whose shapes cannot meet: raised before any kernel runs. */
export class ShapeError extends ServelabError {
  override name = 'ShapeError';
  constructor(
    readonly op: string,
    readonly shapes: readonly (readonly (number | string)[])[],
    detail: string,
  ) {
    super(`${op}: ${detail} (shapes ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')})`);
  }
}

/** An operand of a dtype the op does not take. */
export class DTypeError extends ServelabError {
  override name = 'DTypeError';
  constructor(
    readonly op: string,
    readonly dtypes: readonly string[],
    detail: string,
  ) {
    super(`${op}: ${detail} (dtypes ${dtypes.join(', ')})`);
  }
}

/** A device's budget would be exceeded: nothing was allocated and every live tensor is intact. */
export class OutOfMemoryError extends ServelabError {
  override name = 'OutOfMemoryError';
  constructor(
    readonly device: string,
    readonly requestedBytes: number,
    readonly liveBytes: number,
    readonly budgetBytes: number,
    readonly tag: string,
  ) {
    super(
      `out of memory on ${device}: requested ${fmtBytes(requestedBytes)} (${tag}) with ` +
        `${fmtBytes(liveBytes)} live and a budget of ${fmtBytes(budgetBytes)}`,
    );
  }
}

/** An unknown or unusable device, or a tensor used on the wrong device or after dispose(). */
export class DeviceError extends ServelabError {
  override name = 'DeviceError';
}

export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(2)} ${units[u]} (${n} B)`;
}

/** A kernel refused its data at run time (an index out of range, say): the graph's inputs are untouched. */
export class KernelError extends ServelabError {
  override name = 'KernelError';
  constructor(
    readonly graph: string,
    readonly device: string,
    cause: unknown,
  ) {
    super(`${graph} on ${device}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}
