import { describe, expect, it } from 'vitest';
import { JUPYTER_DISPLAY, MIME, displayLimits, toMimeBundle } from '../../../kernel/display/mime.ts';
import { html, image, markdown, md } from '../../../kernel/display/rich.ts';
import { table } from '../../../kernel/display/table.ts';
import { MemoryTracker } from '../../../engine/memory/tracker.ts';
import { Tensor } from '../../../engine/tensor/tensor.ts';

const ANSI = /\x1b\[/;
const dev = () => ({ name: 'cpu', memory: new MemoryTracker('cpu') });

describe('plain values', () => {
  it('a string is text/plain as it is, unquoted', () => {
    expect(toMimeBundle('hello "x"')).toEqual({ 'text/plain': 'hello "x"' });
  });

  it('a plain object: inspect text without colours, and a JSON copy', () => {
    const x = { a: 1, b: [1, 2], c: { d: 'e', f: null, g: true } };
    const b = toMimeBundle(x);
    expect(b['text/plain']).toBe("{ a: 1, b: [ 1, 2 ], c: { d: 'e', f: null, g: true } }");
    expect(b['application/json']).toEqual(x);
    expect(b['application/json']).not.toBe(x); // a copy: later mutation must not change what was shown
  });

  it('arrays are JSON too; numbers and null are text only', () => {
    expect(toMimeBundle([1, 'a'])['application/json']).toEqual([1, 'a']);
    expect(toMimeBundle(42)).toEqual({ 'text/plain': '42' });
    expect(toMimeBundle(null)).toEqual({ 'text/plain': 'null' });
    expect(toMimeBundle(undefined)).toEqual({ 'text/plain': 'undefined' });
  });

  it('values JSON would change get no application/json', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    for (const x of [new Map([[1, 2]]), cyclic, { x: NaN }, { x: undefined }, { d: new Date(0) }, [1, , 3], new (class P { a = 1 })(), { f: () => 1 }]) {
      const b = toMimeBundle(x);
      expect(b['application/json'], String(b['text/plain'])).toBeUndefined();
      expect(b['text/plain']).not.toMatch(ANSI);
    }
    expect(toMimeBundle(cyclic)['text/plain']).toContain('[Circular *1]');
  });

  it('colours never reach text/plain, even for values util.inspect would colour', () => {
    for (const x of [1, 'a', [1, 'a', null, undefined, true], new Map([['k', 1]]), Symbol('s'), 10n, new Error('boom')]) {
      expect(String(toMimeBundle(x)['text/plain'])).not.toMatch(ANSI);
    }
  });
});

describe('own bundles', () => {
  it('Symbol.for("servelab.mime") defines the bundle; text/plain is added when missing', () => {
    const x = { [MIME]: () => ({ 'text/html': '<b>x</b>' }) };
    const b = toMimeBundle(x);
    expect(b['text/html']).toBe('<b>x</b>');
    expect(typeof b['text/plain']).toBe('string');
    expect(MIME).toBe(Symbol.for('servelab.mime'));
  });

  it("Deno's Symbol.for('Jupyter.display') is honoured the same way", () => {
    const x = { [Symbol.for('Jupyter.display')]: () => ({ 'text/plain': 'deno', 'text/markdown': '**deno**' }) };
    expect(toMimeBundle(x)).toEqual({ 'text/plain': 'deno', 'text/markdown': '**deno**' });
    expect(JUPYTER_DISPLAY).toBe(Symbol.for('Jupyter.display'));
  });

  it('servelab.mime wins over Jupyter.display; a method returning no bundle is an error', () => {
    const both = { [MIME]: () => ({ 'text/plain': 'ours' }), [JUPYTER_DISPLAY]: () => ({ 'text/plain': 'deno' }) };
    expect(toMimeBundle(both)['text/plain']).toBe('ours');
    expect(() => toMimeBundle({ [MIME]: () => 'nope' })).toThrow(/must return a MIME bundle/);
  });
});

