/**
 * A process and everything it started, from /proc: a kernel is its node process and the type checker's process (and
 * any helper a native library forks), so its memory and CPU time are the tree's.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** pid and every descendant of it, parents first. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // The command name may hold spaces or parentheses: ppid is the second field after the last ')'.
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // A process that ended while we listed /proc.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** VmRSS of a process and every descendant, in bytes (a process that ended meanwhile counts 0). */
export function treeRss(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      total += m ? Number(m[1]) * 1024 : 0;
    } catch {
      // Ended.
    }
  }
  return total;
}
