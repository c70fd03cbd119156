/**
 * The `casm data` commands: turn an ImageFolder into WebDataset tar shards (makeShards), and
 * read a data set end to end to report what a training job would see (inspectData).
 *
 * No tfjs: only the readers, the header probe (sharp) and node:fs.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, relative, resolve, isAbsolute } from 'node:path';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { Rng } from '../util/rng.js';
import { openDataset, readShard } from './dataset.js';
import { DecodeError, verifyImage, type ImageInfo } from './decode.js';
import { listImageFolder, type ImageFolderEntry } from './imageFolder.js';
import { Problems, type ProblemKind, type Sample } from './samples.js';
import type { Layout } from './spec.js';
import { writeTar, type TarEntry } from './tar.js';

const q = (s: string) => JSON.stringify(s);

// ---------------------------------------------------------------------------------------------
// make-shards

export interface MakeShardsOptions {
  /** ImageFolder root: root/<synset>/<image>. */
  root: string;
  /** Output folder (created when missing; must not hold shards with this prefix yet). */
  out: string;
  /** Samples per shard (default 1000); every shard but the last is full. */
  shardSize?: number;
  /** Shard file names: `<prefix>-000000.tar` (default 'shard'). */
  prefix?: string;
  /** Synset list file fixing the classes (default: the folder names under root). */
  synsets?: string;
  /** Shuffle the samples across shards with a seeded permutation (default true). */
  shuffle?: boolean;
  seed?: number;
  log?: (line: string) => void;
}

export interface MakeShardsResult {
  /** Brace spec of the shards written, e.g. `out/shard-{000000..000012}.tar`. */
  spec: string;
  shards: string[];
  samples: number;
  /** Files skipped (unreadable, empty, not JPEG/PNG/WebP, duplicate key) and folders outside the synset list. */
  problems: Problems;
}

/** Image format by its first bytes: the WebDataset extension, or null for anything else. */
export function sniffImageExt(b: Uint8Array): 'jpg' | 'png' | 'webp' | null {
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpg';
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length >= 8 && png.every((v, i) => b[i] === v)) return 'png';
  const ascii = (from: number, to: number) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  return null;
}

/**
 * The WebDataset key of an ImageFolder entry: `<synset>/<name>` with the dots of the name
 * replaced by '_' (a WebDataset key ends at the first dot of the basename).
 */
export function shardKey(folderKey: string): string {
  const slash = folderKey.lastIndexOf('/');
  return folderKey.slice(0, slash + 1) + folderKey.slice(slash + 1).replace(/\./g, '_');
}

const shardName = (prefix: string, i: number) => `${prefix}-${String(i).padStart(6, '0')}.tar`;

/** Characters that resolveDataSpec reads as a pattern: the brace spec could not name such paths. */
const PATTERN_CHARS = /[{}*?[\]]/;

function statOrNull(path: string) {
  return statSync(path, { throwIfNoEntry: false }) ?? null;
}

/** True when `inner` is `outer` or inside it (after following symlinks of the existing parts). */
function isInside(inner: string, outer: string): boolean {
  const real = (p: string): string => {
    const abs = resolve(p);
    if (existsSync(abs)) return realpathSync(abs);
    const parent = resolve(abs, '..');
    return parent === abs ? abs : join(real(parent), relative(parent, abs));
  };
  const rel = relative(real(outer), real(inner));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function fisherYates<T>(xs: T[], rng: Rng): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = xs[i]!;
    xs[i] = xs[j]!;
    xs[j] = t;
  }
}

/** Reads files in order with a few reads in flight. */
type Checked = { data: Uint8Array } | { kind: ProblemKind; message: string };

/** Files read and decoded a few at a time ahead of the writer, in order. */
async function* readAhead(entries: ImageFolderEntry[], window = 16): AsyncGenerator<[ImageFolderEntry, Checked]> {
  const check = async (e: ImageFolderEntry): Promise<Checked> => {
    let data: Uint8Array;
    try {
      data = await readFile(e.path);
    } catch (err) {
      return { kind: 'unreadable', message: (err as Error).message };
    }
    if (data.length === 0) return { kind: 'unreadable', message: 'empty file' };
    try {
      await verifyImage(data);
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      return { kind: 'decode-error', message: `${err.message}: skipped` };
    }
    return { data };
  };
  const pending: Promise<Checked>[] = [];
  let next = 0;
  for (let i = 0; i < entries.length; i++) {
    while (next < entries.length && pending.length < window) pending.push(check(entries[next++]!));
    yield [entries[i]!, await pending.shift()!];
  }
}

