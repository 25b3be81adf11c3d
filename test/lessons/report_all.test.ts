/** The README's main job: `servelab report --all` exports every lesson to a standalone HTML report without a failing cell. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('servelab report --all', () => {
  it('writes one report per lesson and an index, every cell passing', () => {
    const out = mkdtempSync(join(tmpdir(), 'servelab-report-all-'));
    const lessons = readdirSync('lessons').filter((f) => /^\d\d-[a-z0-9-]+\.md$/.test(f)).sort(); // not NN-slug.solutions.md
    expect(lessons.length).toBeGreaterThanOrEqual(3);
    const r = spawnSync('node', ['bin/servelab.js', 'report', '--all', '-o', out], { encoding: 'utf8', timeout: 600_000 });
    expect(r.status, r.stderr).toBe(0);
    for (const l of lessons) {
      const html = readFileSync(join(out, l.replace(/\.md$/, '.html')), 'utf8');
      expect(html, l).not.toMatch(/class="banner"/);
      expect(html, l).toMatch(/id="servelab-measurements"/);
      expect(html.match(/\* plotly\.js v\d/g)?.length, `${l} embeds plotly.js once`).toBe(1);
    }
    const index = readFileSync(join(out, 'index.html'), 'utf8');
    expect(index.match(/<td>ok<\/td>/g)?.length).toBe(lessons.length);
  }, 600_000);
});
