/**
 * Sharded evaluation on disk: each job of `casm eval localization|classifiers --shard-index i
 * --num-shards n` scores the batches b with b mod n = i and writes its share into its --out
 * (share.json, and examples.safetensors with the pixels of its example rows); `casm eval merge`
 * reads the shares back and refuses any set that is not every shard of one evaluation exactly
 * once, naming the directories. What a share holds besides the common fields is its command's.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Problems } from '../data/samples.js';
import { encodeSafetensors, parseSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { sha256 } from '../util/sha256.js';
import { engineText, type Provenance } from './report.js';
import { UsageError } from '../util/usageError.js';

export const SHARE_FILE = 'share.json';
const EXAMPLES_FILE = 'examples.safetensors';
const SHARE_FORMAT = 'casm-ts-eval-share';
const SHARE_VERSION = 2;

export const SHARE_KINDS = ['localization', 'classifiers'] as const;
export type ShareKind = (typeof SHARE_KINDS)[number];

/** The share of an evaluation that one job scores: the batches b with b % count === index. */
export interface Shard {
  index: number;
  count: number;
}

/** Data problems as a report lists them: counts by kind and the first 20, sorted. */
export interface ProblemsRecord {
  count: number;
  byKind: Record<string, number>;
  first: string[];
}

/** What every share carries, whatever its command scores. */
export interface ShareCommon<Setup extends object, Example extends object> {
  shard: Shard;
  /** What every share of one evaluation must have in common: a merge refuses shares that differ here. */
  setup: Setup;
  provenance: Provenance;
  /** Images read (every share reads them all, to cut the same batches; it scores only its own). */
  read: number;
  problems: ProblemsRecord;
  /** Candidate rows of examples.png in this share, each with its image index. */
  examples: (Example & { index: number })[];
  seconds: number;
}

/** How a command's example rows are stored: their pixel arrays in examples.safetensors, the rest in share.json. */
export interface ExampleCodec<Example extends object> {
  pixels(e: Example): { name: string; shape: number[]; data: Float32Array }[];
  /** The row without its pixels. */
  meta(e: Example): object;
  /** The row back from its meta and its arrays by name. */
  restore(meta: object, values: (name: string) => Float32Array): Example;
}

type ShareFile = { format: string; version: number; kind: ShareKind; examplesSha256: string; share: ShareCommon<object, object> };

/** Throws unless `shard` is one of 0..count-1. */
export function checkShard(shard: Shard): void {
  if (!Number.isInteger(shard.index) || !Number.isInteger(shard.count) || shard.index < 0 || shard.index >= shard.count) {
    throw new UsageError(`--shard-index ${shard.index} --num-shards ${shard.count}: the index must be 0..${shard.count - 1}`);
  }
}

/**
 * The problems of a data pass as every share must list them: decode workers meet problems in no
 * fixed order, and shares are compared as JSON, so kinds and lines are sorted.
 */
export function problemsRecord(problems: Problems | null): ProblemsRecord {
  const first = (problems?.list ?? [])
    .slice()
    .sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.offset - b.offset || (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0)))
    .slice(0, 20)
    .map((p) => `${p.file}@${p.offset}: ${p.kind}: ${p.message}`);
  const byKind = Object.fromEntries(Object.entries(problems?.byKind ?? {}).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { count: problems?.count ?? 0, byKind, first };
}

/** Writes one share into `out`; share.json last, so its presence means the share is whole. */
export function writeShare<E extends object, S extends ShareCommon<object, E>>(out: string, kind: ShareKind, share: S, codec: ExampleCodec<E>): void {
  mkdirSync(out, { recursive: true });
  const pixels = encodeSafetensors(share.examples.flatMap((e, k) => codec.pixels(e).map((a) => ({ ...a, name: `${k}/${a.name}` }))));
  writeFileAtomic(join(out, EXAMPLES_FILE), pixels);
  const examples = share.examples.map((e) => ({ ...codec.meta(e), index: e.index }));
  const file: ShareFile = { format: SHARE_FORMAT, version: SHARE_VERSION, kind, examplesSha256: sha256(pixels), share: { ...share, examples } };
  writeFileAtomic(join(out, SHARE_FILE), JSON.stringify(file) + '\n');
}

/** The kind of the share in `dir`, checked to be a finished share of this version. */
export function shareKind(dir: string): ShareKind {
  return readShareFile(dir).kind;
}

