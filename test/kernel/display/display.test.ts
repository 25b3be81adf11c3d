import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as displayModule from '../../../kernel/display/display.ts';
import { clearOutput, display, displayGlobals, updateDisplay } from '../../../kernel/display/display.ts';
import { resetDisplay } from '../../../kernel/display/reset.ts';
import { md } from '../../../kernel/display/rich.ts';
import { PLOTLY_MIME, plotlyJs } from '../../../kernel/display/plotly.ts';
import { setSink } from '../../../kernel/display/sink.ts';
import { RecordingSink } from './recording_sink.ts';

let sink: RecordingSink;
beforeEach(() => {
  sink = new RecordingSink();
  setSink(sink);
  resetDisplay();
});
afterEach(() => setSink(null));

describe('display functions', () => {
  it('display(x) publishes display_data with x\'s bundle and no id', () => {
    expect(display(md`**hi**`)).toBeUndefined();
    expect(sink.events).toEqual([{ kind: 'display', at: expect.any(Number), bundle: { 'text/markdown': '**hi**', 'text/plain': '**hi**' }, displayId: undefined, update: false, metadata: undefined }]);
  });

  it('a display id gives a handle that updates in place; updateDisplay does the same by id', () => {
    const h = display('step 0', { displayId: true });
    expect(h.displayId).toMatch(/^[0-9a-f-]{36}$/);
    h.update('step 1');
    updateDisplay(h.displayId, { step: 2 });
    expect(sink.forId(h.displayId).map((e) => [e.update, e.bundle['text/plain']])).toEqual([
      [false, 'step 0'],
      [true, 'step 1'],
      [true, '{ step: 2 }'],
    ]);
    const named = display('x', { displayId: 'progress', metadata: { note: 1 } });
    expect(named.displayId).toBe('progress');
    expect(sink.forId('progress')[0].metadata).toEqual({ note: 1 });
  });

  it('raw bundles are published as they are', () => {
    display({ 'text/html': '<b>b</b>', 'text/plain': 'b' }, { raw: true });
    expect(sink.events[0]).toMatchObject({ bundle: { 'text/html': '<b>b</b>', 'text/plain': 'b' } });
    expect(() => display('x', { raw: true })).toThrow(/MIME bundle/);
  });

  it('clearOutput passes wait through', () => {
    clearOutput();
    clearOutput(true);
    expect(sink.events.map((e) => e.kind === 'clear' && e.wait)).toEqual([false, true]);
  });

  it('outside a running cell, display says what is missing', () => {
    setSink(null);
    expect(() => display('x')).toThrow(/needs a running cell/);
  });

  it("displayGlobals holds what a cell's global scope gets, and each works through the sink", () => {
    const g = displayGlobals();
    const names = ['clearOutput', 'display', 'html', 'image', 'live', 'markdown', 'md', 'plot', 'table', 'updateDisplay'];
    expect(Object.keys(g).sort()).toEqual(names);
    // The kernel puts every function the module exports on the cell's scope: the same names and nothing more.
    expect(Object.keys(displayModule).filter((k) => k !== 'displayGlobals').sort()).toEqual(names);
    g.display(g.table([{ a: 1 }]));
    g.display(g.plot({ y: [1, 2] }));
    const chart = g.live({ title: 't' });
    chart.close();
    expect(sink.events[0]).toMatchObject({ bundle: { 'text/plain': 'a\n-\n1' } });
    expect(sink.events[1]).toMatchObject({ bundle: { [PLOTLY_MIME]: expect.any(Object) } });
    expect(plotlyJs.embedded).toBe(true);
    expect(sink.forId(chart.displayId)).toHaveLength(2);
  });

  it('resetDisplay (a restart) closes live charts and lets the next plot embed plotly.js again', () => {
    const chart = displayGlobals().live();
    display(displayGlobals().plot({ y: [1] }));
    resetDisplay();
    expect(chart.closed).toBe(true);
    expect(plotlyJs.embedded).toBe(false);
  });
});
