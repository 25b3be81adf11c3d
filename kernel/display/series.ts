/**
 * A bounded time series: past maxPoints, neighbouring buckets merge pairwise and each new point covers twice as
 * many samples, so an experiment of any length keeps between maxPoints/2 and maxPoints evenly spaced points.
 */

/** How samples in one bucket become one point: rates average; a state (bytes live) keeps its latest value. */
export type Merge = 'mean' | 'last';

export interface SeriesPoints {
  /** Seconds since the chart started. */
  t: number[];
  v: number[];
}

export class BoundedSeries {
  private readonly t: number[] = [];
  private readonly v: number[] = [];
  /** Samples per stored point; doubles at each compaction. */
  private stride = 1;
  // The bucket being filled: its count, sum, and latest sample.
  private accN = 0;
  private accSum = 0;
  private accT = 0;
  private accLast = 0;
  private n = 0;
  private total = 0;
  private lastValue: number | null = null;

  constructor(
    readonly maxPoints: number,
    readonly merge: Merge,
  ) {
    if (!Number.isInteger(maxPoints) || maxPoints < 2) throw new RangeError(`maxPoints must be an integer >= 2, got ${maxPoints}`);
  }

  /** Samples added so far (not points kept). */
  get count(): number {
    return this.n;
  }

  /** Mean of every sample added, not of the kept points. */
  get mean(): number | null {
    return this.n === 0 ? null : this.total / this.n;
  }

  get last(): number | null {
    return this.lastValue;
  }

  get samplesPerPoint(): number {
    return this.stride;
  }

  add(t: number, v: number): void {
    this.n++;
    this.total += v;
    this.lastValue = v;
    this.accN++;
    this.accSum += v;
    this.accT = t;
    this.accLast = v;
    if (this.accN < this.stride) return;
    this.t.push(t);
    this.v.push(this.bucketValue());
    this.accN = 0;
    this.accSum = 0;
    if (this.t.length > this.maxPoints) this.compact();
  }

  private bucketValue(): number {
    return this.merge === 'mean' ? this.accSum / this.accN : this.accLast;
  }

  /** Pairs of points become one; an odd point left over becomes the half-filled start of the next bucket. */
  private compact(): void {
    const len = this.t.length;
    const half = len >> 1;
    for (let i = 0; i < half; i++) {
      const a = 2 * i;
      const b = a + 1;
      this.t[i] = this.t[b];
      this.v[i] = this.merge === 'mean' ? (this.v[a] + this.v[b]) / 2 : this.v[b];
    }
    if (len % 2 === 1) {
      this.accN = this.stride;
      this.accSum = this.v[len - 1] * this.stride;
      this.accT = this.t[len - 1];
      this.accLast = this.v[len - 1];
    }
    this.t.length = half;
    this.v.length = half;
    this.stride *= 2;
  }

  /** The kept points plus the bucket still filling, so the latest state always shows. */
  points(): SeriesPoints {
    const t = this.t.slice();
    const v = this.v.slice();
    if (this.accN > 0) {
      t.push(this.accT);
      v.push(this.bucketValue());
    }
    return { t, v };
  }
}