describe('tensors', () => {
  it('fp32: dtype, shape, device, exact bytes, tag, label and all values when few', () => {
    const t = Tensor.from(dev(), [1, 2.5, -3, 0.125, 1e-7, 6], [2, 3], 'fp32', 'activations', 'x');
    const b = toMimeBundle(t);
    expect(b['text/plain']).toBe("Tensor fp32[2, 3] on cpu: 24 B, activations 'x'\nvalues: [1, 2.5, -3, 0.125, 1e-7, 6]");
    const h = String(b['text/html']);
    expect(h).toContain('<tr><th>0</th><td>1</td><td>2.5</td><td>-3</td></tr>');
    expect(h).toContain('<tr><th>1</th><td>0.125</td><td>1e-7</td><td>6</td></tr>');
    expect(h).toContain('&#39;x&#39;'); // the label is escaped
  });

  it('fp16 and bf16 show the decoded stored values, not the bit patterns', () => {
    // fp16(0.1) = 0x2E66 = 0.0999755859375, fp16(1/3) = 0x3555 = 0.333251953125 (IEEE 754 binary16).
    const h = Tensor.from(dev(), [0.1, 1 / 3], [2], 'fp16');
    expect(toMimeBundle(h)['text/plain']).toContain('values: [0.099976, 0.33325]');
    // bf16(0.1) = 0x3DCD = 0.10009765625.
    const b = Tensor.from(dev(), [0.1], [1], 'bf16', 'weights');
    expect(toMimeBundle(b)['text/plain']).toBe('Tensor bf16[1] on cpu: 2 B, weights\nvalues: [0.1001]');
  });

  it('packed 4-bit tensors show their codes, low nibble first', () => {
    const nf4 = Tensor.adopt(dev(), [4], 'nf4', Uint8Array.of(0x21, 0xf0), 'weights');
    expect(toMimeBundle(nf4)['text/plain']).toBe('Tensor nf4[4] on cpu: 2 B, weights\ncodes: [1, 2, 0, 15]');
    const int4 = Tensor.adopt(dev(), [2], 'int4', Uint8Array.of(0xf8), 'weights');
    expect(toMimeBundle(int4)['text/plain']).toContain('codes: [-8, -1]');
  });

  it('large tensors: first 16 values in text, an 8 x 10 corner in HTML with leading indices on rows', () => {
    const values = Array.from({ length: 3 * 20 * 40 }, (_, i) => i);
    const t = Tensor.from(dev(), values, [3, 20, 40]);
    const b = toMimeBundle(t);
    expect(b['text/plain']).toBe(
      'Tensor fp32[3, 20, 40] on cpu: 9,600 B (9.4 KiB), activations\nfirst 16 of 2,400 values: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, ...]',
    );
    const h = String(b['text/html']);
    expect(h).toContain('<tr><th>[0, 1]</th><td>40</td>');
    expect(h).toContain('<tr><th>[0, 7]</th><td>280</td>');
    expect(h).not.toContain('[0, 8]');
    expect(h).toContain('&vellip;');
    expect(h).toContain('<th>9</th><th>&hellip;</th>');
  });

  it('a disposed tensor says so instead of throwing', () => {
    const t = Tensor.from(dev(), [1], [1]);
    t.dispose();
    expect(toMimeBundle(t)['text/plain']).toBe('Tensor fp32[1] on cpu (disposed)');
  });
});

