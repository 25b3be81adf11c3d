/** One benchmark section run by itself (`npx tsx bench/<section>.ts [--quick] [--out file.json]`), and a target's line. */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { Target } from './run.ts';

/** `  met    name: measured (goal ...)`, or MISSED with the gap: the form every section prints its targets in. */
export function targetLine(t: Target): string {
  return `  ${t.met ? 'met   ' : 'MISSED'} ${t.name}: ${t.measured} (goal ${t.goal})${t.gap ? `; gap: ${t.gap}` : ''}`;
}

/** True when `moduleUrl` (a section's import.meta.url) is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  return Boolean(process.argv[1]) && pathToFileURL(process.argv[1]).href === moduleUrl;
}

/** Runs a section on SERVELAB_DEVICE (default cpu), prints it and its targets, and writes `{ [name]: result, targets }` with --out. */
export async function runAlone<T>(
  name: string,
  bench: (kind: string, opts: { quick: boolean; log: (s: string) => void }) => Promise<T>,
  print: (r: T) => string[],
  targets: (r: T) => Target[],
): Promise<void> {
  const args = process.argv.slice(2);
  const result = await bench(process.env.SERVELAB_DEVICE ?? 'cpu', { quick: args.includes('--quick'), log: (s) => console.log(s) });
  const met = targets(result);
  console.log([...print(result), '\ntargets:', ...met.map(targetLine)].join('\n'));
  const out = args.indexOf('--out');
  if (out >= 0) writeFileSync(args[out + 1], JSON.stringify({ [name]: result, targets: met }, null, 2) + '\n');
}
