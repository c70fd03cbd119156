/**
 * `--data` / `--val` specs: a path, brace pattern or glob (optionally with a layout prefix, or
 * several joined with '::') resolved into the files of one layout (casm-spec.md section 5):
 * WebDataset tar shards, TFRecord shards, or one ImageFolder root.
 *
 * Only node:fs and the CRC helper are imported, never tfjs, so data-loading worker threads can
 * resolve specs themselves.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { maskedCrc32c } from '../util/crc32c.js';

/** torchvision's IMG_EXTENSIONS that sharp decodes: the files an ImageFolder holds. */
export const IMAGE_FILE_EXTS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff'];

export type Layout = 'webdataset' | 'tfrecord' | 'imagefolder';

export class DataSpecError extends Error {
  override name = 'DataSpecError';
}

export interface ResolvedSpec {
  spec: string;
  layout: Layout;
  /** Shard files in order, or [root directory] for imagefolder. */
  files: string[];
}

const q = (s: string) => JSON.stringify(s);
// Code-unit order, as imageFolder.ts sorts synsets (same as Python's sorted() for BMP names).
const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortedUnique = (xs: string[]) => [...new Set(xs)].sort(byCodePoint);

// ---------------------------------------------------------------------------------------------
// Brace expansion, following Python's `braceexpand` (what WebDataset uses), minus backslash escapes.

const INT_RANGE = /^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$/;
const CHAR_RANGE = /^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$/;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** A typo like {0..99999999} would otherwise allocate for minutes before failing on missing files. */
const MAX_NAMES = 1_000_000;

export function expandBraces(pattern: string): string[] {
  return expandPattern(pattern, pattern);
}

/** Literal runs and top-level {groups} of `p`, multiplied out left to right. */
function expandPattern(p: string, whole: string): string[] {
  let out = [''];
  const append = (alternatives: string[]) => {
    if (out.length * alternatives.length > MAX_NAMES) {
      throw new DataSpecError(`brace pattern ${q(whole)} expands to more than ${MAX_NAMES} names`);
    }
    out = out.flatMap((head) => alternatives.map((tail) => head + tail));
  };
  let depth = 0;
  let start = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '{') {
      if (depth === 0) {
        append([p.slice(start, i)]);
        start = i;
      }
      depth++;
    } else if (p[i] === '}') {
      // braceexpand lets a stray '}' pass when a later '{' rebalances it; here it is an error
      if (--depth < 0) throw new DataSpecError(`brace pattern ${q(whole)}: '}' without '{' at offset ${i}`);
      if (depth === 0) {
        append(expandGroup(p.slice(start + 1, i), whole));
        start = i + 1;
      }
    }
  }
  if (depth !== 0) throw new DataSpecError(`brace pattern ${q(whole)}: unbalanced braces ('{' not closed)`);
  append([p.slice(start)]);
  return out;
}

/** The inside of one {group}: a range, a comma list, or (no comma) literal braces as in bash. */
function expandGroup(expr: string, whole: string): string[] {
  const int = INT_RANGE.exec(expr);
  if (int) return intRange(int[1]!, int[2]!, int[3], whole);
  const chr = CHAR_RANGE.exec(expr);
  if (chr) return steps(ALPHABET.indexOf(chr[1]!), ALPHABET.indexOf(chr[2]!), chr[3], whole).map((i) => ALPHABET[i]!);
  const items: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    if (expr[i] === '{') depth++;
    else if (expr[i] === '}') depth--;
    else if (expr[i] === ',' && depth === 0) {
      items.push(expr.slice(start, i));
      start = i + 1;
    }
  }
  if (items.length === 0) return expandPattern(expr, whole).map((s) => `{${s}}`);
  items.push(expr.slice(start));
  return items.flatMap((item) => expandPattern(item, whole));
}

/** Zero padding as braceexpand: when either bound (other than 0) starts with 0, to the longer bound's width. */
function intRange(left: string, right: string, incr: string | undefined, whole: string): string[] {
  const padded = [left, right].some((s) => s !== '0' && s !== '-0' && /^-?0/.test(s));
  const width = padded ? Math.max(left.length, right.length) : 0;
  return steps(Number(left), Number(right), incr, whole).map((n) => {
    const sign = n < 0 ? '-' : '';
    return sign + String(Math.abs(n)).padStart(width - sign.length, '0');
  });
}

