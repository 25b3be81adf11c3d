/**
 * A seeded, resumable random stream for training: mulberry32 (Tommy Ettinger, 2017) read as a counter, with
 * Box-Muller normals (Box & Muller 1958). The state is three plain numbers, so a checkpoint can save it as JSON and
 * a resumed run draws exactly what the uninterrupted one would have.
 */
import { ServelabError } from '../errors.ts';
import { mulberry32At } from '../precision/random.ts';

/** Everything needed to continue a stream: draw number `counter` of the mulberry32 sequence for `seed` comes next. */
export interface RngState {
  seed: number;
  counter: number;
  /** Box-Muller makes normals in pairs; the second one waits here for the next normal() call. */
  spare: number | null;
}

const TWO_32 = 4294967296;

export class Rng {
  private seed: number;
  private counter = 0;
  private spare: number | null = null;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new ServelabError(`Rng: seed must be an integer, got ${seed}`);
    // mulberry32 works on 32 bits; reducing here makes seeds 1 and 2^32 + 1 the same stream, as they are anyway.
    this.seed = seed | 0;
  }

  /** A stream that continues from a saved state. */
  static fromState(state: RngState): Rng {
    const r = new Rng(state.seed);
    r.restore(state);
    return r;
  }

  /** A copy of the state; the stream is not affected by later changes to it. */
  state(): RngState {
    return { seed: this.seed, counter: this.counter, spare: this.spare };
  }

  restore(state: RngState): void {
    if (!Number.isSafeInteger(state.seed) || !Number.isSafeInteger(state.counter) || state.counter < 0) {
      throw new ServelabError(`Rng.restore: not a saved state: ${JSON.stringify(state)}`);
    }
    this.seed = state.seed | 0;
    this.counter = state.counter;
    this.spare = state.spare ?? null;
  }

  /** The next 32-bit output, an integer in [0, 2^32); identical to stateful mulberry32 seeded with `seed`. */
  nextUint32(): number {
    return mulberry32At(this.seed, this.counter++);
  }

  /** Uniform in [0, 1), a multiple of 2^-32. */
  uniform(): number {
    return this.nextUint32() / TWO_32;
  }

  /** Uniform integer in [0, n), unbiased: outputs past the last whole multiple of n are redrawn. */
  uniformInt(n: number): number {
    if (!Number.isSafeInteger(n) || n < 1 || n > TWO_32) throw new ServelabError(`Rng.uniformInt: n must be an integer in [1, 2^32], got ${n}`);
    const limit = TWO_32 - (TWO_32 % n);
    let x = this.nextUint32();
    while (x >= limit) x = this.nextUint32();
    return x % n;
  }

  /** A normal draw with the given mean and standard deviation. */
  normal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return mean + std * z;
    }
    // u1 in (0, 1]: log(0) would be -inf.
    const u1 = (this.nextUint32() + 1) / TWO_32;
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return mean + std * r * Math.cos(2 * Math.PI * u2);
  }
}
