/** Plain TypeScript kernels of the model ops in float64: rotary embedding, grouped-query attention over a KV cache, cross entropy. */
import { ServelabError } from '../../errors.ts';
import { rotaryInvFreq, type Reduction, type RopeLayout } from '../../graph/ops_model.ts';
import type { F } from './kernels.ts';

export interface RopeOptions extends RopeLayout {
  interleaved: boolean;
  inverse: boolean;
  theta: number;
}

/**
 * RoPE over x in its layout. With caches, row pos of cos/sin ([maxPositions, D/2]) gives the angles; without, they
 * are pos * theta^(-2i/D) in float64. Each pair (a, b) becomes (a cos - b sin, b cos + a sin); inverse negates sin.
 */
export function rotaryEmbedding(x: F, shape: readonly number[], pos: Int32Array, cos: F | null, sin: F | null, o: RopeOptions): F {
  const { rank, heads: H, headDim: D } = o;
  const half = D / 2;
  const [B, S] = rank === 4 ? [shape[0], shape[2]] : [shape[0], shape[1]];
  const maxPos = cos ? cos.length / half : Infinity;
  const freq = rotaryInvFreq(D, o.theta);
  const c = new Float64Array(half);
  const s = new Float64Array(half);
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S; t++) {
      const p = pos[b * S + t];
      if (cos && sin) {
        if (!(p >= 0 && p < maxPos)) throw new ServelabError(`RotaryEmbedding: position ${p} (batch ${b}, token ${t}) is outside the caches' 0..${maxPos - 1}`);
        for (let i = 0; i < half; i++) {
          c[i] = cos[p * half + i];
          s[i] = sin[p * half + i];
        }
      } else {
        for (let i = 0; i < half; i++) {
          c[i] = Math.cos(p * freq[i]);
          s[i] = Math.sin(p * freq[i]);
        }
      }
      if (o.inverse) for (let i = 0; i < half; i++) s[i] = -s[i];
      for (let h = 0; h < H; h++) {
        const base = rank === 4 ? ((b * H + h) * S + t) * D : ((b * S + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const [ia, ib] = o.interleaved ? [base + 2 * i, base + 2 * i + 1] : [base + i, base + i + half];
          out[ia] = x[ia] * c[i] - x[ib] * s[i];
          out[ib] = x[ib] * c[i] + x[ia] * s[i];
        }
      }
    }
  }
  return out;
}

export interface GqaResult {
  out: F;
  presentKey: F;
  presentValue: F;
}

/**
 * The cache update and causal attention of GroupQueryAttention: rows lens[b] .. lens[b]+S-1 of sequence b's cache take
 * the new keys and values, and query i of sequence b attends to rows 0 .. lens[b]+i with softmax(q k * scale).
 */
export function groupQueryAttention(
  q: F, k: F, v: F, pastKey: F, pastValue: F, lens: Int32Array, cacheShape: readonly number[], S: number, numHeads: number, scale?: number,
): GqaResult {
  const [B, Hkv, T, D] = cacheShape;
  const Hq = numHeads;
  const G = Hq / Hkv;
  const sc = scale ?? 1 / Math.sqrt(D);
  const presentKey = Float64Array.from(pastKey);
  const presentValue = Float64Array.from(pastValue);
  for (let b = 0; b < B; b++) {
    const len = lens[b];
    if (!(len >= 0 && len + S <= T)) {
      throw new ServelabError(`GroupQueryAttention: sequence ${b} has ${len} cached tokens and ${S} new ones; the cache holds ${T} (need 0 <= pastLength and pastLength + new <= maxSeq)`);
    }
    for (let h = 0; h < Hkv; h++) {
      for (let i = 0; i < S; i++) {
        const dst = ((b * Hkv + h) * T + len + i) * D;
        const src = ((b * S + i) * Hkv + h) * D;
        for (let d = 0; d < D; d++) {
          presentKey[dst + d] = k[src + d];
          presentValue[dst + d] = v[src + d];
        }
      }
    }
  }
  const out = new Float64Array(B * S * Hq * D);
  const p = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const cache = (b * Hkv + Math.floor(h / G)) * T * D;
      for (let i = 0; i < S; i++) {
        const qo = ((b * S + i) * Hq + h) * D;
        const n = lens[b] + i + 1;
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * presentKey[cache + j * D + d];
          p[j] = dot * sc;
          m = Math.max(m, p[j]);
        }
        let z = 0;
        for (let j = 0; j < n; j++) z += p[j] = Math.exp(p[j] - m);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += p[j] * presentValue[cache + j * D + d];
          out[qo + d] = acc / z;
        }
      }
    }
  }
  return { out, presentKey, presentValue };
}

/**
 * PagedAttention: query i of sequence b attends to the cached keys and values of positions j < lens[b], in slot
 * blockTable[b, j / bs] * bs + j % bs, and to the new tokens its tree mask row allows (causal when there is no mask).
 * The caches are only read.
 */