/** from..to inclusive, counting down when to < from; a step of 0 means 1 (braceexpand). */
function steps(from: number, to: number, incr: string | undefined, whole: string): number[] {
  const step = Number(incr ?? 1) || 1;
  if (Math.abs(to - from) / step >= MAX_NAMES) {
    throw new DataSpecError(`brace pattern ${q(whole)} expands to more than ${MAX_NAMES} names`);
  }
  const out: number[] = [];
  if (from < to) for (let i = from; i <= to; i += step) out.push(i);
  else for (let i = from; i >= to; i -= step) out.push(i);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Globs

const GLOB_CHARS = /[*?[]/;

const joinPath = (dir: string, name: string) => (dir === '' ? name : dir.endsWith('/') ? dir + name : `${dir}/${name}`);

function listDir(dir: string) {
  try {
    return readdirSync(dir === '' ? '.' : dir, { withFileTypes: true });
  } catch {
    return []; // not a directory, or unreadable: matches nothing, as in shell globbing
  }
}

/** fnmatch for one path segment: *, ?, [abc], [a-z], [!abc]. */
function segmentRegex(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      // a ']' right after '[' or '[!' is a member, as in fnmatch; no closing ']' means a literal '['
      let j = i + 1;
      if (seg[j] === '!') j++;
      if (seg[j] === ']') j++;
      const close = seg.indexOf(']', j);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      const body = seg.slice(i + 1, close);
      const negate = body.startsWith('!');
      re += `[${negate ? '^' : ''}${(negate ? body.slice(1) : body).replace(/[\\\]^]/g, '\\$&')}]`;
      i = close;
    } else re += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  try {
    return new RegExp(`^${re}$`, 'su');
  } catch {
    throw new DataSpecError(`glob segment ${q(seg)} is malformed (a reversed range such as [z-a]?)`);
  }
}

/** `dir` and every directory below it, skipping hidden ones and not following symlinks (no cycles). */
function dirsBelow(dir: string): string[] {
  const out = [dir];
  for (const e of listDir(dir)) {
    if (e.isDirectory() && !e.name.startsWith('.')) out.push(...dirsBelow(joinPath(dir, e.name)));
  }
  return out;
}

export function expandGlob(pattern: string): string[] {
  let paths = [pattern.startsWith('/') ? '/' : ''];
  for (const seg of pattern.split('/').filter((s) => s !== '')) {
    if (seg === '**') paths = paths.flatMap(dirsBelow);
    else if (!GLOB_CHARS.test(seg))
      paths = paths.map((p) => joinPath(p, seg)); // checked at the end
    else {
      const re = segmentRegex(seg);
      const hidden = seg.startsWith('.');
      paths = paths.flatMap((p) =>
        listDir(p)
          .filter((e) => (hidden || !e.name.startsWith('.')) && re.test(e.name))
          .map((e) => joinPath(p, e.name)),
      );
    }
  }
  return sortedUnique(paths.filter((p) => p !== '' && existsSync(p)));
}

// ---------------------------------------------------------------------------------------------
// Layouts

const PREFIXES: [string, Layout][] = [
  ['wds:', 'webdataset'],
  ['tfrecord:', 'tfrecord'],
  ['folder:', 'imagefolder'],
];

interface Part {
  layout: Layout;
  files: string[];
}

function readHead(path: string, n: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const buf = new Uint8Array(n);
    return buf.subarray(0, readSync(fd, buf, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}

/** By name first (cheap, and works for empty shards); by the first bytes for names that say nothing. */
function detectFile(path: string): Layout {
  const name = basename(path).toLowerCase();
  if (name.endsWith('.tar')) return 'webdataset';
  if (/\.(tfrecords?|tfrec)$/.test(name) || /-\d+-of-\d+$/.test(name)) return 'tfrecord';
  const head = readHead(path, 512);
  // "ustar" magic of POSIX ("ustar\0") and old GNU ("ustar  ") headers
  if (head.length >= 262 && new TextDecoder().decode(head.subarray(257, 262)) === 'ustar') return 'webdataset';
  if (head.length >= 12) {
    // a TFRecord starts with a uint64 length followed by its masked CRC32C: 1 in 2^32 by chance
    const lengthCrc = new DataView(head.buffer, head.byteOffset, 12).getUint32(8, true);
    if (maskedCrc32c(head.subarray(0, 8)) === lengthCrc) return 'tfrecord';
  }
  throw new DataSpecError(
    `cannot tell the layout of ${q(path)}: its name is not *.tar, *.tfrecord or NAME-00000-of-00010, ` +
      `and it starts with neither a tar header nor a TFRecord frame (give a wds: or tfrecord: prefix if it is one)`,
  );
}

/** Files of one layout, in order; an imagefolder is a single root. */
function merge(parts: Part[]): Part {
  const [first, ...rest] = parts;
  for (const p of rest) {
    if (p.layout !== first!.layout) {
      throw new DataSpecError(`mixed layouts: ${q(first!.files[0]!)} is ${first!.layout} but ${q(p.files[0]!)} is ${p.layout}`);
    }
  }
  const files = [...new Set(parts.flatMap((p) => p.files))];
  if (first!.layout === 'imagefolder' && files.length > 1) {
    throw new DataSpecError(`only one image folder root can be given, got ${files.map(q).join(' and ')}`);
  }
  return { layout: first!.layout, files };
}

/** Whether an image file lies in dir or below it (at most `depth` levels; stops at the first). */
function holdsImage(dir: string, depth: number): boolean {
  for (const e of listDir(dir)) {
    const path = joinPath(dir, e.name);
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isFile() && IMAGE_FILE_EXTS.some((x) => e.name.toLowerCase().endsWith(x))) return true;
    if (st?.isDirectory() && depth > 0 && !e.name.startsWith('.') && holdsImage(path, depth - 1)) return true;
  }
  return false;
}

/** A directory: an image folder when it has class sub-directories, else the shards inside it. */
function resolveDirectory(dir: string, forced: Layout | undefined): Part {
  const dirs: string[] = [];
  const files: string[] = [];
  for (const e of listDir(dir)) {
    if (e.name.startsWith('.')) continue;
    const path = joinPath(dir, e.name);
    // stat, not the Dirent type: shards and class folders are often symlinks
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) dirs.push(path);
    else if (st?.isFile()) files.push(path);
  }
  if (forced === 'imagefolder' || (forced === undefined && dirs.length > 0)) {
    if (dirs.length === 0) throw new DataSpecError(`directory ${q(dir)} has no class sub-directories`);
    if (!dirs.some((d) => holdsImage(d, 8))) {
      throw new DataSpecError(`image folder ${q(dir)}: none of its ${dirs.length} class folders holds an image file (${IMAGE_FILE_EXTS.join(' ')})`);
    }
    return { layout: 'imagefolder', files: [dir] };
  }
  if (files.length === 0) {
    throw new DataSpecError(`directory ${q(dir)} is empty${dirs.length ? ' (it has only sub-directories)' : ''}`);
  }
  files.sort(byCodePoint); // so that detection errors name the first file, whatever readdir order is
  if (forced) return { layout: forced, files };
  return merge(files.map((f) => ({ layout: detectFile(f), files: [f] })));
}

function resolvePath(path: string, forced: Layout | undefined): Part {
  const st = statSync(path);
  if (st.isDirectory()) return resolveDirectory(path, forced);
  if (!st.isFile()) throw new DataSpecError(`${q(path)} is neither a file nor a directory`);
  if (forced === 'imagefolder') throw new DataSpecError(`folder: needs a directory, ${q(path)} is a file`);
  // a prefix is the user's word for files whose layout cannot be detected
  return { layout: forced ?? detectFile(path), files: [path] };
}

/** Existing paths named by a pattern; every name a brace pattern expands to must exist. */
function matchPaths(pattern: string): string[] {
  const names = expandBraces(pattern);
  const found: string[] = [];
  const missing: string[] = [];
  for (const name of names) {
    const matches = GLOB_CHARS.test(name) ? expandGlob(name) : existsSync(name) ? [name] : [];
    if (matches.length === 0) missing.push(name);
    found.push(...matches);
  }
  if (missing.length === 0) return found; // resolvePart sorts
  if (names.length === 1) {
    throw new DataSpecError(GLOB_CHARS.test(pattern) ? `${q(pattern)} matches no file` : `${q(pattern)} does not exist`);
  }
  const shown = missing.slice(0, 5).map(q).join(', ');
  throw new DataSpecError(
    `${missing.length} of the ${names.length} names of the brace pattern ${q(pattern)} match no file: ` +
      `${shown}${missing.length > 5 ? `, and ${missing.length - 5} more` : ''}`,
  );
}

function resolvePart(part: string): Part {
  const prefix = PREFIXES.find(([p]) => part.startsWith(p));
  const pattern = prefix ? part.slice(prefix[0].length) : part;
  if (pattern === '') throw new DataSpecError(`${q(part)} names no path`);
  const parts = matchPaths(pattern).map((p) => resolvePath(p, prefix?.[1]));
  const merged = merge(parts);
  // directories expand into their own sorted files; keep the whole part in code-point order
  return merged.layout === 'imagefolder' ? merged : { layout: merged.layout, files: sortedUnique(merged.files) };
}

export function resolveDataSpec(spec: string): ResolvedSpec {
  try {
    const { layout, files } = merge(spec.split('::').map(resolvePart));
    return { spec, layout, files };
  } catch (e) {
    if (e instanceof DataSpecError) throw new DataSpecError(`data spec ${q(spec)}: ${e.message}`);
    throw e;
  }
}