/**
 * ImageFolder -> WebDataset tar shards `out/<prefix>-000000.tar`, ... Each sample is `KEY.jpg`
 * (or `.png` / `.webp`, by the file's first bytes) with the original bytes, `KEY.cls` (the class
 * index) and `KEY.json` ({"label", "synset"}); `out/synsets.txt` holds the sorted synset list.
 * Shards and the list are written atomically; existing shards with the prefix are never
 * overwritten (an error, before anything is written). Every image is decoded as training decodes
 * it; what fails (unreadable, not an image, truncated, over the pixel limit) is skipped and counted.
 */
export async function makeShards(opts: MakeShardsOptions): Promise<MakeShardsResult> {
  const { root, out } = opts;
  const shardSize = opts.shardSize ?? 1000;
  const prefix = opts.prefix ?? 'shard';
  const shuffle = opts.shuffle ?? true;
  const seed = opts.seed ?? 0;
  const log = opts.log ?? (() => {});

  if (!(Number.isInteger(shardSize) && shardSize >= 1)) throw new Error(`shard size ${shardSize}: need an integer >= 1`);
  if (!Number.isInteger(seed)) throw new Error(`seed ${seed}: need an integer`);
  if (prefix === '' || /[\\/]/.test(prefix) || PATTERN_CHARS.test(prefix) || prefix.startsWith('.')) {
    throw new Error(`shard prefix ${q(prefix)}: need a plain file name part (no '/', no leading '.', none of {}*?[])`);
  }
  const rootStat = statOrNull(root);
  if (rootStat === null) throw new Error(`${root}: image folder root does not exist`);
  if (!rootStat.isDirectory()) throw new Error(`${root}: image folder root is not a folder`);
  if (PATTERN_CHARS.test(out)) {
    throw new Error(`${out}: output path has one of {}*?[], which a data spec reads as a pattern: choose another folder`);
  }
  const outStat = statOrNull(out);
  if (outStat !== null && !outStat.isDirectory()) throw new Error(`${out}: output path exists and is not a folder`);
  if (isInside(out, root)) {
    throw new Error(`${out}: output folder is inside the image folder root ${root} (it would be read as a class folder)`);
  }
  if (outStat !== null) {
    const ours = new RegExp(`^${prefix.replace(/[.+^$|()\\]/g, '\\$&')}-\\d+\\.tar$`);
    const existing = readdirSync(out)
      .filter((f) => ours.test(f))
      .sort();
    if (existing.length > 0) {
      throw new Error(
        `${out}: already holds ${existing.length} shard(s) with prefix ${q(prefix)} (${existing.slice(0, 3).join(', ')}` +
          `${existing.length > 3 ? ', ...' : ''}): refusing to overwrite data; use another folder or --prefix`,
      );
    }
  }

  const problems = new Problems();
  const listing = listImageFolder(root, opts.synsets, problems);
  const synsetsPath = join(out, 'synsets.txt');
  const synsetsText = listing.synsets.join('\n') + '\n';
  if (existsSync(synsetsPath) && readFileSync(synsetsPath, 'utf8') !== synsetsText) {
    throw new Error(`${synsetsPath}: exists with a different synset list: refusing to overwrite it; use another folder`);
  }
  if (listing.entries.length === 0) throw new Error(`${root}: no image files (${listing.synsets.length} synsets) under it`);

  const entries = [...listing.entries];
  if (shuffle) fisherYates(entries, new Rng(seed));
  mkdirSync(out, { recursive: true });

  const shards: string[] = [];
  let samples = 0;
  let pending: TarEntry[] = [];
  let pendingCount = 0;
  let pendingBytes = 0;
  const seen = new Map<string, string>(); // shard key -> file
  let filesDone = 0;
  const flush = () => {
    const path = join(out, shardName(prefix, shards.length));
    if (existsSync(path)) throw new Error(`${path}: appeared while the shards were being written: refusing to overwrite it`);
    writeTar(path, pending);
    shards.push(path);
    samples += pendingCount;
    log(`wrote ${path}: ${pendingCount} samples, ${(pendingBytes / 2 ** 20).toFixed(1)} MiB (${filesDone}/${entries.length} files)`);
    pending = [];
    pendingCount = 0;
    pendingBytes = 0;
  };
  const skip = (kind: ProblemKind, e: ImageFolderEntry, message: string) => problems.add(kind, e.path, 0, message);

  for await (const [e, checked] of readAhead(entries)) {
    filesDone++;
    if (!('data' in checked)) {
      skip(checked.kind, e, checked.message);
      continue;
    }
    const { data } = checked;
    const ext = sniffImageExt(data);
    if (ext === null) {
      skip('decode-error', e, 'not a JPEG, PNG or WebP file (by its first bytes): skipped');
      continue;
    }
    const key = shardKey(e.key);
    const clash = seen.get(key);
    if (clash !== undefined) {
      skip('duplicate-key', e, `WebDataset key ${q(key)} is already taken by ${clash}: skipped`);
      continue;
    }
    seen.set(key, e.path);
    pending.push(
      { name: `${key}.${ext}`, data },
      { name: `${key}.cls`, data: `${e.label}` },
      { name: `${key}.json`, data: JSON.stringify({ label: e.label, synset: e.synset }) },
    );
    pendingCount++;
    pendingBytes += data.length;
    if (pendingCount === shardSize) flush();
  }
  if (pendingCount > 0) flush();
  if (shards.length === 0) {
    throw new Error(`${root}: none of its ${entries.length} image files could be used (${problems.format().slice(0, 3).join('; ')})`);
  }
  writeFileAtomic(synsetsPath, synsetsText);
  const last = String(shards.length - 1).padStart(6, '0');
  const spec = join(out, `${prefix}-{000000..${last}}.tar`);
  log(`${samples} samples in ${shards.length} shards: ${spec}` + (problems.count ? ` (${problems.count} skipped or reported)` : ''));
  return { spec, shards, samples, problems };
}

