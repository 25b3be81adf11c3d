/**
 * Paged optimizer states (Dettmers et al., "QLoRA", NeurIPS 2023, section "Paged Optimizers"): optimizer states live
 * in paged memory that is evicted to CPU RAM when the GPU runs out and paged back for the update. Here the device's
 * budget plays the GPU's memory: states that do not fit it are Float32Arrays in host memory (counted by a tracker of
 * their own, outside the device's), and each step pages them in a group at a time, sized to the room left, updates
 * them with AdamW's own graph, and pages them out. A step that fails part way is undone, so params and states are
 * always all of one step.
 */
import type { Device } from '../device/device.ts';
import { MemoryTracker } from '../memory/tracker.ts';
import { Tensor, type DeviceRef, type Storage } from '../tensor/tensor.ts';
import { byteSize } from '../dtype/dtype.ts';
import { OutOfMemoryError, fmtBytes } from '../errors.ts';
import type { Slot, SlotFeeds, SlotUpdate } from './adamw.ts';

/** What paging cost: one step's, or the sum over steps. */
export interface PagingStats {
  /** State bytes copied from host memory to the device for an update. */
  pagedInBytes: number;
  /** State bytes copied from the device to host memory: updated states, and states evicted to make room. */
  pagedOutBytes: number;
  /** Transfers host -> device: one per state tensor (m, v, master) paged in. */
  pagesIn: number;
  /** Transfers device -> host. */
  pagesOut: number;
  /** Update graph runs. */
  groups: number;
  /** Params whose device-resident states were evicted to host memory to make room. */
  evicted: number;
  /** Milliseconds spent copying states in and out. */
  pagingMs: number;
  /** Milliseconds spent in the update graph runs. */
  updateMs: number;
  /** Milliseconds spent keeping the old values a failed step is undone from. */
  journalMs: number;
}

export const zeroPagingStats = (): PagingStats => ({ pagedInBytes: 0, pagedOutBytes: 0, pagesIn: 0, pagesOut: 0, groups: 0, evicted: 0, pagingMs: 0, updateMs: 0, journalMs: 0 });

/** Runs AdamW's update graph over the params `group`, fed from `feeds` (device tensors). */
export type RunGroup = (group: readonly number[], feeds: readonly SlotFeeds[]) => Promise<SlotUpdate[]>;

type Role = 'param' | 'master' | 'm' | 'v';
const STATES = ['master', 'm', 'v'] as const;

/** An old value a failed step writes back: the tensor is looked up by slot and role, since eviction replaces it. */
interface Saved {
  slot: number;
  role: Role;
  data: Storage;
}

/** Bytes of fp32 state a param of `numel` elements keeps: m and v, and a master copy when it has one. */
export function stateBytesOf(numel: number, master: boolean): number {
  return (master ? 3 : 2) * byteSize('fp32', numel);
}

/** A device-resident slot takes its update's outputs as its new values (no copy: tensor.assign). */
export function commit(s: Slot, u: SlotUpdate): void {
  (s.master ?? s.param).assign(u.w);
  s.m.assign(u.m);
  s.v.assign(u.v);
  if (s.master && u.param) s.param.assign(u.param);
}

const stateBytes = (s: Slot) => stateBytesOf(s.param.numel, s.master !== null);

/** What one param's update run returns (host outputs, as run by default): weight, m, v and the rounded param. */
function outputBytes(s: Slot): number {
  const n = s.param.numel;
  return byteSize(s.master ? 'fp32' : s.param.dtype, n) + 2 * byteSize('fp32', n) + (s.master ? byteSize(s.param.dtype, n) : 0);
}

const describe = (s: Slot, i: number) => `param ${i} '${s.param.label || `param ${i}`}' ${s.param.dtype}[${s.param.shape.join(', ')}]`;

export class StatePager {
  /** Host memory: where paged-out states live, with a tracker of its own (the device's budget does not cover it). */
  readonly host: DeviceRef;
  lastStep = zeroPagingStats();
  readonly total = zeroPagingStats();

  constructor(
    readonly device: Device,
    /** Bytes of the budget that placing states leaves free. */
    readonly reserveBytes: number,
  ) {
    this.host = { name: `${device.name} host`, memory: new MemoryTracker(`${device.name} host`) };
  }

