/**
 * What CPU offloading (ZeRO-Offload, Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model Training")
 * leaves on the accelerator, segment by segment, and the file its optimizer states spill to (ZeRO-Infinity,
 * Rajbhandari et al. 2021, "ZeRO-Infinity: Breaking the GPU Memory Wall for Extreme Scale Deep Learning": the NVMe
 * tier; the file is engine/parallel/offload_spill.ts). The plan counts the tensors a segment's run holds on the device: the boundary activations checkpointed so
 * far, its params when they are streamed in, its outputs (h, or d input and the gradients) and, with everything
 * resident, the gradients gathered so far and the optimizer's update. It is checked before a step changes anything,
 * so a budget too small for one segment fails with the segment's name and bytes instead of part way through.
 * Compiled sessions' arenas are not in it: what it names is the least a segment needs.
 */
import type { Device } from '../device/device.ts';
import { byteSize, type DType } from '../dtype/dtype.ts';
import { OutOfMemoryError, fmtBytes } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { paramSpecs } from '../train/lm_params.ts';
import { segmentSpecs, type SegmentPhase } from '../train/segments.ts';

/**
 * 'none': weights, gradients and optimizer states all on the device. 'optimizer': ZeRO-Offload, the optimizer states
 * and the update on the host, gradients sent there as they are made, the new weights sent back. 'optimizer+params':
 * the weights live on the host too and visit the device one segment at a time (ZeRO-Infinity's parameter offload).
 */
export type OffloadMode = 'none' | 'optimizer' | 'optimizer+params';

/** What one phase of one segment holds on the device beyond the tensors resident across the step. */
export interface SegmentNeed {
  /** 'embed', 'layer i', 'head', or 'optimizer' for the update of the resident states ('none' only). */
  segment: string;
  phase: SegmentPhase | 'update';
  /** The segment's params streamed in (0 when they are resident). */
  params: number;
  /** Batch inputs, checkpointed boundary activations, dOut, and the run's h or d input outputs. */
  activations: number;
  /** Gradients produced by this run and (resident) gathered from earlier ones; the update's outputs for 'optimizer'. */
  grads: number;
  bytes: number;
}

/** Bytes of each param (paramSpecs order) in `dtype`. */
export function paramBytes(cfg: LlamaConfig, dtype: DType): number[] {
  return paramSpecs(cfg).map((s) => byteSize(dtype, s.shape.reduce((a, b) => a * b, 1)));
}

/**
 * The tensors each forward and backward run holds on the device for a batch of `batch` x `seq` tokens, beyond the
 * tensors resident across the step (weights and optimizer states that are not streamed). Forward runs every segment
 * but the head, whose VJP gives the loss; the backward runs from the head down to the embedding.
 */
export function segmentNeeds(cfg: LlamaConfig, dtype: 'fp32' | 'bf16', mode: OffloadMode, batch: number, seq: number): SegmentNeed[] {
  const segs = segmentSpecs(cfg);
  const n = segs.length;
  const pBytes = paramBytes(cfg, dtype);
  const sum = (ix: readonly number[]) => ix.reduce((s, i) => s + pBytes[i], 0);
  const inputs = 3 * byteSize('int32', batch * seq) + 4; // tokens, positions, labels; the head's scale
  const h = byteSize('fp32', batch * seq * cfg.hiddenSize);
  const streamed = (i: number) => (mode === 'optimizer+params' ? sum(segs[i].params) : 0);
  const out: SegmentNeed[] = [];
  const need = (segment: string, phase: SegmentNeed['phase'], params: number, activations: number, grads: number) =>
    out.push({ segment, phase, params, activations, grads, bytes: params + activations + grads });
  for (let i = 0; i < n - 1; i++) need(segs[i].name, 'forward', streamed(i), inputs + i * h + h, 0);
  // Resident: every gradient made so far stays on the device until the update (a param shared by segments counted once).
  const held = new Set<number>();
  for (let i = n - 1; i >= 0; i--) {
    const dOut = i < n - 1 ? h : 0;
    const dInput = i > 0 ? h : 0;
    const earlier = mode === 'none' ? sum([...held]) : 0;
    // The tied embedding's second gradient is summed with the first: the sum is one more gradient for a moment.
    const shared = mode === 'none' ? sum(segs[i].params.filter((p) => held.has(p))) : 0;
    need(segs[i].name, 'backward', streamed(i), inputs + i * h + dOut + dInput + 4, earlier + sum(segs[i].params) + shared);
    for (const p of segs[i].params) held.add(p);
  }
  if (mode === 'none') {
    // AdamW's one update run: new weight (fp32 master or the param), m, v and the rounded param per param.
    const numel = paramSpecs(cfg).map((s) => s.shape.reduce((a, b) => a * b, 1));
    const outs = numel.reduce((s, k) => s + (dtype === 'bf16' ? 4 + 4 + 4 + 2 : 4 + 4 + 4) * k, 0);
    need('optimizer', 'update', 0, 0, sum(pBytes.map((_, i) => i)) + outs);
  }
  return out;
}

/** A budget that cannot hold one segment's run: which segment, which phase, and the bytes it needs. */
export class SegmentOutOfMemoryError extends OutOfMemoryError {
  override name = 'SegmentOutOfMemoryError';
  constructor(
    device: string,
    readonly need: SegmentNeed,
    /** Bytes live on the device that the step keeps (weights, optimizer states), compiled sessions excluded. */
    resident: number,
    budget: number,
  ) {
    super(device, need.bytes, resident, budget, need.phase === 'update' ? 'optimizer' : need.params ? 'weights' : 'activations');
    const what = need.phase === 'update' ? "the optimizer's update" : `segment '${need.segment}' (${need.phase})`;
    this.message =
      `out of memory on ${device}: ${what} needs at least ${fmtBytes(need.bytes)} (params ${fmtBytes(need.params)}, ` +
      `activations ${fmtBytes(need.activations)}, gradients and outputs ${fmtBytes(need.grads)}) with ${fmtBytes(resident)} ` +
      `resident, over a budget of ${fmtBytes(budget)}; raise the budget, use a smaller batch, or offload more`;
  }
}

/**
 * Throws, before anything runs, when the device's budget cannot hold `resident` bytes (model states kept there):
 * OutOfMemoryError; or the first run of `needs` on top of them: SegmentOutOfMemoryError naming the segment.
 */
export function assertFits(dev: Device, needs: readonly SegmentNeed[], resident: number): void {
  const budget = dev.memory.budget;
  if (budget === null) return;
  if (resident > budget) {
    throw new OutOfMemoryError(dev.name, resident, 0, budget, "model states kept on the device (weights, and with offload 'none' the optimizer states; gradients are counted with each segment)");
  }
  const bad = needs.find((x) => resident + x.bytes > budget);
  if (bad) throw new SegmentOutOfMemoryError(dev.name, bad, resident, budget);
}