// ---------------------------------------------------------------------------------------------
// inspect

export interface InspectOptions {
  synsets?: string;
  classes?: string;
  boxes?: string;
  shardIndex?: number;
  numShards?: number;
  /** Images with more pixels are counted as decode errors (default: decode.ts's limit). */
  pixelLimit?: number;
  log?: (line: string) => void;
  /** A progress line every this many samples (default 10000; 0: none). */
  progressEvery?: number;
}

export interface Summary {
  min: number;
  median: number;
  max: number;
}

export interface InspectReport {
  spec: string;
  layout: Layout;
  /** This job's shards. */
  shards: number;
  totalShards: number;
  /** Samples whose image decodes as training decodes it (decode errors are in problems, not here). */
  samples: number;
  classes: {
    /** Classes with at least one sample. */
    count: number;
    /** Fewest / most samples of one class (0 when there are no samples). */
    min: number;
    max: number;
    /** Samples per class index, when at most 2000 classes have samples. */
    perClass?: Record<string, number>;
  };
  /** Upright image sizes in pixels (null when there are no samples). */
  sizes: { width: Summary | null; height: Summary | null };
  /** Samples per image format ('jpeg', 'png', 'webp'). */
  formats: Record<string, number>;
  /** Samples that carry at least one box. */
  withBoxes: number;
  problems: { count: number; byKind: Record<string, number>; first: string[] };
}

const PER_CLASS_LIMIT = 2000;
const FIRST_PROBLEMS = 20;

function summary(xs: number[]): Summary | null {
  if (xs.length === 0) return null;
  const s = Float64Array.from(xs).sort();
  const n = s.length;
  const median = n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  return { min: s[0]!, median, max: s[n - 1]! };
}

/**
 * Reads every sample of this job's shards, decodes each image as training does, and reports the counts,
 * classes, sizes, formats, boxes and problems. Nothing is fatal but an unreadable spec.
 */
