/**
 * POSIX / ustar tar, streaming: a reader that walks a tar one 512-byte header at a time (GNU
 * long names 'L' and pax 'x' headers for the path and size, base-256 sizes), a WebDataset
 * reader on top of it (members grouped by key into samples), and a small writer.
 *
 * Bad input never throws out of the readers: an unsafe member name (absolute, or with a `..`
 * segment) is skipped; a truncated archive or a header whose checksum is wrong ends that file;
 * each is recorded in a Problems list with the file and the byte offset of the header.
 */
import { writeFileAtomic } from '../util/atomicWrite.js';
import { ByteReader, chunksOf, Problems, sampleStream, type ByteSource, type PixelBox, type Sample, type SampleStream } from './samples.js';

export const TAR_BLOCK = 512;

export interface TarMember {
  /** Path inside the archive (after GNU long-name / pax overrides), '/' separated. */
  name: string;
  /** Byte offset of the member's first header (its 'L' / 'x' header where it has one). */
  offset: number;
  size: number;
  /** '0' regular file (the only type yielded). */
  type: string;
  data: Uint8Array;
}

export interface TarReadOptions {
  /** Name used in problem reports (defaults to the path when the source is a path). */
  file?: string;
  problems?: Problems;
  /** Members larger than this are skipped as 'too-large' (default 256 MiB). */
  maxMemberBytes?: number;
  /** Read this member's bytes? false: it is yielded with empty data and not read (counting). */
  readData?: (name: string, size: number) => boolean;
}

const dec = new TextDecoder('utf-8');

function cstr(b: Uint8Array, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const z = s.indexOf(0);
  return dec.decode(z < 0 ? s : s.subarray(0, z));
}

/** Octal (space/NUL terminated) or GNU base-256 (high bit of the first byte set) number field. */
export function parseTarNumber(b: Uint8Array, start: number, len: number): number {
  const f = b.subarray(start, start + len);
  if (f[0]! & 0x80) {
    let v = f[0]! & 0x7f;
    for (let i = 1; i < f.length; i++) v = v * 256 + f[i]!;
    return v;
  }
  const s = dec.decode(f).replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return NaN;
  return parseInt(s, 8);
}

