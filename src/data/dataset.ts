/**
 * A data set as a training or evaluation job sees it: the resolved spec cut into shards (this
 * job's share of them), the synset list, the class subset and the validation boxes. Reading one
 * shard gives labelled samples with their class boxes; counting reads headers only.
 *
 * No tfjs: the shards and the options travel to worker threads as plain data.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { classBoxes, loadLocCsv, loadXmlBoxes, type Annotation } from './boxes.js';
import { listImageFolder, readImageFolder, readSynsetList, type ImageFolderEntry } from './imageFolder.js';
import { Problems, sampleStream, type Sample, type SampleStream } from './samples.js';
import { resolveDataSpec, type Layout } from './spec.js';
import { labelOf, readTarMembers, readWebDataset, splitKey, IMAGE_EXTS } from './tar.js';
import { readTfRecord, readTfRecords } from './tfrecord.js';

/** One unit of reading: a shard file, or a slice of an ImageFolder listing. */
export interface Shard {
  /** Position in the full (unsplit) shard list. */
  index: number;
  layout: Layout;
  /** The shard file, or the ImageFolder root. */
  file: string;
  entries?: ImageFolderEntry[];
}

export interface DatasetOptions {
  /** Synset list file (sorted synsets -> class index); ImageFolder derives it from its folders. */
  synsets?: string;
  /** Keep only these classes: ranges `0-99,200`, or a file with one index or synset per line. */
  classes?: string;
  /** Validation boxes: a folder of VOC XML files or LOC_val_solution.csv. */
  boxes?: string;
  /** This job's share of the shards: shards i with i % numShards == shardIndex. */
  shardIndex?: number;
  numShards?: number;
  /** Images per virtual shard of an ImageFolder (default 1000). */
  folderShardSize?: number;
}

/** What a shard reader needs besides the shard: plain data, cloned into every worker. */
export interface ReadContext {
  synsets: string[] | null;
  /** Kept class indices, or null for all. */
  classes: number[] | null;
  annotations: Map<string, Annotation> | null;
}

export interface Dataset extends ReadContext {
  spec: string;
  layout: Layout;
  /** This job's shards. */
  shards: Shard[];
  /** Shards of the whole spec (before --shard-index/--num-shards). */
  totalShards: number;
  /** Problems met while opening (folders outside the synset list, annotation files). */
  problems: Problems;
}

export class DatasetError extends Error {
  override name = 'DatasetError';
}

/** `0-99,200` -> indices; whitespace allowed. */
export function parseClassRanges(text: string, where: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(/[,\s]+/).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new DatasetError(`${where}: ${JSON.stringify(part)} is not a class index or range like 0-99`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new DatasetError(`${where}: range ${part} is reversed`);
    for (let c = lo; c <= hi; c++) out.add(c);
  }
  if (out.size === 0) throw new DatasetError(`${where}: no classes given`);
  return [...out].sort((a, b) => a - b);
}

