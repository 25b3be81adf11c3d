/**
 * The cells of a kernel soak (scripts/soak.ts): one generator per kind of cell a lesson produces. Every line a cell
 * prints carries its cell number and a sequence number (`@12.3`), so that the soak can tell a lost or reordered line
 * from a late one.
 */
import { Rng } from '../engine/index.ts';

export type CellKind = 'engine' | 'print' | 'display' | 'live' | 'busyInterrupt' | 'timerInterrupt' | 'typeError' | 'runtimeError' | 'oom';

export const CELL_KINDS: readonly CellKind[] = ['engine', 'print', 'display', 'live', 'busyInterrupt', 'timerInterrupt', 'typeError', 'runtimeError', 'oom'];

/** How often each kind is drawn after every kind has run once: mostly work that succeeds, as in a lesson. */
const WEIGHTS: Record<CellKind, number> = { engine: 25, print: 15, display: 15, live: 10, busyInterrupt: 7, timerInterrupt: 7, typeError: 7, runtimeError: 7, oom: 7 };

/** Every kind once (shuffled) early on, then kinds drawn by WEIGHTS. */
export function schedule(cells: number, seed: number): CellKind[] {
  const rng = new Rng(seed);
  const rand = () => rng.uniform();
  const first = [...CELL_KINDS];
  for (let i = first.length - 1; i > 0; i--) {
    const j = rng.uniformInt(i + 1);
    [first[i], first[j]] = [first[j], first[i]];
  }
  const total = Object.values(WEIGHTS).reduce((a, b) => a + b, 0);
  const out: CellKind[] = [];
  for (let i = 0; i < cells; i++) {
    if (i < first.length) {
      out.push(first[i]);
      continue;
    }
    let r = rand() * total;
    out.push(CELL_KINDS.find((k) => (r -= WEIGHTS[k]) < 0) ?? 'engine');
  }
  return out;
}

/** Defines what every later cell uses; run again after a restart. */
export const SETUP = "import { createDevice, matmul } from 'servelab';\nconst dev = await createDevice('cpu');\nconst soakPause = (ms: number) => new Promise((r) => setTimeout(r, ms));\ndev.name";

export interface CellPlan {
  code: string;
  /** stdout lines `@<cell>.<k>`, k = 0..lines-1, expected in this order. */
  lines: number;
  /** The error the reply must carry, or null for ok. */
  ename: string | null;
  interrupt?: 'busy' | 'timer';
  /** display_data then update_display_data for one display_id. */
  displays?: 'update' | 'live';
}

/** The cell's source: each line it prints carries its cell number and a sequence number checked on arrival. */
export function cellFor(kind: CellKind, c: number): CellPlan {
  const say = (k: number) => `console.log('@${c}.${k}');`;
  switch (kind) {
    case 'engine':
      // Small tensors and one matmul, checked against the sum the cell computes itself.
      return {
        code: [
          '{',
          `  ${say(0)}`,
          `  const a = dev.tensor(Float32Array.from({ length: 64 }, (_, i) => ((i * ${c}) % 7) - 3), [8, 8]);`,
          '  const b = await matmul(a, a);',
          '  const got = b.toArray().reduce((s, v) => s + v, 0);',
          '  const x = a.toArray();',
          '  let want = 0;',
          '  for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) for (let k = 0; k < 8; k++) want += x[i * 8 + k] * x[k * 8 + j];',
          "  if (Math.abs(got - want) > 1e-3 * (1 + Math.abs(want))) throw new Error(`matmul sum ${got}, expected ${want}`);",
          '  a.dispose();',
          '  b.dispose();',
          `  ${say(1)}`,
          '}',
        ].join('\n'),
        lines: 2,
        ename: null,
      };
    case 'print': {
      // Lines across awaits and timers: the order must survive the event loop.
      return {
        code: [`for (let k = 0; k < 40; k++) {`, `  console.log('@${c}.' + k);`, '  if (k % 10 === 9) await soakPause(k % 20 === 9 ? 0 : 2);', '}'].join('\n'),
        lines: 40,
        ename: null,
      };
    }
    case 'display':
      return {
        code: [
          '{',
          `  ${say(0)}`,
          `  const h = display(md\`cell ${c}: before\`, { displayId: true });`,
          `  ${say(1)}`,
          '  await soakPause(1);',
          `  h.update(md\`cell ${c}: after\`);`,
          `  ${say(2)}`,
          '}',
        ].join('\n'),
        lines: 3,
        ename: null,
        displays: 'update',
      };
    case 'live':
      return {
        code: [
          '{',
          `  const chart = live({ title: 'soak ${c}', series: { v: { unit: 'x' } }, intervalMs: 100 });`,
          `  ${say(0)}`,
          '  for (let i = 0; i < 30; i++) {',
          '    chart.push({ v: i * i });',
          '    if (i % 10 === 0) await soakPause(40);',
          '  }',
          `  ${say(1)}`,
          '  chart.close();',
          '}',
        ].join('\n'),
        lines: 2,
        ename: null,
        displays: 'live',
      };
    case 'busyInterrupt':
      // No await, no op: only SIGINT (vm's breakOnSigint) can stop it.
      return { code: [say(0), say(1), 'let spins = 0;', 'for (;;) spins++;'].join('\n'), lines: 2, ename: 'KeyboardInterrupt', interrupt: 'busy' };
    case 'timerInterrupt':
      // The pending timer and the one left behind must both be cancelled: neither line may ever arrive.
      return {
        code: [say(0), `setTimeout(() => console.log('@${c}.late'), 250);`, 'await soakPause(60_000);', `console.log('@${c}.late');`].join('\n'),
        lines: 1,
        ename: 'KeyboardInterrupt',
        interrupt: 'timer',
      };
    case 'typeError':
      // Rejected by the checker before it runs: nothing is printed.
      return { code: [say(0), `const soakWrong${c % 5}: number = 'cell ${c}';`].join('\n'), lines: 0, ename: 'TypeScriptError' };
    case 'runtimeError':
      return { code: [say(0), `const soakMissing = (${c} >= 0 ? null : {}) as unknown as { x: number };`, 'soakMissing.x;'].join('\n'), lines: 1, ename: 'TypeError' };
    case 'oom':
      // A 4 MiB tensor on a device with a 1 MiB budget.
      return {
        code: ['{', `  ${say(0)}`, '  const small = await createDevice(\'cpu\', { budget: 1 << 20 });', '  try {', '    small.empty([1024, 1024]);', '  } finally {', '    await small.dispose();', '  }', '}'].join('\n'),
        lines: 1,
        ename: 'OutOfMemoryError',
      };
  }
}