function headerChecksumOk(h: Uint8Array): boolean {
  const stored = parseTarNumber(h, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 32 : h[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(h: Uint8Array): boolean {
  for (let i = 0; i < h.length; i++) if (h[i] !== 0) return false;
  return true;
}

/** Parses pax extended header records: "LEN key=value\n" ... */
export function parsePax(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let p = 0;
  while (p < data.length) {
    let sp = p;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = parseInt(dec.decode(data.subarray(p, sp)), 10);
    if (!(len > 0) || p + len > data.length) break;
    const rec = dec.decode(data.subarray(sp + 1, p + len - 1)); // without the trailing \n
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    p += len;
  }
  return out;
}

/**
 * Why a member name is unsafe to use as a path (absolute, drive-letter, or a `..` segment), or
 * null when it is fine.
 */
export function unsafeMemberName(name: string): string | null {
  if (name === '') return 'empty name';
  if (name.startsWith('/') || name.startsWith('\\')) return 'absolute path';
  if (/^[A-Za-z]:/.test(name)) return 'absolute (drive) path';
  if (name.split(/[\\/]/).some((seg) => seg === '..')) return "path with a '..' segment";
  if (name.includes('\0')) return 'NUL in name';
  return null;
}

const pad512 = (n: number) => (TAR_BLOCK - (n % TAR_BLOCK)) % TAR_BLOCK;

/**
 * Streams the regular-file members of a tar (path, bytes, or a chunk stream). Directories and
 * other entry types are passed over silently (links are reported as 'unsupported-entry').
 */
export async function* readTarMembers(src: ByteSource, opts: TarReadOptions = {}): AsyncGenerator<TarMember> {
  const file = opts.file ?? (typeof src === 'string' ? src : '<tar>');
  const problems = opts.problems ?? new Problems();
  const maxBytes = opts.maxMemberBytes ?? 256 * 1024 * 1024;
  const r = new ByteReader(chunksOf(src));
  let longName: string | null = null;
  let pax: Map<string, string> | null = null;
  let global = new Map<string, string>();
  let entryStart = -1; // offset of the first header of the current member ('L' / 'x' included)
  try {
    for (;;) {
      const headerOffset = r.offset;
      const h = await r.read(TAR_BLOCK);
      if (h.length === 0) {
        if (entryStart >= 0) problems.add('truncated', file, entryStart, 'archive ends after an extended header');
        return; // end without the two zero blocks: accepted (many writers omit them)
      }
      if (h.length < TAR_BLOCK) {
        problems.add('truncated', file, headerOffset, `archive ends inside a header (${h.length} of 512 bytes)`);
        return;
      }
      if (isZeroBlock(h)) return;
      if (!headerChecksumOk(h)) {
        problems.add('bad-header', file, headerOffset, 'header checksum mismatch: not a tar header, rest of file skipped');
        return;
      }
      if (entryStart < 0) entryStart = headerOffset;
      const type = String.fromCharCode(h[156]!) === '\0' ? '0' : String.fromCharCode(h[156]!);
      let size = parseTarNumber(h, 124, 12);
      if (pax?.has('size')) size = Number(pax.get('size'));
      if (!Number.isFinite(size) || size < 0) {
        problems.add('bad-header', file, headerOffset, 'unreadable size field, rest of file skipped');
        return;
      }
      const padded = size + pad512(size);

      if (type === 'L' || type === 'x' || type === 'g') {
        if (size > 1 << 20) {
          problems.add('bad-header', file, headerOffset, `extended header of ${size} bytes, rest of file skipped`);
          return;
        }
        const body = await r.read(size);
        if (body.length < size) {
          problems.add('truncated', file, headerOffset, `archive ends inside an extended header (${body.length} of ${size} bytes)`);
          return;
        }
        await r.skip(pad512(size));
        if (type === 'L') longName = cstr(body, 0, body.length);
        else if (type === 'x') pax = parsePax(body);
        else {
          global = new Map([...global, ...parsePax(body)]);
          entryStart = -1;
        }
        continue;
      }

      const magic = cstr(h, 257, 6);
      const prefix = magic.startsWith('ustar') ? cstr(h, 345, 155) : '';
      let name = prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100);
      if (longName !== null) name = longName;
      const paxPath = pax?.get('path') ?? global.get('path');
      if (paxPath !== undefined) name = paxPath;
      const start = entryStart;
      longName = null;
      pax = null;
      entryStart = -1;

      const skipData = async (): Promise<boolean> => {
        const got = await r.skip(padded);
        if (got < size) {
          problems.add('truncated', file, start, `archive ends inside member ${JSON.stringify(name)} (${got} of ${size} bytes)`);
          return false;
        }
        return true;
      };

      if (type !== '0' && type !== '7') {
        if (type !== '5') problems.add('unsupported-entry', file, start, `entry type '${type}' of ${JSON.stringify(name)} skipped`);
        if (!(await skipData())) return;
        continue;
      }
      const why = unsafeMemberName(name);
      if (why !== null) {
        problems.add('unsafe-path', file, start, `member ${JSON.stringify(name)} skipped: ${why}`);
        if (!(await skipData())) return;
        continue;
      }
      if (size > maxBytes) {
        problems.add('too-large', file, start, `member ${JSON.stringify(name)} of ${size} bytes skipped (limit ${maxBytes})`);
        if (!(await skipData())) return;
        continue;
      }
      if (opts.readData && !opts.readData(name, size)) {
        if (!(await skipData())) return;
        yield { name: name.replace(/^\.\//, ''), offset: start, size, type: '0', data: new Uint8Array(0) };
        continue;
      }
      const body = await r.read(size);
      if (body.length < size) {
        problems.add('truncated', file, start, `archive ends inside member ${JSON.stringify(name)} (${body.length} of ${size} bytes)`);
        return;
      }
      await r.skip(pad512(size));
      yield { name: name.replace(/^\.\//, ''), offset: start, size, type: '0', data: body.slice() };
    }
  } finally {
    await r.close();
  }
}

/** WebDataset key and extension: the basename splits at its first dot; the key keeps the folder. */
export function splitKey(name: string): { key: string; ext: string } {
  const slash = name.lastIndexOf('/');
  const base = name.slice(slash + 1);
  const dot = base.indexOf('.');
  if (dot < 0) return { key: name, ext: '' };
  return { key: name.slice(0, slash + 1) + base.slice(0, dot), ext: base.slice(dot + 1).toLowerCase() };
}

export const IMAGE_EXTS = ['jpg', 'jpeg', 'png', 'webp'];

export type WebDatasetOptions = TarReadOptions;

/**
 * A member group's label: `.cls` ASCII decimal and/or `.json` (a number, or {label|cls, synset?,
 * boxes?}); with both, `.cls` gives the label and `.json` the synset and boxes.
 */
export function labelOf(parts: Map<string, Uint8Array>): { label?: number; synset?: string; boxes?: PixelBox[]; error?: string } {
  const out: { label?: number; synset?: string; boxes?: PixelBox[]; error?: string } = {};
  const json = parts.get('json');
  if (json !== undefined) {
    let v: unknown;
    try {
      v = JSON.parse(dec.decode(json));
    } catch (e) {
      return { error: `.json does not parse: ${(e as Error).message}` };
    }
    const o = typeof v === 'number' ? { label: v } : (v as Record<string, unknown> | null);
    const label = o?.label ?? o?.cls;
    if (typeof label === 'number' && Number.isInteger(label) && label >= 0) out.label = label;
    else if (!parts.has('cls')) return { error: '.json has no integer "label" (or "cls") >= 0' };
    if (typeof o?.synset === 'string') out.synset = o.synset;
    if (Array.isArray(o?.boxes)) out.boxes = (o.boxes as unknown[]).filter(isBox);
  }
  const cls = parts.get('cls');
  if (cls !== undefined) {
    const s = dec.decode(cls).trim();
    if (!/^\d+$/.test(s)) return { error: `.cls is not a decimal class index: ${JSON.stringify(s.slice(0, 40))}` };
    out.label = Number(s);
  }
  return out;
}

function isBox(b: unknown): b is PixelBox {
  return Array.isArray(b) && b.length === 4 && b.every((v) => typeof v === 'number' && Number.isFinite(v));
}

/**
 * WebDataset shard -> samples: consecutive members with the same key form one sample; it needs
 * an image (`jpg`/`jpeg`/`png`/`webp`) and a label (`cls` or `json`), otherwise it is skipped
 * as 'incomplete-sample' / 'bad-label'. The sample's offset is its first member's header.
 */
export function readWebDataset(src: ByteSource, opts: WebDatasetOptions = {}): SampleStream {
  const problems = opts.problems ?? new Problems();
  const file = opts.file ?? (typeof src === 'string' ? src : '<tar>');
  return sampleStream(problems, async function* () {
    let key: string | null = null;
    let offset = 0;
    let parts = new Map<string, Uint8Array>();
    const finish = (): Sample | null => {
      if (key === null) return null;
      const imgExt = IMAGE_EXTS.find((e) => parts.has(e));
      const lab = labelOf(parts);
      if (lab.error !== undefined) {
        problems.add('bad-label', file, offset, `sample ${JSON.stringify(key)}: ${lab.error}`);
        return null;
      }
      if (imgExt === undefined || lab.label === undefined) {
        const missing = [imgExt === undefined ? 'an image (.jpg/.png)' : '', lab.label === undefined ? 'a label (.cls/.json)' : '']
          .filter(Boolean)
          .join(' and ');
        problems.add('incomplete-sample', file, offset, `sample ${JSON.stringify(key)} lacks ${missing} (members: ${[...parts.keys()].join(', ')})`);
        return null;
      }
      const s: Sample = { key, image: parts.get(imgExt)!, label: lab.label, source: { file, offset } };
      if (lab.synset !== undefined) s.synset = lab.synset;
      if (lab.boxes !== undefined) s.boxes = lab.boxes;
      return s;
    };
    for await (const m of readTarMembers(src, { ...opts, file, problems })) {
      const { key: k, ext } = splitKey(m.name);
      if (k !== key) {
        const s = finish();
        if (s) yield s;
        key = k;
        offset = m.offset;
        parts = new Map();
      }
      parts.set(ext, m.data);
    }
    const s = finish();
    if (s) yield s;
  });
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface TarEntry {
  name: string;
  data: Uint8Array | string;
  /** Seconds since the epoch (default 0, so archives are reproducible). */
  mtime?: number;
  mode?: number;
}

export interface TarWriteOptions {
  /** How to store names longer than ustar's 100 (+155 prefix) bytes: pax 'x' (default) or GNU 'L'. */
  longNames?: 'pax' | 'gnu';
  /** Let unsafe names through (only to build bad archives in tests). */
  allowUnsafe?: boolean;
}

const enc = new TextEncoder();

function putString(h: Uint8Array, s: string | Uint8Array, start: number, len: number): void {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  if (b.length > len) throw new Error(`tar: field of ${b.length} bytes does not fit ${len}`);
  h.set(b, start);
}

function putOctal(h: Uint8Array, v: number, start: number, len: number): void {
  const s = v.toString(8);
  if (s.length <= len - 1) {
    putString(h, s.padStart(len - 1, '0'), start, len - 1);
    return;
  }
  // GNU base-256 for values that do not fit in octal
  let x = v;
  for (let i = start + len - 1; i > start; i--) {
    h[i] = x % 256;
    x = Math.floor(x / 256);
  }
  h[start] = 0x80;
}

/** One 512-byte header block. */
export function tarHeader(name: string | Uint8Array, size: number, type = '0', mtime = 0, mode = 0o644): Uint8Array {
  const h = new Uint8Array(TAR_BLOCK);
  const nameBytes = typeof name === 'string' ? enc.encode(name) : name;
  let prefix: Uint8Array | null = null;
  let short = nameBytes;
  if (nameBytes.length > 100) {
    // split at a '/' so that the prefix has <= 155 bytes and the rest <= 100
    for (let i = nameBytes.length - 1; i > 0; i--) {
      if (nameBytes[i] === 0x2f && i <= 155 && nameBytes.length - i - 1 <= 100 && nameBytes.length - i - 1 > 0) {
        prefix = nameBytes.subarray(0, i);
        short = nameBytes.subarray(i + 1);
        break;
      }
    }
    if (prefix === null) short = nameBytes.subarray(0, 100);
  }
  putString(h, short, 0, 100);
  putOctal(h, mode, 100, 8);
  putOctal(h, 0, 108, 8);
  putOctal(h, 0, 116, 8);
  putOctal(h, size, 124, 12);
  putOctal(h, mtime, 136, 12);
  h[156] = type.charCodeAt(0);
  putString(h, 'ustar\x0000', 257, 8);
  if (prefix) putString(h, prefix, 345, 155);
  h.fill(32, 148, 156);
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += h[i]!;
  putString(h, sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bl = enc.encode(body).length;
  // the length counts its own digits: iterate to the fixed point
  let len = bl + 1;
  while (String(len).length + bl !== len) len = String(len).length + bl;
  return `${len}${body}`;
}

function fitsUstar(name: Uint8Array): boolean {
  if (name.length <= 100) return true;
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] === 0x2f && i <= 155 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) return true;
  }
  return false;
}

/** The blocks of one entry (extended header when the name needs one, header, data, padding). */
export function encodeTarEntry(e: TarEntry, opts: TarWriteOptions = {}): Uint8Array[] {
  if (!opts.allowUnsafe) {
    const why = unsafeMemberName(e.name);
    if (why !== null) throw new Error(`tar: refusing member ${JSON.stringify(e.name)}: ${why}`);
  }
  const data = typeof e.data === 'string' ? enc.encode(e.data) : e.data;
  const nameBytes = enc.encode(e.name);
  const out: Uint8Array[] = [];
  const withPadding = (b: Uint8Array) => {
    out.push(b);
    const p = pad512(b.length);
    if (p) out.push(new Uint8Array(p));
  };
  if (!fitsUstar(nameBytes)) {
    if ((opts.longNames ?? 'pax') === 'gnu') {
      const body = new Uint8Array(nameBytes.length + 1);
      body.set(nameBytes);
      out.push(tarHeader('././@LongLink', body.length, 'L'));
      withPadding(body);
    } else {
      const body = enc.encode(paxRecord('path', e.name));
      out.push(tarHeader(`PaxHeaders/${e.name.split('/').pop()!.slice(0, 80)}`, body.length, 'x'));
      withPadding(body);
    }
  }
  out.push(tarHeader(nameBytes, data.length, '0', e.mtime ?? 0, e.mode ?? 0o644));
  withPadding(data);
  return out;
}

/** A whole archive in memory, ending with two zero blocks. */
export function encodeTar(entries: Iterable<TarEntry>, opts: TarWriteOptions = {}): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const e of entries) blocks.push(...encodeTarEntry(e, opts));
  blocks.push(new Uint8Array(2 * TAR_BLOCK));
  return Buffer.concat(blocks);
}

/** Writes an archive atomically (temp file + fsync + rename). */
export function writeTar(path: string, entries: Iterable<TarEntry>, opts: TarWriteOptions = {}): void {
  writeFileAtomic(path, encodeTar(entries, opts));
}

/** WebDataset members of one sample: `KEY.<ext>` image and `KEY.cls`. */
export function webDatasetEntries(key: string, image: Uint8Array, label: number, ext = 'jpg'): TarEntry[] {
  return [
    { name: `${key}.${ext}`, data: image },
    { name: `${key}.cls`, data: `${label}` },
  ];
}