  /** Where a new param's states go: the device while they fit its budget (less the reserve), else host memory. */
  placeFor(bytes: number): DeviceRef {
    const { budget, live } = this.device.memory;
    return budget === null || live + bytes + this.reserveBytes <= budget ? this.device : this.host;
  }

  /**
   * One update of every slot, in param order: as many params per graph run as fit the room left, paged states
   * copied in before the run and out after it, resident states of other params evicted when one param alone does not
   * fit. Checked first: a param that cannot fit even with every other state paged out raises OutOfMemoryError before
   * anything changes. When every param fits one run and no state is paged, this is exactly a plain AdamW step.
   */
  async step(slots: readonly Slot[], run: RunGroup): Promise<void> {
    const stats = (this.lastStep = zeroPagingStats());
    this.checkFits(slots);
    let journal: Saved[] | null = null;
    try {
      for (let i = 0; i < slots.length; ) {
        await this.makeRoom(slots, i, stats);
        const room = this.room();
        const group = [i];
        let used = this.need(slots[i]);
        for (let j = i + 1; j < slots.length && used + this.need(slots[j]) <= room; j++) {
          group.push(j);
          used += this.need(slots[j]);
        }
        for (;;) {
          // One run over every param, all resident, commits all at once as AdamW does: nothing to undo.
          if (!(i === 0 && group.length === slots.length && slots.every((s) => this.resident(s)))) journal ??= [];
          try {
            await this.runGroup(slots, group, run, journal, stats);
            break;
          } catch (e) {
            // Room the plan could not see (a session compiled for this group's structure): fewer params, or fewer
            // resident states. runGroup fails before it changes anything of its group.
            if (!(e instanceof OutOfMemoryError)) throw e;
            if (group.length > 1) group.length = Math.ceil(group.length / 2);
            else if (!(await this.evictOne(slots, i, stats))) throw e;
          }
        }
        i += group.length;
      }
    } catch (e) {
      if (journal) undo(slots, journal);
      throw e;
    } finally {
      for (const k of Object.keys(stats) as (keyof PagingStats)[]) this.total[k] += stats[k];
    }
  }

  private resident(s: Slot): boolean {
    return s.m.device === this.device;
  }

  /** Device bytes a slot's update takes beyond what is live: its paged-in state and the run's outputs. */
  private need(s: Slot): number {
    return (this.resident(s) ? 0 : stateBytes(s)) + outputBytes(s);
  }

  private room(): number {
    const { budget, live } = this.device.memory;
    return budget === null ? Infinity : budget - live;
  }

  private checkFits(slots: readonly Slot[]): void {
    const { budget, live } = this.device.memory;
    if (budget === null) return;
    // What stays on the device whatever is paged: weights, gradients, sessions, everything but these states.
    const others = live - slots.reduce((n, s) => n + (this.resident(s) ? stateBytes(s) : 0), 0);
    slots.forEach((s, i) => {
      const want = stateBytes(s) + outputBytes(s);
      if (others + want > budget) {
        throw new OutOfMemoryError(
          this.device.name,
          want,
          others,
          budget,
          `optimizer: ${describe(s, i)} needs its state (${fmtBytes(stateBytes(s))}) and its update's outputs ` +
            `(${fmtBytes(outputBytes(s))}) on the device at once, even with every other optimizer state paged out`,
        );
      }
    });
  }

  /** Evicts other params' resident states, last param first, until slot i's update fits. */
  private async makeRoom(slots: readonly Slot[], i: number, stats: PagingStats): Promise<void> {
    while (this.need(slots[i]) > this.room() && (await this.evictOne(slots, i, stats)));
    if (this.need(slots[i]) > this.room()) {
      const { budget, live } = this.device.memory;
      throw new OutOfMemoryError(this.device.name, this.need(slots[i]), live, budget!, `optimizer: update of ${describe(slots[i], i)}`);
    }
  }

  /** Evicts the resident states of the last param other than slot i that has them; false when none has. */
  private async evictOne(slots: readonly Slot[], i: number, stats: PagingStats): Promise<boolean> {
    for (let j = slots.length - 1; j >= 0; j--) {
      if (j !== i && this.resident(slots[j])) {
        await this.evict(slots[j], stats);
        return true;
      }
    }
    return false;
  }