/** --classes (or `where`): a file (indices or synsets, one per line, `#` comments) or inline ranges. */
export function parseClasses(arg: string, synsets: string[] | null, where = '--classes'): number[] {
  if (!existsSync(arg)) return parseClassRanges(arg, where);
  const lines = readFileSync(arg, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
  if (lines.every((l) => /^[\d\s,-]+$/.test(l))) return parseClassRanges(lines.join(','), arg);
  if (synsets === null) throw new DatasetError(`${arg}: names synsets, but the data set has no synset list (give --synsets)`);
  const index = new Map(synsets.map((s, i) => [s, i]));
  const out = lines.map((l) => {
    const i = index.get(l.split(/\s+/)[0]!);
    if (i === undefined) throw new DatasetError(`${arg}: synset ${JSON.stringify(l)} is not in the synset list`);
    return i;
  });
  return [...new Set(out)].sort((a, b) => a - b);
}

export function loadAnnotations(path: string, problems: Problems): Map<string, Annotation> {
  if (!existsSync(path)) throw new DatasetError(`${path}: boxes not found (expected a folder of VOC XML files or LOC_val_solution.csv)`);
  const ann = statSync(path).isDirectory() ? loadXmlBoxes(path, problems) : loadLocCsv(path, problems);
  if (ann.size === 0) throw new DatasetError(`${path}: no box annotations in it`);
  return ann;
}

/**
 * Resolves the spec (an error when it matches nothing), splits an ImageFolder into virtual shards
 * (strided, so every shard spans all classes) and keeps this job's share.
 */
export function openDataset(spec: string, opts: DatasetOptions = {}): Dataset {
  const resolved = resolveDataSpec(spec);
  const problems = new Problems();
  let synsets = opts.synsets !== undefined ? readSynsetList(opts.synsets) : null;
  let shards: Shard[];
  if (resolved.layout === 'imagefolder') {
    const root = resolved.files[0]!;
    const listing = listImageFolder(root, synsets ?? undefined, problems);
    synsets = listing.synsets;
    if (listing.entries.length === 0) throw new DatasetError(`${spec}: no images under ${root}`);
    const per = opts.folderShardSize ?? 1000;
    const count = Math.ceil(listing.entries.length / per);
    shards = Array.from({ length: count }, (_, k) => ({
      index: k,
      layout: 'imagefolder' as const,
      file: root,
      entries: listing.entries.filter((_, i) => i % count === k),
    }));
  } else {
    shards = resolved.files.map((file, index) => ({ index, layout: resolved.layout, file }));
  }
  const totalShards = shards.length;
  const n = opts.numShards ?? 1;
  const i = opts.shardIndex ?? 0;
  if (!(Number.isInteger(n) && n >= 1 && Number.isInteger(i) && i >= 0 && i < n)) {
    throw new DatasetError(`--shard-index ${i} --num-shards ${n}: need 0 <= index < num-shards`);
  }
  shards = shards.filter((s) => s.index % n === i);
  if (shards.length === 0) throw new DatasetError(`${spec}: job ${i} of ${n} gets none of the ${totalShards} shards`);
  const classes = opts.classes !== undefined ? parseClasses(opts.classes, synsets) : null;
  const annotations = opts.boxes !== undefined ? loadAnnotations(opts.boxes, problems) : null;
  return { spec, layout: resolved.layout, shards, totalShards, problems, synsets, classes, annotations };
}

/**
 * Fixes a sample's label from its synset when there is a synset list, and attaches the boxes of
 * its class. Returns false when the sample must be skipped (reported in problems).
 */
function label(s: Sample, ctx: ReadContext, problems: Problems): boolean {
  if (ctx.synsets !== null && s.synset !== undefined) {
    const i = ctx.synsets.indexOf(s.synset);
    if (i < 0) {
      problems.add('unknown-synset', s.source.file, s.source.offset, `${s.key}: synset ${s.synset} is not in the synset list`);
      return false;
    }
    s.label = i;
  }
  if (ctx.synsets !== null && s.label >= ctx.synsets.length) {
    problems.add('bad-label', s.source.file, s.source.offset, `${s.key}: label ${s.label} >= ${ctx.synsets.length} classes of the synset list`);
    return false;
  }
  if (ctx.annotations !== null) {
    const id = basename(s.key).replace(/\.[^.]*$/, '');
    const ann = ctx.annotations.get(id) ?? ctx.annotations.get(basename(s.key));
    const synset = s.synset ?? ctx.synsets?.[s.label];
    if (ann === undefined) {
      problems.add('no-annotation', s.source.file, s.source.offset, `${s.key}: no box annotation for image ${id}`);
      s.boxes = [];
    } else if (synset === undefined) {
      problems.add('no-class-box', s.source.file, s.source.offset, `${s.key}: class ${s.label} has no synset to pick its boxes (give --synsets)`);
      s.boxes = [];
    } else {
      s.boxes = classBoxes(ann, synset, problems);
    }
  }
  return true;
}

/** The labelled samples of one shard, restricted to the kept classes. */
export function readShard(shard: Shard, ctx: ReadContext, problems: Problems): SampleStream {
  const keep = ctx.classes === null ? null : new Set(ctx.classes);
  const raw =
    shard.layout === 'webdataset'
      ? readWebDataset(shard.file, { problems })
      : shard.layout === 'tfrecord'
        ? readTfRecord(shard.file, { problems })
        : readImageFolder(shard.file, undefined, { problems, entries: shard.entries ?? [] });
  return sampleStream(problems, async function* () {
    for await (const s of raw) {
      if (!label(s, ctx, problems)) continue;
      if (keep !== null && !keep.has(s.label)) continue;
      yield s;
    }
  });
}

/**
 * Samples in a shard without reading the images (tar: member headers and the small label files;
 * TFRecord: record headers). Exact, except for TFRecord with a class subset: the label is inside
 * each record, so the count is scaled by the kept fraction of classes (`exact` false).
 */
export async function countShard(shard: Shard, ctx: ReadContext): Promise<{ count: number; exact: boolean }> {
  const keep = ctx.classes === null ? null : new Set(ctx.classes);
  const quiet = new Problems(0);
  if (shard.layout === 'imagefolder') {
    const entries = shard.entries ?? [];
    return { count: keep === null ? entries.length : entries.filter((e) => keep.has(e.label)).length, exact: true };
  }
  if (shard.layout === 'tfrecord') {
    let n = 0;
    for await (const _ of readTfRecords(shard.file, { problems: quiet, readData: false })) n++;
    if (keep === null) return { count: n, exact: true };
    const classes = ctx.synsets?.length ?? 1000;
    return { count: Math.round((n * keep.size) / classes), exact: false };
  }
  // A sample counts when its key has an image and (with a class subset) a kept label.
  const small = (name: string) => !IMAGE_EXTS.includes(splitKey(name).ext);
  const seen = new Map<string, { image: boolean; parts: Map<string, Uint8Array> }>();
  for await (const m of readTarMembers(shard.file, { problems: quiet, readData: small })) {
    const { key, ext } = splitKey(m.name);
    const e = seen.get(key) ?? { image: false, parts: new Map<string, Uint8Array>() };
    if (IMAGE_EXTS.includes(ext)) e.image = true;
    else e.parts.set(ext, m.data);
    seen.set(key, e);
  }
  let count = 0;
  for (const e of seen.values()) {
    if (!e.image) continue;
    const label = labelOf(e.parts).label;
    if (keep === null || (label !== undefined && keep.has(label))) count++;
  }
  return { count, exact: true };
}
