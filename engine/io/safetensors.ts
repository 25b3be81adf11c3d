/** safetensors: a JSON header of names, dtypes, shapes and byte ranges, then raw little-endian data (Hugging Face). */
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { ServelabError } from '../errors.ts';
import type { DType } from '../dtype/dtype.ts';
import { numelOf, storageFor, type Storage } from '../tensor/storage.ts';

/** A safetensors file or sharded checkpoint that cannot be read as the format says, or data that cannot be written. */
export class SafetensorsError extends ServelabError {
  override name = 'SafetensorsError';
  constructor(
    readonly file: string,
    detail: string,
    readonly tensor?: string,
  ) {
    super(`${file}: ${tensor === undefined ? '' : `tensor ${JSON.stringify(tensor)}: `}${detail}`);
  }
}

/** The format's dtype names this reader takes, with the engine dtype each becomes (fp16/bf16 stay 16-bit patterns). */
export const SAFETENSORS_DTYPES = {
  F32: 'fp32', F16: 'fp16', BF16: 'bf16', I8: 'int8', U8: 'uint8', I32: 'int32', BOOL: 'bool',
} as const satisfies Record<string, DType>;
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;
const ITEMSIZE: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I8: 1, U8: 1, I32: 4, BOOL: 1 };
const FROM_ENGINE = new Map<DType, SafetensorsDType>(
  Object.entries(SAFETENSORS_DTYPES).map(([st, d]) => [d, st as SafetensorsDType]),
);

/** The reference implementation refuses larger headers; a bigger length is a corrupt or foreign file, not a model. */
export const MAX_HEADER_BYTES = 100_000_000;

/** What the header says of one tensor: enough to size a checkpoint before reading any of its data. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  safetensorsDtype: SafetensorsDType;
  shape: number[];
  byteLength: number;
  /** Where the tensor's bytes start, from the beginning of the file (header included). */
  fileOffset: number;
  file: string;
}

export interface TensorData {
  name: string;
  dtype: DType;
  shape: number[];
  data: Storage;
}

/** One file or a sharded checkpoint presented alike: the tensors by name, each read on demand. */
export interface TensorCollection {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Sorted by name. */
  readonly tensors: readonly TensorInfo[];
  /** Sum of every tensor's byteLength: what loading all of it costs. */
  readonly totalBytes: number;
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Reads only this tensor's byte range from disk. */
  read(name: string): TensorData;
  close(): void;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function openFd(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SafetensorsError(file, code === 'ENOENT' ? 'no such file' : `cannot open: ${(e as Error).message}`);
  }
}

/** Fills `into` from the file's bytes at `position`, in chunks (one readSync moves at most 2 GiB). */
function readExact(fd: number, file: string, into: Uint8Array, position: number): void {
  for (let done = 0; done < into.length; ) {
    const n = readSync(fd, into, done, Math.min(into.length - done, 1 << 30), position + done);
    if (n === 0) throw new SafetensorsError(file, `file ended ${into.length - done} bytes early at offset ${position + done}`);
    done += n;
  }
}