export function pagedAttention(
  q: F, k: F, v: F, keyCache: F, valueCache: F, cacheShape: readonly number[], blockTable: Int32Array, nb: number, bs: number,
  lens: Int32Array, tree: Uint8Array | null, B: number, S: number, numHeads: number, scale?: number,
): F {
  const [Hkv, slots, D] = cacheShape;
  const Hq = numHeads;
  const G = Hq / Hkv;
  const sc = scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * S * Hq * D);
  for (let b = 0; b < B; b++) {
    const past = lens[b];
    if (!(past >= 0 && past <= nb * bs)) throw new ServelabError(`PagedAttention: sequence ${b} has ${past} cached tokens; its block table covers ${nb * bs}`);
    const slot = new Int32Array(past);
    for (let j = 0; j < past; j++) {
      const blk = blockTable[b * nb + Math.floor(j / bs)];
      slot[j] = blk * bs + (j % bs);
      if (!(blk >= 0 && slot[j] < slots)) throw new ServelabError(`PagedAttention: block ${blk} (sequence ${b}, position ${j}) is not a block of the cache [0, ${slots / bs})`);
    }
    const p = new Float64Array(past + S);
    for (let i = 0; i < S; i++) {
      const seen = (j: number) => j < past || (tree ? tree[(b * S + i) * S + j - past] === 1 : j - past <= i);
      for (let h = 0; h < Hq; h++) {
        const kh = Math.floor(h / G);
        // Where position j's key and value are: a cache slot, or new token j - past of this step.
        const at = (j: number, d: number, cache: F, fresh: F) => (j < past ? cache[(kh * slots + slot[j]) * D + d] : fresh[((b * S + j - past) * Hkv + kh) * D + d]);
        const qo = ((b * S + i) * Hq + h) * D;
        let m = -Infinity;
        for (let j = 0; j < past + S; j++) {
          if (!seen(j)) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * at(j, d, keyCache, k);
          p[j] = dot * sc;
          m = Math.max(m, p[j]);
        }
        let z = 0;
        for (let j = 0; j < past + S; j++) if (seen(j)) z += p[j] = Math.exp(p[j] - m);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < past + S; j++) if (seen(j)) acc += p[j] * at(j, d, valueCache, v);
          out[qo + d] = acc / z;
        }
      }
    }
  }
  return out;
}

/** log_softmax of each row of C logits (the max subtracted first, so no row overflows). */
export function logSoftmaxRows(x: F, C: number): F {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, x[r * C + c]);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(x[r * C + c] - m);
    const lse = m + Math.log(z);
    for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c] - lse;
  }
  return out;
}

/** Which rows count: a label in 0..C-1 counts, ignoreIndex does not, anything else is an error. */
function weights(op: string, labels: Int32Array, C: number, ignore: number): { w: Uint8Array; count: number } {
  const w = new Uint8Array(labels.length);
  let count = 0;
  labels.forEach((l, r) => {
    if (l === ignore) return;
    if (!(l >= 0 && l < C)) throw new ServelabError(`${op}: label ${l} at row ${r} is neither a class in 0..${C - 1} nor ignoreIndex (${ignore})`);
    w[r] = 1;
    count++;
  });
  return { w, count };
}

/** -logProb[label] per row, reduced; rows whose label is ignoreIndex add 0 and are not counted by 'mean'. */
export function softmaxCrossEntropy(logits: F, labels: Int32Array, C: number, red: Reduction, ignore: number): { loss: F; logProb: F } {
  const logProb = logSoftmaxRows(logits, C);
  const { w, count } = weights('SoftmaxCrossEntropyLoss', labels, C, ignore);
  const rows = Float64Array.from(labels, (l, r) => (w[r] ? -logProb[r * C + l] : 0));
  if (red === 'none') return { loss: rows, logProb };
  const sum = rows.reduce((a, b) => a + b, 0);
  return { loss: Float64Array.of(red === 'sum' ? sum : sum / count), logProb };
}

/** d loss / d logits: (softmax - onehot) * dLoss (/ count for mean) per counted row, plus logProb's share. */
export function softmaxCrossEntropyGrad(dLoss: F | null, logits: F, labels: Int32Array, dLogProb: F | null, C: number, red: Reduction, ignore: number): F {
  const p = logSoftmaxRows(logits, C).map(Math.exp);
  const { w, count } = weights('SoftmaxCrossEntropyLossGrad', labels, C, ignore);
  const out = new Float64Array(logits.length);
  for (let r = 0; r < labels.length; r++) {
    if (dLoss && w[r]) {
      const g = red === 'none' ? dLoss[r] : red === 'sum' ? dLoss[0] : dLoss[0] / count;
      for (let c = 0; c < C; c++) out[r * C + c] = g * (p[r * C + c] - (c === labels[r] ? 1 : 0));
    }
    if (dLogProb) {
      let s = 0;
      for (let c = 0; c < C; c++) s += dLogProb[r * C + c];
      for (let c = 0; c < C; c++) out[r * C + c] += dLogProb[r * C + c] - p[r * C + c] * s;
    }
  }
  // 'mean' over no counted row: the loss is NaN (0/0), and so is its gradient.
  if (dLoss && red === 'mean' && count === 0) out.fill(NaN);
  return out;
}
