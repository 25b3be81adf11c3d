/** safetensors reader and writer: round trips of every dtype, sharded folders, and each malformed file built byte by byte. */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  MAX_HEADER_BYTES, SafetensorsError, openCheckpoint, openSafetensors, writeSafetensors, type TensorToWrite,
} from '../../../engine/io/safetensors.ts';

const dir = mkdtempSync(join(tmpdir(), 'safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let count = 0;
const fresh = (name = 'x.safetensors') => join(mkdtempSync(join(dir, `${count++}-`)), name);

/** A file as the format lays it out: u64 LE header length, header bytes, data bytes. */
function raw(header: unknown, data: number | Uint8Array = 0, path = fresh()): string {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(path, Buffer.concat([len, h, typeof data === 'number' ? Buffer.alloc(data) : data]));
  return path;
}

function refused(path: string, ...parts: (string | RegExp)[]): SafetensorsError {
  let err: unknown;
  try {
    openSafetensors(path).close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  const e = err as SafetensorsError;
  expect(e.message).toContain(path);
  for (const p of parts) expect(e.message).toMatch(p);
  return e;
}

const sample: Record<string, TensorToWrite> = {
  'b.fp32': { dtype: 'fp32', shape: [2, 3], data: Float32Array.of(1, -2.5, 3e-8, Infinity, -0, 65504) },
  'a.fp16': { dtype: 'fp16', shape: [4], data: Uint16Array.of(0x3c00, 0xc000, 0x7c00, 0x0001) },
  'c.bf16': { dtype: 'bf16', shape: [2, 2], data: Uint16Array.of(0x3f80, 0xbf80, 0x7f7f, 0x0080) },
  'd.int8': { dtype: 'int8', shape: [3], data: Int8Array.of(-128, 0, 127) },
  'e.uint8': { dtype: 'uint8', shape: [1, 3], data: Uint8Array.of(0, 1, 255) },
  'f.int32': { dtype: 'int32', shape: [2], data: Int32Array.of(-(2 ** 31), 2 ** 31 - 1) },
  'g.bool': { dtype: 'bool', shape: [2], data: Uint8Array.of(1, 0) },
  'h.scalar': { dtype: 'fp32', shape: [], data: Float32Array.of(7) },
  'i.empty': { dtype: 'fp32', shape: [0, 4], data: new Float32Array(0) },
};

describe('writeSafetensors -> openSafetensors', () => {
  const path = fresh();
  writeSafetensors(path, sample, { format: 'pt', note: 'round trip' });

  it('round-trips every dtype bit for bit, with shapes and metadata', () => {
    const f = openSafetensors(path);
    expect(f.metadata).toEqual({ format: 'pt', note: 'round trip' });
    for (const [name, t] of Object.entries(sample)) {
      const got = f.read(name);
      expect(got.dtype, name).toBe(t.dtype);
      expect(got.shape, name).toEqual(t.shape);
      expect(got.data.constructor, name).toBe(t.data.constructor);
      expect(Array.from(got.data), name).toEqual(Array.from(t.data));
    }
    f.close();
  });

  it('lists tensors sorted by name with sizes from the header alone', () => {
    const f = openSafetensors(path);
    expect(f.tensors.map((t) => t.name)).toEqual(Object.keys(sample).sort());
    expect(f.info('b.fp32')).toMatchObject({ dtype: 'fp32', safetensorsDtype: 'F32', shape: [2, 3], byteLength: 24 });
    expect(f.info('c.bf16').safetensorsDtype).toBe('BF16');
    expect(f.totalBytes).toBe(24 + 8 + 8 + 3 + 3 + 8 + 2 + 4 + 0);
    f.close();
  });

  it('pads the header with spaces to a multiple of 8 and packs the data in name order', () => {
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    expect(text).toMatch(/^\{"__metadata__":/);
    expect(text.trimEnd().length).toBeGreaterThan(n - 8);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
    const h = JSON.parse(text);
    expect(h['a.fp16'].data_offsets).toEqual([0, 8]);
    expect(h['b.fp32'].data_offsets).toEqual([8, 32]);
    expect(bytes.length).toBe(8 + n + 60);
  });

  it('replaces an existing file atomically and leaves no temporary file', () => {
    writeSafetensors(path, { only: { dtype: 'int32', shape: [1], data: Int32Array.of(42) } });
    const f = openSafetensors(path);
    expect(f.tensors.map((t) => t.name)).toEqual(['only']);
    expect(f.metadata).toEqual({});
    expect(Array.from(f.read('only').data)).toEqual([42]);
    f.close();
    expect(readdirSync(join(path, '..'))).toEqual(['x.safetensors']);
  });

  it('names the file and tensor when asked for a missing name or read after close()', () => {
    const f = openSafetensors(path);
    expect(() => f.read('nope')).toThrow(/x\.safetensors: tensor "nope": no tensor of that name/);
    f.close();
    expect(() => f.read('only')).toThrow(/read after close/);
    f.close();
  });

  it('refuses data that does not match its dtype or shape, writing nothing', () => {
    const p = fresh();
    expect(() => writeSafetensors(p, { w: { dtype: 'fp16', shape: [2], data: Float32Array.of(1, 2) } })).toThrow(/tensor "w": data for fp16 must be a Uint16Array/);
    expect(() => writeSafetensors(p, { w: { dtype: 'fp32', shape: [3], data: Float32Array.of(1, 2) } })).toThrow(/has 2 elements but shape \[3\] needs 3/);
    expect(() => writeSafetensors(p, { w: { dtype: 'nf4', shape: [2], data: Uint8Array.of(1) } })).toThrow(SafetensorsError);
    expect(readdirSync(join(p, '..'))).toEqual([]);
  });
});

describe('malformed files', () => {
  const f32 = (shape: number[], data_offsets: unknown) => ({ dtype: 'F32', shape, data_offsets });

  it('a missing file', () => refused(join(dir, 'absent.safetensors'), /no such file/));
  it('a file shorter than 8 bytes', () => {
    const p = fresh();
    writeFileSync(p, Buffer.alloc(5));
    refused(p, /is 5 bytes long/);
  });
  it('a header length past the end of the file', () => {
    const p = fresh();
    const b = Buffer.alloc(20);
    b.writeBigUInt64LE(1000n);
    writeFileSync(p, b);
    refused(p, /header length 1000 runs past the end of the file \(20 bytes\)/);
  });
  it('an absurd header length', () => {
    const p = fresh();
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(2n ** 40n);
    writeFileSync(p, b);
    refused(p, new RegExp(`over ${MAX_HEADER_BYTES} bytes`));
  });
  it('a header that is not JSON', () => refused(raw('{"w": {'), /header is not JSON/));
  it('a header that is not an object', () => {
    refused(raw('[1, 2]'), /must be a JSON object, got an array/);
    refused(raw('null'), /must be a JSON object, got null/);
  });
  it('metadata that is not strings', () => refused(raw({ __metadata__: { n: 3 } }), /__metadata__ must map strings to strings/));
  it('an unknown dtype', () => refused(raw({ w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, 8), /tensor "w": dtype "F64" is not one of F32, F16, BF16/));
  it('a shape that is not an array of non-negative integers', () => {
    refused(raw({ w: f32([2, -1], [0, 0]) }), /tensor "w": shape must be an array of non-negative integers, got \[2,-1\]/);
    refused(raw({ w: f32([1.5] as number[], [0, 4]) }, 4), /shape must be/);
    refused(raw({ w: { dtype: 'F32', shape: '4', data_offsets: [0, 16] } }, 16), /shape must be/);
  });
  it('data_offsets that are not [begin, end] with begin <= end', () => {
    refused(raw({ w: f32([1], [8, 4]) }, 8), /tensor "w": data_offsets must be \[begin, end\]/);
    refused(raw({ w: f32([1], [0]) }, 4), /data_offsets must be/);
    refused(raw({ w: f32([1], ['0', '4']) }, 4), /data_offsets must be/);
  });
  it('a byte length that is not numel x itemsize', () => refused(raw({ w: f32([2, 2], [0, 12]) }, 12), /hold 12 bytes but F32 \[2, 2\] needs 4 x 4 = 16/));
  it('offsets past the end of the file', () => refused(raw({ w: f32([4], [0, 16]) }, 8), /tensor "w": data_offsets end 16 is past the end of the data \(8 bytes/));
  it('overlapping ranges', () => refused(raw({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, 12), /tensor "b": .*overlap "a", which ends at 8/));
  it('a gap between ranges, before the first or after the last', () => {
    refused(raw({ a: f32([1], [0, 4]), b: f32([1], [8, 12]) }, 12), /tensor "b": data_offsets begin at 8, leaving a gap of 4 bytes after "a"/);
    refused(raw({ a: f32([1], [4, 8]) }, 8), /gap of 4 bytes after the header/);
    refused(raw({ a: f32([1], [0, 4]) }, 12), /the tensors cover 4 bytes of data but 12 follow the header/);
  });
});

describe('openCheckpoint', () => {
  const w = (v: number[]): TensorToWrite => ({ dtype: 'fp32', shape: [v.length], data: Float32Array.from(v) });

  it('reads a single model.safetensors', () => {
    const d = mkdtempSync(join(dir, 'single-'));
    writeSafetensors(join(d, 'model.safetensors'), { x: w([1, 2]) });
    const c = openCheckpoint(d);
    expect(c.tensors.map((t) => t.name)).toEqual(['x']);
    expect(Array.from(c.read('x').data)).toEqual([1, 2]);
    c.close();
  });

  it('presents the shards of an index as one collection', () => {
    const d = mkdtempSync(join(dir, 'sharded-'));
    writeSafetensors(join(d, 'model-00001-of-00002.safetensors'), { a: w([1]), c: w([3, 3, 3]) });
    writeSafetensors(join(d, 'model-00002-of-00002.safetensors'), { b: { dtype: 'bf16', shape: [2], data: Uint16Array.of(0x3f80, 0x4000) } });
    const index = {
      metadata: { total_size: 20 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00001-of-00002.safetensors' },
    };
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify(index));
    const c = openCheckpoint(d);
    expect(c.metadata).toEqual({ total_size: '20' });
    expect(c.tensors.map((t) => [t.name, t.file.endsWith('model-00002-of-00002.safetensors')])).toEqual([['a', false], ['b', true], ['c', false]]);
    expect(c.totalBytes).toBe(4 + 4 + 12);
    expect(Array.from(c.read('c').data)).toEqual([3, 3, 3]);
    expect(Array.from(c.read('b').data)).toEqual([0x3f80, 0x4000]);
    c.close();
    expect(() => c.read('a')).toThrow(/read after close/);
  });

  it('refuses an index naming a missing shard or a tensor its shard lacks, a bad index, an empty folder', () => {
    const d = mkdtempSync(join(dir, 'badindex-'));
    const idx = join(d, 'model.safetensors.index.json');
    writeSafetensors(join(d, 's1.safetensors'), { a: w([1]) });
    writeFileSync(idx, JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } }));
    expect(() => openCheckpoint(d)).toThrow(/model\.safetensors\.index\.json: tensor "b": weight_map names shard "s2\.safetensors", which does not exist/);
    writeFileSync(idx, JSON.stringify({ weight_map: { a: 's1.safetensors', z: 's1.safetensors' } }));
    expect(() => openCheckpoint(d)).toThrow(/tensor "z": weight_map puts it in "s1\.safetensors", which does not hold it/);
    writeFileSync(idx, JSON.stringify({ weight_map: { a: '../s1.safetensors' } }));
    expect(() => openCheckpoint(d)).toThrow(/must name a shard file in the same folder/);
    writeFileSync(idx, '{"weight_map":');
    expect(() => openCheckpoint(d)).toThrow(/index\.json: is not JSON/);
    writeFileSync(idx, '{"metadata": {}}');
    expect(() => openCheckpoint(d)).toThrow(/must be an object with a "weight_map" object/);
    const empty = mkdtempSync(join(dir, 'empty-'));
    expect(() => openCheckpoint(empty)).toThrow(/holds neither model\.safetensors nor model\.safetensors\.index\.json/);
  });

  it('names the shard when a shard itself is malformed', () => {
    const d = mkdtempSync(join(dir, 'badshard-'));
    raw({ a: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, 1, join(d, 's1.safetensors'));
    writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 's1.safetensors' } }));
    expect(() => openCheckpoint(d)).toThrow(/s1\.safetensors: tensor "a": dtype "Q4"/);
  });
});