function parseEntry(file: string, name: string, v: unknown, dataStart: number, dataBytes: number): TensorInfo {
  const fail = (detail: string) => new SafetensorsError(file, detail, name);
  if (!isObject(v)) throw fail(`header entry must be an object, got ${JSON.stringify(v)}`);
  const st = v.dtype;
  if (typeof st !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, st)) {
    throw fail(`dtype ${JSON.stringify(st)} is not one of ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`);
  }
  const dtype = st as SafetensorsDType;
  const shape = v.shape;
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw fail(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const off = v.data_offsets;
  if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount) || off[0] > off[1]) {
    throw fail(`data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(off)}`);
  }
  const [begin, end] = off as [number, number];
  const numel = numelOf(shape);
  const expected = numel * ITEMSIZE[dtype];
  if (end - begin !== expected) {
    throw fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${numel} x ${ITEMSIZE[dtype]} = ${expected}`);
  }
  if (end > dataBytes) throw fail(`data_offsets end ${end} is past the end of the data (${dataBytes} bytes after the header)`);
  return { name, dtype: SAFETENSORS_DTYPES[dtype], safetensorsDtype: dtype, shape, byteLength: expected, fileOffset: dataStart + begin, file };
}

/** The format requires the byte ranges to tile the data exactly: no overlap, no gap, nothing after the last one. */
function checkCoverage(file: string, tensors: TensorInfo[], dataStart: number, dataBytes: number): void {
  const byStart = [...tensors].sort((a, b) => a.fileOffset - b.fileOffset || a.byteLength - b.byteLength);
  let at = 0;
  let prev: string | undefined;
  for (const t of byStart) {
    const begin = t.fileOffset - dataStart;
    if (begin < at) throw new SafetensorsError(file, `data_offsets [${begin}, ${begin + t.byteLength}] overlap ${JSON.stringify(prev)}, which ends at ${at}`, t.name);
    if (begin > at) throw new SafetensorsError(file, `data_offsets begin at ${begin}, leaving a gap of ${begin - at} bytes after ${prev === undefined ? 'the header' : JSON.stringify(prev)}`, t.name);
    at = begin + t.byteLength;
    prev = t.name;
  }
  if (at !== dataBytes) throw new SafetensorsError(file, `the tensors cover ${at} bytes of data but ${dataBytes} follow the header`);
}

interface Header {
  fd: number;
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}

const byNameOf = (h: Header) => new Map(h.tensors.map((t) => [t.name, t]));

/** Validates a file's header and keeps it open; no tensor data is read. */
function openHeader(file: string): Header {
  const fd = openFd(file);
  try {
    const size = fstatSync(fd).size;
    if (size < 8) throw new SafetensorsError(file, `is ${size} bytes long; a safetensors file starts with an 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readExact(fd, file, lenBuf, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(file, `header length ${n} is over ${MAX_HEADER_BYTES} bytes: not a safetensors file`);
    const headerBytes = Number(n);
    if (8 + headerBytes > size) throw new SafetensorsError(file, `header length ${headerBytes} runs past the end of the file (${size} bytes)`);
    const headerBuf = Buffer.alloc(headerBytes);
    readExact(fd, file, headerBuf, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch (e) {
      throw new SafetensorsError(file, `header is not JSON: ${(e as Error).message}`);
    }
    if (!isObject(header)) throw new SafetensorsError(file, `header must be a JSON object, got ${Array.isArray(header) ? 'an array' : JSON.stringify(header)}`);
    const dataStart = 8 + headerBytes;
    const dataBytes = size - dataStart;
    let metadata: Record<string, string> = {};
    const tensors: TensorInfo[] = [];
    for (const [name, v] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (!isObject(v) || !Object.values(v).every((s) => typeof s === 'string')) {
          throw new SafetensorsError(file, `__metadata__ must map strings to strings, got ${JSON.stringify(v)}`);
        }
        metadata = v as Record<string, string>;
      } else {
        tensors.push(parseEntry(file, name, v, dataStart, dataBytes));
      }
    }
    checkCoverage(file, tensors, dataStart, dataBytes);
    return { fd, metadata, tensors };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Opens a .safetensors file and validates its header; no tensor data is read until read(name). */
export function openSafetensors(path: string): TensorCollection {
  const { fd, metadata, tensors } = openHeader(path);
  return collection(path, metadata, tensors, () => fd, () => closeSync(fd));
}

function collection(
  path: string,
  metadata: Record<string, string>,
  list: TensorInfo[],
  fdOf: (t: TensorInfo) => number,
  closeAll: () => void,
): TensorCollection {
  const tensors = [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  let open = true;
  const info = (name: string): TensorInfo => {
    const t = byName.get(name);
    if (!t) throw new SafetensorsError(path, `no tensor of that name (${tensors.length} tensors)`, name);
    return t;
  };
  return {
    path,
    metadata,
    tensors,
    totalBytes: tensors.reduce((s, t) => s + t.byteLength, 0),
    has: (name) => byName.has(name),
    info,
    read(name) {
      const t = info(name);
      if (!open) throw new SafetensorsError(path, 'read after close()', name);
      const data = storageFor(t.dtype, numelOf(t.shape));
      // The typed array is aligned, so reading into its bytes decodes nothing: the host is little-endian like the file.
      readExact(fdOf(t), t.file, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), t.fileOffset);
      return { name, dtype: t.dtype, shape: [...t.shape], data };
    },
    close() {
      if (open) closeAll();
      open = false;
    },
  };
}

/**
 * A Hugging Face checkpoint folder: model.safetensors, or model.safetensors.index.json whose weight_map names the
 * shard of every tensor. The shards' tensors appear as one collection; only names in weight_map are listed.
 */
export function openCheckpoint(dir: string): TensorCollection {
  const single = join(dir, 'model.safetensors');
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (!existsSync(indexPath)) {
    if (!existsSync(single)) throw new SafetensorsError(dir, 'holds neither model.safetensors nor model.safetensors.index.json');
    return openSafetensors(single);
  }
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError(indexPath, `is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(index) || !isObject(index.weight_map)) throw new SafetensorsError(indexPath, 'must be an object with a "weight_map" object');
  const meta = isObject(index.metadata) ? index.metadata : {};
  const metadata = Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
  const shards = new Map<string, Header>();
  const shardTensors = new Map<string, Map<string, TensorInfo>>();
  const closeAll = () => shards.forEach((h) => closeSync(h.fd));
  try {
    const list: TensorInfo[] = [];
    for (const [name, shard] of Object.entries(index.weight_map)) {
      // A bare file name: an index must not reach outside its folder.
      if (typeof shard !== 'string' || shard === '' || basename(shard) !== shard || shard === '..') {
        throw new SafetensorsError(indexPath, `weight_map must name a shard file in the same folder, got ${JSON.stringify(shard)}`, name);
      }
      const file = join(dir, shard);
      let h = shards.get(file);
      if (!h) {
        if (!existsSync(file)) throw new SafetensorsError(indexPath, `weight_map names shard ${JSON.stringify(shard)}, which does not exist`, name);
        h = openHeader(file);
        shards.set(file, h);
        shardTensors.set(file, byNameOf(h));
      }
      const t = shardTensors.get(file)!.get(name);
      if (!t) throw new SafetensorsError(indexPath, `weight_map puts it in ${JSON.stringify(shard)}, which does not hold it`, name);
      list.push(t);
    }
    return collection(indexPath, metadata, list, (t) => shards.get(t.file)!.fd, closeAll);
  } catch (e) {
    closeAll();
    throw e;
  }
}

export interface TensorToWrite {
  dtype: DType;
  shape: readonly number[];
  data: Storage;
}

/**
 * Writes a .safetensors file: tensors sorted by name and packed back to back, the header padded with spaces to a
 * multiple of 8 bytes as the reference implementation does (so the data starts aligned). Written to a temporary file
 * and renamed, so a reader never sees half a checkpoint.
 */
export function writeSafetensors(path: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  if (endianness() !== 'LE') throw new SafetensorsError(path, 'writing needs a little-endian host');
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(path, `metadata ${JSON.stringify(k)} must be a string, got ${JSON.stringify(v)}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const name of names) {
    const { dtype, shape, data } = tensors[name];
    const fail = (detail: string) => new SafetensorsError(path, detail, name);
    if (name === '__metadata__' || name === '') throw fail('is not a usable tensor name');
    const st = FROM_ENGINE.get(dtype);
    if (!st) throw fail(`dtype ${dtype} has no safetensors equivalent here; use one of ${[...FROM_ENGINE.keys()].join(', ')}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) throw fail(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    const want = storageFor(dtype, 0).constructor;
    if (!(data instanceof want)) throw fail(`data for ${dtype} must be a ${want.name}, got ${data?.constructor?.name}`);
    if (data.length !== numelOf(shape)) throw fail(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${numelOf(shape)}`);
    header[name] = { dtype: st, shape: [...shape], data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    writeAll(fd, len);
    writeAll(fd, json);
    for (const name of names) {
      const d = tensors[name].data;
      writeAll(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    if (existsSync(tmp)) unlinkSync(tmp);
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, `cannot write: ${(e as Error).message}`);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
}
