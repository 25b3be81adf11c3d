/** Reads the dtype fixtures (test/fixtures/generate.py): little-endian raw bit patterns, counts from the manifest. */
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';

const FIXTURES = new URL('../../fixtures/dtype/', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('manifest.json', FIXTURES), 'utf8')) as {
  files: { file: string; count: number }[];
};

export function readLE(file: string, bytesPer: 2 | 4): Uint32Array {
  const buf = readFileSync(new URL(file, FIXTURES));
  const count = manifest.files.find((f) => f.file === file)?.count;
  expect(buf.length).toBe((count ?? -1) * bytesPer);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Uint32Array(buf.length / bytesPer);
  for (let i = 0; i < out.length; i++) {
    out[i] = bytesPer === 4 ? view.getUint32(4 * i, true) : view.getUint16(2 * i, true);
  }
  return out;
}

export const isNaN32 = (b: number) => (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0;
export const hex = (n: number) => '0x' + n.toString(16);
