/**
 * A contiguous KV cache: per layer one key and one value tensor [batch, kvHeads, maxSeq, headDim] reserved for the
 * longest sequence up front (as Hugging Face's static cache; the waste that vLLM's paged attention removes), and
 * each sequence's length. The tensors are tagged 'kv' and, on a GPU, stay in device memory between steps.
 */
import type { Device } from '../device/device.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { ServelabError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';

export class KvCache {
  private keys: Tensor[];
  private vals: Tensor[];
  /** Tokens cached per sequence. */
  readonly lengths: Int32Array;
  private disposedFlag = false;

  private constructor(
    readonly cfg: LlamaConfig,
    readonly batch: number,
    readonly maxSeq: number,
    keys: Tensor[],
    vals: Tensor[],
  ) {
    this.keys = keys;
    this.vals = vals;
    this.lengths = new Int32Array(batch);
  }

  /** Reserves the cache (zeros) for `batch` sequences of up to `maxSeq` tokens; OutOfMemoryError if it cannot fit. */
  static async create(dev: Device, cfg: LlamaConfig, batch: number, maxSeq: number): Promise<KvCache> {
    if (!Number.isInteger(batch) || batch < 1) throw new ServelabError(`KvCache: batch must be a positive integer, got ${batch}`);
    if (!Number.isInteger(maxSeq) || maxSeq < 1) throw new ServelabError(`KvCache: maxSeq must be a positive integer, got ${maxSeq}`);
    const shape = [batch, cfg.numKvHeads, maxSeq, cfg.headDim];
    const made: Tensor[] = [];
    try {
      for (let i = 0; i < 2 * cfg.numLayers; i++) {
        const host = dev.empty(shape, 'fp32', { tag: 'kv', label: `kv.${i >> 1}.${i & 1 ? 'v' : 'k'}` });
        made.push(host);
        if (dev.kind === 'webgpu') {
          made[made.length - 1] = await dev.toDevice(host);
          host.dispose();
        }
      }
    } catch (e) {
      for (const t of made) t.dispose();
      throw e;
    }
    return new KvCache(cfg, batch, maxSeq, made.filter((_, i) => i % 2 === 0), made.filter((_, i) => i % 2 === 1));
  }

  /** Bytes reserved: 2 x layers x batch x kvHeads x maxSeq x headDim x 4. */
  get bytes(): number {
    return [...this.keys, ...this.vals].reduce((s, t) => s + t.bytes, 0);
  }

  /** The graph feeds, in the decoder's order: k0, v0, k1, v1, ... */
  feeds(): Tensor[] {
    this.assertLive();
    return this.keys.flatMap((k, i) => [k, this.vals[i]]);
  }

  /** Takes a step's present keys and values (same order as feeds) in place of the old ones. */
  replace(present: readonly Tensor[]): void {
    this.assertLive();
    if (present.length !== 2 * this.keys.length) throw new ServelabError(`KvCache: ${present.length} tensors for ${this.keys.length} layers`);
    for (const t of this.feeds()) t.dispose();
    this.keys = present.filter((_, i) => i % 2 === 0).map((t) => t.retag('kv'));
    this.vals = present.filter((_, i) => i % 2 === 1).map((t) => t.retag('kv'));
  }

  /** Can `tokens` more tokens be appended to each of these sequences? */
  canAppend(tokens: number, rows: readonly number[] = [...this.lengths.keys()]): boolean {
    return rows.every((b) => this.lengths[b] + tokens <= this.maxSeq);
  }

  dispose(): void {
    if (this.disposedFlag) return;
    for (const t of this.feeds()) t.dispose();
    this.disposedFlag = true;
  }

  private assertLive(): void {
    if (this.disposedFlag) throw new ServelabError('KvCache: the cache was disposed');
  }
}
