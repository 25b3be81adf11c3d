/**
 * Exercise checks that say what is wrong and by how much ("3600x too large: did you divide by seconds per hour?"),
 * not just pass or fail. Each result is shown as markdown and carries { servelab: { check, ok } } in its metadata.
 */
import { display } from '../display/display.ts';
import { markdown } from '../display/rich.ts';
import { formatNumber } from '../display/format.ts';

export interface CheckOptions {
  /** Relative tolerance: |actual - expected| <= tolerance * |expected| passes. Default 1e-6. */
  tolerance?: number;
  /** Absolute tolerance, for expected values at or near zero. Default 0. */
  atol?: number;
  /** Shown after every number, e.g. '$' or 'tokens/s'. */
  unit?: string;
  /**
   * Mistakes worth naming: when actual / expected is one of these factors (or its inverse, within 1%), the feedback
   * says which mistake it looks like, e.g. { 'seconds per hour (3600)': 3600 }.
   */
  mistakes?: Record<string, number>;
  /** Advice added to the feedback when the check fails: a string, or a function of the two values. */
  hint?: string | ((actual: number, expected: number) => string | undefined);
}

export interface CheckResult {
  name: string;
  ok: boolean;
  actual: unknown;
  expected: number | readonly number[];
  /** actual / expected (of the first element that differs, for arrays); null where it means nothing. */
  ratio: number | null;
  /** The feedback as markdown, as displayed. */
  message: string;
}

const fmt = (v: number, unit = '') => `${formatNumber(v, 4)}${unit ? ` ${unit}` : ''}`;

/** A factor as a learner reads it: 3600, 127, 2.5; 1.3e+7 past a million. */
const factor = (f: number) => (Math.abs(f) >= 1e6 ? f.toExponential(1) : formatNumber(f, 3));

/** "127x" for a ratio far from 1, "+12.5%" for one near it. */
function describeRatio(r: number): string {
  if (r > 0 && r < 2 && r > 0.5) return `off by ${r > 1 ? '+' : ''}${formatNumber((r - 1) * 100, 3)}%`;
  if (r > 0) return r > 1 ? `${factor(r)}x too large` : `${factor(1 / r)}x too small`;
  return `of the wrong sign (${factor(r)} times the expected value)`;
}

function namedMistake(r: number, mistakes: Record<string, number>): string | null {
  for (const [what, f] of Object.entries(mistakes)) {
    if (Math.abs(r / f - 1) <= 0.01) return `it is ${factor(f)}x the expected value: check the ${what}`;
    if (Math.abs(r * f - 1) <= 0.01) return `it is 1/${factor(f)} of the expected value: check the ${what}`;
  }
  if (Math.abs(r + 1) <= 0.01) return 'it has the wrong sign';
  return null;
}

function close(a: number, e: number, rtol: number, atol: number): boolean {
  return Math.abs(a - e) <= atol + rtol * Math.abs(e);
}

/** Compares one number; returns null when it passes, else why not. */
function diagnose(actual: unknown, expected: number, opts: CheckOptions): { why: string; ratio: number | null } | null {
  const { tolerance = 1e-6, atol = 0, unit = '', mistakes = {} } = opts;
  if (typeof actual !== 'number') {
    const got = actual === undefined ? 'undefined: nothing was computed yet' : `a ${typeof actual}, not a number`;
    return { why: `is ${got}`, ratio: null };
  }
  if (Number.isNaN(actual)) return { why: 'is NaN: the exercise still returns its placeholder, or divides 0 by 0', ratio: null };
  if (close(actual, expected, tolerance, atol)) return null;
  if (!Number.isFinite(actual)) return { why: `is ${actual}: a division by zero?`, ratio: null };
  if (expected === 0) return { why: `is ${fmt(actual, unit)}; expected 0`, ratio: null };
  const r = actual / expected;
  const named = namedMistake(r, mistakes);
  return { why: `is ${fmt(actual, unit)}, ${describeRatio(r)} (expected ${fmt(expected, unit)})${named ? `: ${named}` : ''}`, ratio: r };
}

function hintFor(opts: CheckOptions, actual: unknown, expected: number): string | undefined {
  if (typeof opts.hint === 'function') return typeof actual === 'number' ? opts.hint(actual, expected) : undefined;
  return opts.hint;
}

function show(name: string, ok: boolean, message: string): void {
  display(markdown(message), { metadata: { servelab: { check: name, ok } } });
}

/**
 * Checks a learner's value against the expected one and shows specific feedback: the ratio when it is far off,
 * the named mistake when the ratio matches one, the first wrong element of an array. Returns the result as well.
 */
export function check(name: string, actual: unknown, expected: number | readonly number[], opts: CheckOptions = {}): CheckResult {
  const tol = opts.tolerance ?? 1e-6;
  let failure: { why: string; ratio: number | null } | null;
  // The number a function hint is given: the value itself, or an array's first wrong element.
  let got0: unknown = actual;
  let exp0 = 0;
  if (typeof expected === 'number') {
    failure = diagnose(actual, expected, opts);
    exp0 = expected;
  } else if (!Array.isArray(actual) && !ArrayBuffer.isView(actual)) {
    failure = { why: `should be ${expected.length} numbers, got ${actual === undefined ? 'undefined' : typeof actual}`, ratio: null };
  } else {
    const a = Array.from(actual as ArrayLike<unknown>);
    failure = a.length === expected.length ? null : { why: `has ${a.length} elements; expected ${expected.length}`, ratio: null };
    for (let i = 0; !failure && i < expected.length; i++) {
      const f = diagnose(a[i], expected[i], opts);
      if (f) {
        failure = { why: `[${i}] ${f.why}`, ratio: f.ratio };
        got0 = a[i];
        exp0 = expected[i];
      }
    }
  }
  const label = `**${name}**`;
  let message: string;
  if (!failure) {
    const shown = typeof expected === 'number' ? ` = ${fmt(actual as number, opts.unit)}` : '';
    // A tolerance worth mentioning is one a learner might lean on; a float-rounding one is just "correct".
    const within = tol >= 1e-4 && typeof expected === 'number' && expected !== 0 ? ` (within ${formatNumber(tol * 100, 3)}%)` : '';
    message = `✅ ${label}${shown}: correct${within}.`;
  } else {
    const hint = hintFor(opts, got0, exp0);
    message = `❌ ${label} ${failure.why}.${hint ? `\n\n💡 ${hint}` : ''}`;
  }
  show(name, !failure, message);
  return { name, ok: !failure, actual, expected, ratio: failure?.ratio ?? (failure ? null : 1), message };
}

/** Free-form feedback from a check cell, for what a numeric comparison cannot say. Markdown. */
export const feedback = {
  /** A passed step: "✅ msg". */
  ok(message: string): void {
    show('feedback', true, `✅ ${message}`);
  },
  /** Something to fix: "❌ msg". */
  fix(message: string): void {
    show('feedback', false, `❌ ${message}`);
  },
  /** A nudge, neither pass nor fail: "💡 msg". */
  hint(message: string): void {
    display(markdown(`💡 ${message}`), { metadata: { servelab: { check: 'feedback' } } });
  },
};

/** The names a cell sees in its global scope (see kernel/lab_globals.ts). */
export const exerciseGlobals = { check, feedback } as const;