describe('markdown, html, tables, images', () => {
  it('md`` is raw and dedented; markdown() and html() keep their text', () => {
    const n = 42;
    const m = md`
      # Result
      ${n} tokens/s, $\frac{a}{b}$
    `;
    expect(toMimeBundle(m)).toEqual({ 'text/markdown': '# Result\n42 tokens/s, $\\frac{a}{b}$', 'text/plain': '# Result\n42 tokens/s, $\\frac{a}{b}$' });
    expect(toMimeBundle(markdown('*x*'))['text/markdown']).toBe('*x*');
    expect(toMimeBundle(md('*y*'))['text/markdown']).toBe('*y*');
    expect(toMimeBundle(html('<p>a &amp; b</p><script>x()</script><p>c</p>'))).toEqual({
      'text/html': '<p>a &amp; b</p><script>x()</script><p>c</p>',
      'text/plain': 'a & b\nc',
    });
  });

  it('table of objects: aligned text (numbers right-aligned) and an escaped HTML table', () => {
    // Six significant digits by default: 0.1328125 shows as 0.132813.
    const t = table([
      { dtype: 'fp32', bytes: 4096, ratio: 1 },
      { dtype: '<int8>', bytes: 1024, ratio: 0.25 },
      { dtype: 'nf4', bytes: 544, ratio: 0.1328125, note: 'scales' },
    ]);
    const b = toMimeBundle(t);
    expect(b['text/plain']).toBe(
      ['dtype   bytes     ratio  note', '------  -----  --------  ------', 'fp32     4096         1', '<int8>   1024      0.25', 'nf4       544  0.132813  scales'].join('\n'),
    );
    const h = String(b['text/html']);
    expect(h).toContain('<th style="text-align:left">dtype</th><th style="text-align:right">bytes</th>');
    expect(h).toContain('<td style="text-align:left">&lt;int8&gt;</td>');
  });

  it('table of arrays with named columns, a caption, and rows past maxRows counted', () => {
    const t = table([['a', 1], ['b', 2.123456789], ['c', 3]], { columns: ['k', 'v'], caption: 'demo', digits: 3, maxRows: 2 });
    expect(toMimeBundle(t)['text/plain']).toBe('demo\nk     v\n-  ----\na     1\nb  2.12\n... 1 more rows (3 in all)');
    expect(String(toMimeBundle(t)['text/html'])).toContain('<caption>demo</caption>');
  });

  it('images: png as base64 with its size, svg as markup, jpeg checked by its marker', () => {
    const png1x1 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
    const bytes = Buffer.from(png1x1, 'base64');
    expect(toMimeBundle(image(new Uint8Array(bytes), 'png'))).toEqual({ 'image/png': png1x1, 'text/plain': `<image/png: ${bytes.length} bytes, 1x1>` });
    expect(toMimeBundle(image(png1x1, 'png'))['image/png']).toBe(png1x1);
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>';
    expect(toMimeBundle(image(svg, 'svg'))['image/svg+xml']).toBe(svg);
    expect(toMimeBundle(image(Uint8Array.of(0xff, 0xd8, 0xff, 0xd9), 'jpeg'))['image/jpeg']).toBe('/9j/2Q==');
    expect(() => image(Uint8Array.of(1, 2, 3), 'png')).toThrow(/PNG signature/);
    expect(() => image(Uint8Array.of(1, 2, 3), 'jpeg')).toThrow(/JPEG/);
  });
});

describe('large outputs', () => {
  it('a 5 MB string is cut to the limit with a notice of how much was cut', () => {
    const b = toMimeBundle('x'.repeat(5_000_000));
    const text = String(b['text/plain']);
    expect(displayLimits.textPlainBytes).toBe(1_000_000);
    expect(text.startsWith('x'.repeat(1_000_000) + '\n... [output truncated: 4,000,000 of 5,000,000 bytes not shown')).toBe(true);
    expect(text.length).toBeLessThan(1_000_200);
  });

  it('multi-byte text is cut on a character boundary', () => {
    const text = String(toMimeBundle('é'.repeat(600_001))['text/plain']); // 1,200,002 bytes
    const kept = text.slice(0, text.indexOf('\n'));
    expect(kept).toBe('é'.repeat(500_000));
    expect(text).toContain('200,002 of 1,200,002 bytes not shown');
  });

  it('text under the limit is untouched, and own bundles are cut too', () => {
    expect(toMimeBundle('y'.repeat(999_999))['text/plain']).toHaveLength(999_999);
    const b = toMimeBundle({ [MIME]: () => ({ 'text/plain': 'z'.repeat(2_000_000), 'text/html': '<i>z</i>' }) });
    expect(String(b['text/plain'])).toContain('1,000,000 of 2,000,000 bytes not shown');
    expect(b['text/html']).toBe('<i>z</i>');
  });
});
