/** Exercise checks: specific feedback (ratios, named mistakes, NaN, arrays) shown as markdown with its verdict in metadata. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { setSink } from '../../../kernel/display/sink.ts';
import { check, feedback } from '../../../kernel/lesson/exercise.ts';
import { RecordingSink } from '../display/recording_sink.ts';

let sink: RecordingSink;
beforeEach(() => {
  sink = new RecordingSink();
  setSink(sink);
});
afterEach(() => setSink(null));

const shown = () => sink.events.map((e) => (e.kind === 'display' ? { md: e.bundle['text/markdown'], meta: e.metadata } : null));

describe('check', () => {
  it('passes within the tolerance and says so', () => {
    const r = check('scale', 0.5 + 1e-9, 0.5, { unit: '$' });
    expect(r).toMatchObject({ ok: true, ratio: 1 });
    expect(shown()).toEqual([{ md: '✅ **scale** = 0.5 $: correct.', meta: { servelab: { check: 'scale', ok: true } } }]);
    expect(check('scale', 0.52, 0.5, { tolerance: 0.05 }).message).toBe('✅ **scale** = 0.52: correct (within 5%).');
  });

  it('says by how much a value is off', () => {
    expect(check('scale', 127, 1).message).toBe('❌ **scale** is 127, 127x too large (expected 1).');
    expect(check('scale', 0.25, 100).message).toBe('❌ **scale** is 0.25, 400x too small (expected 100).');
    expect(check('scale', 1.1, 1, { tolerance: 0.01 }).message).toBe('❌ **scale** is 1.1, off by +10% (expected 1).');
    expect(check('scale', -2, 2).message).toBe('❌ **scale** is -2, of the wrong sign (-1 times the expected value) (expected 2): it has the wrong sign.');
  });

  it('names a known mistake when the ratio matches it, either way round', () => {
    const mistakes = { 'seconds per hour (3600)': 3600 };
    const big = check('cost', 7200, 2, { mistakes, unit: '$' });
    expect(big.ratio).toBe(3600);
    expect(big.message).toBe('❌ **cost** is 7200 $, 3600x too large (expected 2 $): it is 3600x the expected value: check the seconds per hour (3600).');
    expect(check('cost', 2 * 3600 * 3600, 2, { mistakes: { 'units, twice': 3600 * 3600 } }).message).toBe(
      '❌ **cost** is 25920000, 1.3e+7x too large (expected 2): it is 1.3e+7x the expected value: check the units, twice.',
    );
    expect(check('cost', 2 / 3600, 2, { mistakes }).message).toMatch(/3600x too small .*: it is 1\/3600 of the expected value: check the seconds per hour \(3600\)\.$/);
  });

  it('says what is missing when there is no number yet, and adds the hint', () => {
    expect(check('cost', NaN, 2, { hint: 'divide by 3600' }).message).toBe('❌ **cost** is NaN: the exercise still returns its placeholder, or divides 0 by 0.\n\n💡 divide by 3600');
    expect(check('cost', undefined, 2).message).toBe('❌ **cost** is undefined: nothing was computed yet.');
    expect(check('cost', '2', 2).message).toBe('❌ **cost** is a string, not a number.');
    expect(check('cost', Infinity, 2).message).toBe('❌ **cost** is Infinity: a division by zero?.');
    expect(check('cost', 4, 2, { hint: (a, e) => `you have ${a / e} times too much` }).message).toMatch(/\n\n💡 you have 2 times too much$/);
    // For an array, the hint gets its first wrong element.
    expect(check('codes', [1, 6, 3], [1, 2, 3], { hint: (a, e) => `got ${a}, want ${e}` }).message).toMatch(/\n\n💡 got 6, want 2$/);
  });

  it('uses an absolute tolerance for an expected zero', () => {
    expect(check('offset', 1e-9, 0, { atol: 1e-6 }).ok).toBe(true);
    expect(check('offset', 0.5, 0).message).toBe('❌ **offset** is 0.5; expected 0.');
  });

  it('compares arrays element by element and names the first wrong one', () => {
    expect(check('shape', [4096, 4096], [4096, 4096]).ok).toBe(true);
    expect(check('row', Float32Array.of(1, 2, 300), [1, 2, 3]).message).toBe('❌ **row** [2] is 300, 100x too large (expected 3).');
    expect(check('row', [1, 2], [1, 2, 3]).message).toBe('❌ **row** has 2 elements; expected 3.');
    expect(check('row', 5, [1, 2, 3]).message).toBe('❌ **row** should be 3 numbers, got number.');
  });
});

describe('feedback', () => {
  it('shows ok, fix and hint as markdown, with a verdict for ok and fix', () => {
    feedback.ok('All **three** goals measured.');
    feedback.fix('Set `dollarsPerHour` first.');
    feedback.hint('Try a batch of 64.');
    expect(shown()).toEqual([
      { md: '✅ All **three** goals measured.', meta: { servelab: { check: 'feedback', ok: true } } },
      { md: '❌ Set `dollarsPerHour` first.', meta: { servelab: { check: 'feedback', ok: false } } },
      { md: '💡 Try a batch of 64.', meta: { servelab: { check: 'feedback' } } },
    ]);
  });
});