  private async evict(s: Slot, stats: PagingStats): Promise<void> {
    const t0 = performance.now();
    const roles = STATES.filter((r) => s[r] !== null);
    const copies = await Promise.all(roles.map((r) => s[r]!.read()));
    roles.forEach((r, k) => {
      const old = s[r]!;
      setState(s, r, Tensor.adopt(this.host, old.shape, 'fp32', copies[k], 'optimizer', old.label));
      stats.pagedOutBytes += old.bytes;
      stats.pagesOut++;
      old.dispose();
    });
    stats.evicted++;
    stats.pagingMs += performance.now() - t0;
  }

  /**
   * Pages the group's host states in, runs the update, keeps the old values (journal), pages the updated states out,
   * and only then, with no await left, makes every new value current.
   */
  private async runGroup(slots: readonly Slot[], group: readonly number[], run: RunGroup, journal: Saved[] | null, stats: PagingStats): Promise<void> {
    const pagedIn: Tensor[] = [];
    let outs: SlotUpdate[] = [];
    try {
      let t0 = performance.now();
      const pageIn = (x: Tensor) => {
        const d = Tensor.adopt(this.device, x.shape, 'fp32', (x.data as Float32Array).slice(), 'optimizer', x.label);
        pagedIn.push(d);
        stats.pagedInBytes += d.bytes;
        stats.pagesIn++;
        return d;
      };
      const feeds = group.map((k): SlotFeeds => {
        const s = slots[k];
        if (this.resident(s)) return { w: s.master ?? s.param, m: s.m, v: s.v };
        return { w: s.master ? pageIn(s.master) : s.param, m: pageIn(s.m), v: pageIn(s.v) };
      });
      stats.pagingMs += performance.now() - t0;
      t0 = performance.now();
      outs = await run(group, feeds);
      stats.updateMs += performance.now() - t0;
      stats.groups++;
      for (const d of pagedIn) d.dispose();
      if (journal) {
        t0 = performance.now();
        for (const k of group) {
          const s = slots[k];
          for (const role of ['param', ...STATES] as const) {
            const x = role === 'param' ? s.param : s[role];
            // Host states are replaced, not overwritten, by the page-out below: their arrays are the old values as they are.
            if (x) journal.push({ slot: k, role, data: x.device === this.host ? x.data : await x.read() });
          }
        }
        stats.journalMs += performance.now() - t0;
      }
      t0 = performance.now();
      const pagedOut = await Promise.all(
        group.map((k, j) => (this.resident(slots[k]) ? null : Promise.all([slots[k].master ? outs[j].w : null, outs[j].m, outs[j].v].map((x) => x?.read() ?? null)))),
      );
      group.forEach((k, j) => {
        const s = slots[k];
        const u = outs[j];
        const host = pagedOut[j];
        if (!host) return commit(s, u);
        const [w, m, v] = host;
        const put = (x: Tensor, data: Storage) => {
          x.assign(Tensor.adopt(this.host, x.shape, 'fp32', data, 'optimizer', x.label));
          stats.pagedOutBytes += data.byteLength;
          stats.pagesOut++;
        };
        if (s.master) put(s.master, w!);
        put(s.m, m!);
        put(s.v, v!);
        s.param.assign(s.master ? u.param! : u.w);
      });
      stats.pagingMs += performance.now() - t0;
    } finally {
      for (const d of pagedIn) d.dispose();
      for (const u of outs) for (const x of [u.w, u.m, u.v, u.param]) x?.dispose();
    }
  }
}

function setState(s: Slot, role: (typeof STATES)[number], x: Tensor): void {
  if (role === 'master') s.master = x;
  else s[role] = x;
}

/** Writes the journal's old values back, newest first: every param and state is as it was before the step. */
function undo(slots: readonly Slot[], journal: readonly Saved[]): void {
  for (const e of [...journal].reverse()) {
    const s = slots[e.slot];
    const x = e.role === 'param' ? s.param : s[e.role]!;
    // A tensor still in device memory was never assigned a host output: it holds its old value.
    if (x.location !== 'host') continue;
    x.data.set(e.data as Float32Array & Uint16Array);
    x.touch();
  }
}
