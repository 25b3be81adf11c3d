/** Generation shown in a cell: one output under one display_id, redrawn at most 10 times a second, kept on an interrupt. */
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDevice } from '../../../engine/index.ts';
import type { Device } from '../../../engine/device/device.ts';
import { loadModel } from '../../../engine/model/checkpoint.ts';
import type { LlamaModel } from '../../../engine/model/llama.ts';
import { generateInCell, generationSummary } from '../../../kernel/display/generate_stream.ts';
import { throttle } from '../../../kernel/display/throttle.ts';
import { liveLoss } from '../../../kernel/display/live_loss.ts';
import { PLOTLY_MIME, plotlyJs, type FigureJson } from '../../../kernel/display/plotly.ts';
import { setSink } from '../../../kernel/display/sink.ts';
import { BUILTIN_RECIPE } from '../../../engine/model/builtin.ts';
import type { TrainState } from '../../../engine/train/trainer.ts';
import { labGlobals, labPrelude } from '../../../kernel/lab_globals.ts';
import { writeTinyModel } from '../tiny_model.ts';
import { RecordingSink } from './recording_sink.ts';

describe('throttle', () => {
  afterEach(() => vi.useRealTimers());

  it('a change every 7 ms for a second: at most 10 publishes a second, 100 ms apart, the last change published', () => {
    vi.useFakeTimers();
    const at: number[] = [];
    const t = throttle(() => at.push(Date.now()), 100, () => Date.now());
    const t0 = Date.now();
    let lastChange = 0;
    for (let ms = 0; ms < 1000; ms += 7) {
      t.changed();
      lastChange = Date.now();
      vi.advanceTimersByTime(7);
    }
    vi.advanceTimersByTime(200);
    expect(at[0]).toBe(t0); // leading edge: the first change shows at once
    expect(at.length).toBeLessThanOrEqual(11);
    expect(at.length).toBeGreaterThanOrEqual(9);
    for (let i = 1; i < at.length; i++) expect(at[i] - at[i - 1]).toBeGreaterThanOrEqual(100);
    expect(at.at(-1)).toBeGreaterThanOrEqual(lastChange); // trailing edge: nothing held back for good
  });

  it('flush publishes at once and starts the interval; cancel drops a pending publish', () => {
    vi.useFakeTimers();
    const at: number[] = [];
    const t0 = Date.now();
    const t = throttle(() => at.push(Date.now() - t0), 100, () => Date.now());
    t.flush();
    vi.advanceTimersByTime(30);
    t.changed(); // within the interval the flush started: held until it ends
    expect(at).toEqual([0]);
    vi.advanceTimersByTime(70);
    expect(at).toEqual([0, 100]);
    t.changed();
    t.cancel();
    vi.advanceTimersByTime(500);
    expect(at).toEqual([0, 100]);
  });
});

describe('generateInCell', () => {
  let dir: string;
  let dev: Device;
  let model: LlamaModel;
  beforeAll(async () => {
    dir = writeTinyModel().dir;
    dev = await createDevice('cpu');
    model = await loadModel(dir, { device: dev });
  });
  afterAll(async () => {
    model.dispose();
    await dev.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  afterEach(() => setSink(null));

  it('shows the text growing under one display_id and ends with the whole text and its summary line', async () => {
    const sink = new RecordingSink();
    setSink(sink);
    const pieces: string[] = [];
    // About 10 ms a token, so that 30 tokens take long enough for the rate limit to matter.
    const slowly = (p: string) => {
      pieces.push(p);
      for (const t = performance.now(); performance.now() - t < 10; );
    };
    const t0 = performance.now();
    const g = await generateInCell(model, 'Call me', { maxTokens: 30, onText: slowly });
    const elapsed = performance.now() - t0;
    expect(g).toMatchObject({ stopReason: 'length', promptTokens: 7 });
    expect(g.tokens).toHaveLength(30);
    expect(pieces.join('')).toBe(g.text);
    const ids = new Set(sink.events.map((e) => e.kind === 'display' && e.displayId));
    expect(ids.size).toBe(1);
    const [first, ...updates] = sink.events.filter((e) => e.kind === 'display');
    expect(first).toMatchObject({ update: false, bundle: { 'text/plain': 'Call me' } });
    expect(updates.every((e) => e.update)).toBe(true);
    const last = updates.at(-1)!;
    expect(generationSummary(g)).toMatch(/^30 tokens, \d+\.\d tokens\/s, stopped: length$/);
    expect(last.bundle['text/plain']).toBe(`Call me${g.text}\n\n${generationSummary(g)}`);
    expect(last.bundle['text/html']).toContain('<b>Call me</b>');
    // Every redraw before the last is the prompt and a prefix of the text, at least 100 ms after the one before.
    for (const e of updates.slice(0, -1)) expect(`Call me${g.text}`.startsWith(String(e.bundle['text/plain']))).toBe(true);
    const times = [first, ...updates.slice(0, -1)].map((e) => e.at);
    expect(times.length).toBeGreaterThanOrEqual(3);
    expect(times.length).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 1);
    for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(99);
  });

  it("the cell's interrupt stops generation at the next token and the text is kept", async () => {
    const sink = new RecordingSink();
    setSink(sink);
    let n = 0;
    const g = await generateInCell(model, 'Call me', { maxTokens: 400, onText: () => ++n === 3 && sink.controller.abort() });
    expect(g.stopReason).toBe('interrupted');
    expect(g.tokens.length).toBeLessThan(10);
    const last = sink.events.at(-1)!;
    expect(last.kind === 'display' && last.bundle['text/plain']).toBe(`Call me${g.text}\n\n${generationSummary(g)}`);
    expect(generationSummary(g)).toMatch(/stopped: interrupted$/);
  });

  it('outside a cell it says it needs one', async () => {
    await expect(generateInCell(model, 'Call me')).rejects.toThrow(/needs a running cell/);
  });
});

describe('liveLoss', () => {
  it('an onStep callback that charts loss against step and closes at the last step', () => {
    plotlyJs.reset();
    const sink = new RecordingSink();
    const onStep = liveLoss({ sink });
    const recipe = { ...BUILTIN_RECIPE, steps: 3 };
    for (const [step, loss] of [[1, 5.5], [2, 4.25], [3, 3.0]]) onStep({ step, loss, lr: 1e-3, tokensPerSec: 1000 }, { recipe, step } as TrainState);
    expect(onStep.chart.closed).toBe(true);
    const last = sink.forId(onStep.chart.displayId).at(-1)!;
    const fig = last.bundle[PLOTLY_MIME] as FigureJson;
    expect(fig.data[0]).toMatchObject({ name: 'loss (nats/token)', x: [1, 2, 3], y: [5.5, 4.25, 3.0] });
  });
});

describe('cell globals', () => {
  it('generateInCell and liveLoss are globals, declared for the type checker', () => {
    expect(labGlobals()).toMatchObject({ generateInCell, liveLoss });
    expect(labPrelude()).toMatch(/declare const generateInCell: typeof import\(".*generate_stream\.ts"\)\["generateInCell"\];/);
    expect(labPrelude()).toMatch(/declare const liveLoss: typeof import\(".*live_loss\.ts"\)\["liveLoss"\];/);
  });
});