function readShareFile(dir: string): ShareFile {
  const path = join(dir, SHARE_FILE);
  if (!existsSync(path)) throw new UsageError(`${dir}: no ${SHARE_FILE}: not a finished shard of 'casm eval localization|classifiers --num-shards'`);
  let file: ShareFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as ShareFile;
  } catch (e) {
    throw new UsageError(`${path}: not a share: ${(e as Error).message}`);
  }
  if (file.format !== SHARE_FORMAT || file.version !== SHARE_VERSION || !SHARE_KINDS.includes(file.kind)) {
    throw new UsageError(`${path}: not an evaluation share of this version (format ${file.format}, version ${file.version}, kind ${file.kind})`);
  }
  return file;
}

function readShare<E extends object, S extends ShareCommon<object, E>>(dir: string, kind: ShareKind, codec: ExampleCodec<E>): S {
  const file = readShareFile(dir);
  if (file.kind !== kind) throw new UsageError(`${dir}: a share of 'eval ${file.kind}', not of 'eval ${kind}'`);
  const pixelsPath = join(dir, EXAMPLES_FILE);
  const bytes = existsSync(pixelsPath) ? readFileSync(pixelsPath) : null;
  if (bytes === null || sha256(bytes) !== file.examplesSha256)
    throw new UsageError(`${pixelsPath}: missing or not the one ${join(dir, SHARE_FILE)} was written with`);
  const { tensors } = parseSafetensors(bytes, pixelsPath);
  const share = file.share as S;
  return {
    ...share,
    examples: share.examples.map((meta, k) => ({
      ...codec.restore(meta, (name) => {
        const t = tensors.get(`${k}/${name}`);
        if (!t) throw new UsageError(`${pixelsPath}: no tensor ${k}/${name}`);
        return t.data;
      }),
      index: meta.index,
    })),
  };
}

/**
 * The shares of `kind` in `dirs`, in shard order, checked to be the shards 0..n-1 of one
 * evaluation: the same setup (checkpoint and its weights, data, protocol, methods, options), the
 * same engine and the same images read.
 */
export function readShares<E extends object, S extends ShareCommon<object, E>>(dirs: string[], kind: ShareKind, codec: ExampleCodec<E>): S[] {
  if (dirs.length === 0) throw new UsageError('give the directories of the shards to merge');
  const shares = dirs.map((d) => readShare<E, S>(d, kind, codec));
  const [first] = shares as [S];
  const count = first.shard.count;
  const byIndex = new Map<number, string>();
  shares.forEach((s, i) => {
    if (s.shard.count !== count)
      throw new UsageError(`${dirs[0]} is shard ${first.shard.index} of ${count}, ${dirs[i]} shard ${s.shard.index} of ${s.shard.count}`);
    const other = byIndex.get(s.shard.index);
    if (other !== undefined) throw new UsageError(`shard ${s.shard.index} of ${count} given twice: ${other} and ${dirs[i]}`);
    byIndex.set(s.shard.index, dirs[i]!);
    const setups = [first.setup, s.setup] as Record<string, unknown>[];
    for (const key of new Set([...Object.keys(setups[0]!), ...Object.keys(setups[1]!)])) {
      const [a, b] = setups.map((x) => JSON.stringify(x[key]) ?? 'nothing');
      if (a !== b) throw new UsageError(`${dirs[0]} and ${dirs[i]} are not shards of one evaluation: their ${key} differs (${clip(a!)} against ${clip(b!)})`);
    }
    if (engineText(s.provenance) !== engineText(first.provenance)) {
      throw new UsageError(
        `${dirs[0]} and ${dirs[i]} were scored by different engines (${engineText(first.provenance)} against ${engineText(s.provenance)}): their figures would not be one run's`,
      );
    }
    // Where and what, not the decoder's words: libvips words one corrupt JPEG differently from run to run.
    const seen = (p: ProblemsRecord) => JSON.stringify([p.count, p.byKind, p.first.map((l) => l.split(': ').slice(0, 2).join(': '))]);
    if (s.read !== first.read || seen(s.problems) !== seen(first.problems)) {
      throw new UsageError(
        `${dirs[0]} and ${dirs[i]} read different data (${first.read} images, ${first.problems.count} problems against ${s.read}, ${s.problems.count})`,
      );
    }
  });
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) throw new UsageError(`shard${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${count} missing (given: ${dirs.join(', ')})`);
  return shares.sort((a, b) => a.shard.index - b.shard.index);
}

/** The first `n` example rows of all shares in image order: the rows one process would have kept. */
export function firstExamples<E extends object>(shares: ShareCommon<object, E>[], n: number): E[] {
  return shares
    .flatMap((s) => s.examples)
    .sort((a, b) => a.index - b.index)
    .slice(0, n)
    .map(({ index: _, ...row }) => row as E);
}

const clip = (s: string) => (s.length > 120 ? `${s.slice(0, 117)}...` : s);