export async function inspectData(spec: string, opts: InspectOptions = {}): Promise<InspectReport> {
  const log = opts.log ?? (() => {});
  const every = opts.progressEvery ?? 10000;
  const ds = openDataset(spec, {
    synsets: opts.synsets,
    classes: opts.classes,
    boxes: opts.boxes,
    shardIndex: opts.shardIndex,
    numShards: opts.numShards,
  });
  const problems = ds.problems;
  const perClass = new Map<number, number>();
  const widths: number[] = [];
  const heights: number[] = [];
  const formats: Record<string, number> = {};
  let samples = 0;
  let read = 0;
  let withBoxes = 0;
  const t0 = performance.now();

  const record = (s: Sample, r: ImageInfo | DecodeError) => {
    if (r instanceof DecodeError) {
      problems.add('decode-error', s.source.file, s.source.offset, `${s.key}: ${r.message}`);
      return;
    }
    samples++;
    perClass.set(s.label, (perClass.get(s.label) ?? 0) + 1);
    widths.push(r.width);
    heights.push(r.height);
    formats[r.format] = (formats[r.format] ?? 0) + 1;
    if (s.boxes !== undefined && s.boxes.length > 0) withBoxes++;
  };
  // never rejects (a probe still in flight when reading fails must not be an unhandled rejection)
  const probe = (s: Sample): Promise<ImageInfo | DecodeError | { bug: unknown }> =>
    verifyImage(s.image, { pixelLimit: opts.pixelLimit }).catch((e: unknown) => (e instanceof DecodeError ? e : { bug: e }));

  // a few decodes in flight (sharp runs them on its thread pool), recorded in order
  const inFlight: [Sample, ReturnType<typeof probe>][] = [];
  const drainOne = async () => {
    const [s, p] = inFlight.shift()!;
    const r = await p;
    if ('bug' in r) throw r.bug;
    record(s, r);
  };
  for (const [k, shard] of ds.shards.entries()) {
    for await (const s of readShard(shard, ds, problems)) {
      read++;
      inFlight.push([s, probe(s)]);
      if (inFlight.length >= 8) await drainOne();
      if (every > 0 && read % every === 0) {
        const secs = (performance.now() - t0) / 1000;
        log(
          `inspect: ${read} samples read (shard ${k + 1}/${ds.shards.length}), ${(read / Math.max(secs, 1e-9)).toFixed(0)} samples/s, ` +
            `${problems.count} problems`,
        );
      }
    }
    while (inFlight.length > 0) await drainOne();
  }

  const counts = [...perClass.values()];
  const classes: InspectReport['classes'] = {
    count: perClass.size,
    min: counts.length ? counts.reduce((a, b) => Math.min(a, b)) : 0,
    max: counts.length ? counts.reduce((a, b) => Math.max(a, b)) : 0,
  };
  if (perClass.size <= PER_CLASS_LIMIT) {
    classes.perClass = Object.fromEntries([...perClass.entries()].sort((a, b) => a[0] - b[0]).map(([c, n]) => [String(c), n]));
  }
  return {
    spec,
    layout: ds.layout,
    shards: ds.shards.length,
    totalShards: ds.totalShards,
    samples,
    classes,
    sizes: { width: summary(widths), height: summary(heights) },
    formats,
    withBoxes,
    problems: {
      count: problems.count,
      byKind: { ...problems.byKind } as Record<string, number>,
      first: problems.format().slice(0, FIRST_PROBLEMS),
    },
  };
}

/** A short human-readable block of an InspectReport (the CLI prints it; --json gives the report). */
export function formatInspect(r: InspectReport): string {
  const size = (s: Summary | null) => (s === null ? '-' : `${s.min} / ${s.median} / ${s.max}`);
  const lines = [
    `data:     ${r.spec} (${r.layout}, ${r.shards} of ${r.totalShards} shards)`,
    `samples:  ${r.samples}`,
    `classes:  ${r.classes.count} with samples, ${r.classes.min}..${r.classes.max} samples per class`,
    `width:    ${size(r.sizes.width)} px (min / median / max)`,
    `height:   ${size(r.sizes.height)} px (min / median / max)`,
    `formats:  ${
      Object.entries(r.formats)
        .map(([f, n]) => `${f} ${n}`)
        .join(', ') || '-'
    }`,
    `boxes:    ${r.withBoxes} samples with boxes`,
    `problems: ${r.problems.count}` +
      (r.problems.count
        ? ` (${Object.entries(r.problems.byKind)
            .map(([k, n]) => `${k} ${n}`)
            .join(', ')})`
        : ''),
  ];
  for (const p of r.problems.first) lines.push(`  ${p}`);
  if (r.problems.count > r.problems.first.length) lines.push(`  ... and ${r.problems.count - r.problems.first.length} more`);
  return lines.join('\n');
}
