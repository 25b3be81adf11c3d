/** Memory of the same weight matrix in each dtype: the device's tracker against params x bits / 8 (the lecture's "lower memory consumption"). */
import type { Device } from '../device/device.ts';
import { getDevice } from '../device/select.ts';
import { bitsOf, type DType } from '../dtype/dtype.ts';
import type { BackendName } from '../backends/backend.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import { DEFAULT_SEED, sampleValues } from './random.ts';
import { checkAbort, positiveInt } from './util.ts';

export type WeightDType = 'fp32' | 'fp16' | 'bf16' | 'int8' | 'int4' | 'nf4';
export const WEIGHT_DTYPES: readonly WeightDType[] = Object.freeze(['fp32', 'fp16', 'bf16', 'int8', 'int4', 'nf4'] as const);

export interface WeightMemoryRow {
  dtype: WeightDType;
  params: number;
  bitsPerParam: number;
  /** params x bits / 8. */
  formulaBytes: number;
  /** Growth of the tracker's live bytes when the weight tensor was allocated. */
  measuredBytes: number;
  /**
   * fp32 scales that int8 (one per output column) and 4-bit formats (one per block of blockSize along K) need,
   * allocated as their own tensor; 0 for float formats.
   */
  scaleFormulaBytes: number;
  scaleMeasuredBytes: number;
  /** (measured weight + scale bytes) x 8 / params: 5 bits for 4-bit with blocks of 32 and fp32 scales (one 32-bit scale per 32 weights). */
  effectiveBitsPerParam: number;
  /** Live bytes were back where they started once the tensors were disposed. */
  released: boolean;
}

export interface WeightMemoryResult {
  device: string;
  kind: BackendName;
  k: number;
  n: number;
  blockSize: number;
  rows: WeightMemoryRow[];
}

export interface WeightMemoryOptions {
  device?: Device;
  /** A [k, n] weight, as a Linear layer's k inputs by n outputs. */
  k?: number;
  n?: number;
  dtypes?: readonly WeightDType[];
  /** 4-bit block size along k. */
  blockSize?: number;
  seed?: number;
  signal?: AbortSignal;
}

/** Allocates and returns how many bytes the tracker saw arrive, keeping the tensor for later disposal. */
function measure(dev: Device, held: Tensor[], make: () => Tensor): number {
  const before = dev.memory.live;
  held.push(make());
  return dev.memory.live - before;
}

/**
 * Allocates one [k, n] weight per dtype on the device (tag 'weights') and reads the tracker. Float formats
 * hold the same seeded values rounded; int8 and 4-bit tensors hold placeholder codes, since their size does
 * not depend on the codes (engine/quant computes real ones).
 */
export async function weightMemory(opts: WeightMemoryOptions = {}): Promise<WeightMemoryResult> {
  const { k = 1024, n = 1024, dtypes = WEIGHT_DTYPES, blockSize = 32, seed = DEFAULT_SEED, signal } = opts;
  positiveInt('weightMemory k', k);
  positiveInt('weightMemory n', n);
  positiveInt('weightMemory blockSize', blockSize);
  const dev = opts.device ?? (await getDevice());
  const params = k * n;
  const values = sampleValues(params, 'signed', seed);
  const rows: WeightMemoryRow[] = [];
  for (const dtype of dtypes) {
    checkAbort(signal);
    const held: Tensor[] = [];
    const start = dev.memory.live;
    let measuredBytes: number;
    let scaleMeasuredBytes = 0;
    let scaleFormulaBytes = 0;
    try {
      switch (dtype) {
        case 'fp32':
        case 'fp16':
        case 'bf16':
          measuredBytes = measure(dev, held, () => dev.tensor(values, [k, n], dtype, { tag: 'weights', label: `w ${dtype}` }));
          break;
        case 'int8':
          measuredBytes = measure(dev, held, () => dev.tensor(new Int8Array(params), [k, n], 'int8', { tag: 'weights', label: 'w int8' }));
          scaleFormulaBytes = n * 4;
          scaleMeasuredBytes = measure(dev, held, () => dev.empty([n], 'fp32', { tag: 'weights', label: 'w int8 scales' }));
          break;
        case 'int4':
        case 'nf4': {
          if (n % 2 !== 0) throw new ServelabError(`weightMemory: ${dtype} packs two codes per byte along n, which must be even (got ${n})`);
          const codes = new Array<number>(params).fill(dtype === 'nf4' ? 7 : 0);
          measuredBytes = measure(dev, held, () => dev.packed(codes, [k, n], dtype, { tag: 'weights', label: `w ${dtype}` }));
          const blocks = Math.ceil(k / blockSize) * n;
          scaleFormulaBytes = blocks * 4;
          scaleMeasuredBytes = measure(dev, held, () => dev.empty([blocks], 'fp32', { tag: 'weights', label: `w ${dtype} scales` }));
          break;
        }
        default:
          throw new ServelabError(`weightMemory: unknown dtype ${JSON.stringify(dtype)}; expected one of ${WEIGHT_DTYPES.join(', ')}`);
      }
    } finally {
      for (const t of held) t.dispose();
    }
    const bits = bitsOf(dtype as DType);
    rows.push({
      dtype,
      params,
      bitsPerParam: bits,
      formulaBytes: (params * bits) / 8,
      measuredBytes,
      scaleFormulaBytes,
      scaleMeasuredBytes,
      effectiveBitsPerParam: ((measuredBytes + scaleMeasuredBytes) * 8) / params,
      released: dev.memory.live === start,
    });
  }
  return { device: dev.name, kind: dev.kind, k, n, blockSize, rows };
}
