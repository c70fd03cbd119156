/**
 * Reader and writer of the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   bytes 0..8        N, the header length, unsigned 64-bit little-endian
 *   bytes 8..8+N      JSON header, UTF-8 (may end in spaces, the reference writer pads to 8 bytes):
 *                       { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
 *                         ..., "__metadata__": { "<key>": "<string value>" } }   (metadata optional)
 *   bytes 8+N..       the data section: each tensor's raw little-endian, row-major bytes at
 *                     [begin, end) relative to the start of the section
 *
 * Reading converts every supported dtype to Float32Array (F32 is copied as is; F16, BF16 and F64
 * are rounded to float32; integer and bool tensors, e.g. the int64 `num_batches_tracked` of a
 * torch BatchNorm, become float32 values, exact up to 2^24). The reader validates the file the
 * way the reference implementation does: header within the file and at most 100 MB, valid JSON,
 * well-formed entries, byte size == element count * dtype size, offsets inside the data section,
 * neither overlapping nor leaving holes, no trailing bytes. Errors start with the file path.
 *
 * The writer writes F32 only, atomically: a temporary file in the same directory, fsync, then
 * rename over the destination, so a reader never sees a half-written file.
 */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomicWrite.js';

/** dtypes the reader accepts, with their size in bytes. */
const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;

/** One tensor as read: its dtype in the file, and its values converted to float32. */
export interface SafeTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContents {
  /** Tensors in header order. */
  tensors: Map<string, SafeTensor>;
  /** The header's `__metadata__` (empty when absent). */
  metadata: Record<string, string>;
}

/** A tensor to write (always stored as F32). */
export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

/** Same limit as the reference implementation (safetensors' MAX_HEADER_SIZE). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Reads and validates a safetensors file; see the module comment for what is checked. */
export function readSafetensors(path: string): SafetensorsContents {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new Error(`${path}: cannot read safetensors file: ${(err as Error).message}`, { cause: err });
  }
  return parseSafetensors(bytes, path);
}

/** Parses safetensors bytes; `label` (usually the file path) starts every error message. */
export function parseSafetensors(bytes: Uint8Array, label = '<safetensors>'): SafetensorsContents {
  function fail(msg: string): never {
    throw new Error(`${label}: ${msg}`);
  }
  if (bytes.length < 8) {
    fail(`truncated: ${bytes.length} bytes, too short to hold the 8-byte header length`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    fail(`header too large: it claims ${headerLen} bytes (limit ${MAX_HEADER_BYTES}); not a safetensors file?`);
  }
  const n = Number(headerLen);
  if (8 + n > bytes.length) {
    fail(`truncated: the header claims ${n} bytes but only ${bytes.length - 8} follow the length field`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (err) {
    fail(`invalid header: not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    fail('invalid header: the JSON header is not an object');
  }
  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;

  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        fail(`invalid header: ${METADATA_KEY} is not an object of strings`);
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`invalid header: ${METADATA_KEY}.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    function bad(what: string): never {
      fail(`invalid header: tensor ${name}: ${what}`);
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('entry is not an object');
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string') bad('missing dtype');
    if (!Object.prototype.hasOwnProperty.call(DTYPE_BYTES, e.dtype as string)) {
      bad(`unsupported dtype ${String(e.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) bad(`shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isCount(off[0]) || !isCount(off[1]) || off[0] > off[1]) {
      bad(`data_offsets ${JSON.stringify(off)} is not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = off as [number, number];
    const numel = shape.reduce((a, b) => a * b, 1);
    const want = numel * DTYPE_BYTES[dtype];
    if (end - begin !== want) {
      bad(`data_offsets [${begin},${end}] span ${end - begin} bytes, but ${dtype} ${shapeString(shape)} needs ${want}`);
    }
    entries.push({ name, dtype, shape, begin, end });
  }

  // Offsets: in range, no overlaps, no holes (the reference reader rejects all three).
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: string | null = null;
  for (const e of sorted) {
    if (e.end > dataLen) {
      fail(`truncated: tensor ${e.name} needs bytes [${e.begin},${e.end}) of the data section, ` + `but only ${dataLen} bytes follow the header`);
    }
    if (e.begin < pos) fail(`invalid header: tensor ${e.name} at [${e.begin},${e.end}) overlaps tensor ${prev} (ends at ${pos})`);
    if (e.begin > pos) {
      fail(`invalid header: bytes [${pos},${e.begin}) of the data section belong to no tensor (hole before ${e.name})`);
    }
    pos = e.end;
    prev = e.name;
  }
  if (pos !== dataLen) fail(`invalid file: ${dataLen - pos} trailing bytes after the last tensor's data`);

  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: toFloat32(bytes, dataStart + e.begin, dataStart + e.end, e.dtype) });
  }
  return { tensors, metadata };
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function toFloat32(bytes: Uint8Array, start: number, end: number, dtype: SafetensorsDtype): Float32Array {
  if (dtype === 'F32' && LITTLE_ENDIAN_HOST) {
    // Copy into a fresh (aligned, owned) buffer; the file's offsets need not be 4-aligned.
    const own = new Uint8Array(end - start);
    own.set(bytes.subarray(start, end));
    return new Float32Array(own.buffer);
  }
  const size = DTYPE_BYTES[dtype];
  const n = (end - start) / size;
  const out = new Float32Array(n);
  const v = new DataView(bytes.buffer, bytes.byteOffset + start, end - start);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = v.getFloat64(8 * i, true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(v.getUint16(2 * i, true));
      break;
    case 'BF16': {
      const tmp = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < n; i++) {
        tmp.setUint32(0, v.getUint16(2 * i, true) << 16, true);
        out[i] = tmp.getFloat32(0, true);
      }
      break;
    }
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(v.getBigInt64(8 * i, true));
      break;
    case 'U64':
      for (let i = 0; i < n; i++) out[i] = Number(v.getBigUint64(8 * i, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = v.getInt32(4 * i, true);
      break;
    case 'U32':
      for (let i = 0; i < n; i++) out[i] = v.getUint32(4 * i, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = v.getInt16(2 * i, true);
      break;
    case 'U16':
      for (let i = 0; i < n; i++) out[i] = v.getUint16(2 * i, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = v.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = v.getUint8(i);
      break;
  }
  return out;
}

/** Serialises tensors (as F32) to safetensors bytes. Validates names, shapes and sizes. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`safetensors metadata ${k} must be a string, got ${typeof v}`);
    }
    header[METADATA_KEY] = { ...metadata };
  }
  let offset = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY) throw new Error(`safetensors: a tensor cannot be named ${METADATA_KEY}`);
    if (Object.prototype.hasOwnProperty.call(header, t.name)) throw new Error(`safetensors: duplicate tensor name ${t.name}`);
    if (!t.shape.every(isCount)) throw new Error(`safetensors: tensor ${t.name} has invalid shape ${shapeString(t.shape)}`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw new Error(`safetensors: tensor ${t.name} has shape ${shapeString(t.shape)} (${numel} values) but ${t.data.length} values`);
    }
    header[t.name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + 4 * numel] };
    offset += 4 * numel;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const t of tensors) {
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    } else {
      for (let i = 0; i < t.data.length; i++) view.setFloat32(pos + 4 * i, t.data[i], true);
    }
    pos += t.data.byteLength;
  }
  return out;
}

/** Writes tensors (F32) and optional string metadata to a safetensors file, atomically. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  let bytes: Uint8Array;
  try {
    bytes = encodeSafetensors(tensors, metadata);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`, { cause: err });
  }
  writeFileAtomic(path, bytes);
}
