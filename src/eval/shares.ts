/**
 * Sharded evaluation on disk: each job of `casm eval localization --shard-index i --num-shards n`
 * writes its share of the scores into its --out (share.json, and examples.safetensors with the
 * pixels of its example rows); `casm eval merge` reads the shares back and refuses any set that is
 * not every shard of one evaluation exactly once, naming the directories.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensors, parseSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../util/atomicWrite.js';
import type { LocalizationShare } from './localizationCommand.js';
import { EvalUsageError } from './methods.js';
import { engineText } from './report.js';

export const SHARE_FILE = 'share.json';
const EXAMPLES_FILE = 'examples.safetensors';
const SHARE_FORMAT = 'casm-ts-eval-share';
const SHARE_VERSION = 1;

type ExampleMeta = Omit<LocalizationShare['examples'][number], 'image' | 'cells'> & { boxes: LocalizationShare['examples'][number]['cells'][number]['box'][] };
type ShareFile = Omit<LocalizationShare, 'examples'> & { format: string; version: number; kind: 'localization'; examplesSha256: string; examples: ExampleMeta[] };

/** Writes one share into `out`; share.json last, so its presence means the share is whole. */
export function writeShare(out: string, share: LocalizationShare): void {
  mkdirSync(out, { recursive: true });
  const pixels = encodeSafetensors(
    share.examples.flatMap((e, k) => [
      { name: `${k}/image`, shape: [e.height, e.width, 3], data: Float32Array.from(e.image) },
      ...e.cells.map((c, j) => ({ name: `${k}/mask/${j}`, shape: [e.height, e.width], data: c.mask.slice() })),
    ]),
  );
  writeFileAtomic(join(out, EXAMPLES_FILE), pixels);
  const file: ShareFile = {
    format: SHARE_FORMAT,
    version: SHARE_VERSION,
    kind: 'localization',
    ...share,
    examplesSha256: sha256(pixels),
    examples: share.examples.map(({ image: _, cells, ...meta }) => ({ ...meta, boxes: cells.map((c) => c.box) })),
  };
  writeFileAtomic(join(out, SHARE_FILE), JSON.stringify(file) + '\n');
}

function readShare(dir: string): LocalizationShare {
  const path = join(dir, SHARE_FILE);
  if (!existsSync(path)) throw new EvalUsageError(`${dir}: no ${SHARE_FILE}: not a finished shard of 'casm eval localization --num-shards'`);
  let file: ShareFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as ShareFile;
  } catch (e) {
    throw new EvalUsageError(`${path}: not a share: ${(e as Error).message}`);
  }
  if (file.format !== SHARE_FORMAT || file.version !== SHARE_VERSION || file.kind !== 'localization') {
    throw new EvalUsageError(`${path}: not a localisation share of this version (format ${file.format}, version ${file.version}, kind ${file.kind})`);
  }
  const pixelsPath = join(dir, EXAMPLES_FILE);
  const bytes = existsSync(pixelsPath) ? readFileSync(pixelsPath) : null;
  if (bytes === null || sha256(bytes) !== file.examplesSha256) throw new EvalUsageError(`${pixelsPath}: missing or not the one ${path} was written with`);
  const { tensors } = parseSafetensors(bytes, pixelsPath);
  const values = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new EvalUsageError(`${pixelsPath}: no tensor ${name}`);
    return t.data;
  };
  const { format: _f, version: _v, kind: _k, examplesSha256: _s, examples, ...share } = file;
  return {
    ...share,
    examples: examples.map(({ boxes, ...meta }, k) => ({
      ...meta,
      image: Uint8Array.from(values(`${k}/image`)),
      cells: boxes.map((box, j) => ({ mask: values(`${k}/mask/${j}`), box })),
    })),
  };
}

/**
 * The shares in `dirs`, in shard order, checked to be the shards 0..n-1 of one evaluation: the
 * same setup (checkpoint and its weights, data, protocol, methods, options) and the same images read.
 */
export function readShares(dirs: string[]): LocalizationShare[] {
  if (dirs.length === 0) throw new EvalUsageError('give the directories of the shards to merge');
  const shares = dirs.map(readShare);
  const [first] = shares as [LocalizationShare];
  const count = first.shard.count;
  const byIndex = new Map<number, string>();
  shares.forEach((s, i) => {
    if (s.shard.count !== count) throw new EvalUsageError(`${dirs[0]} is shard ${first.shard.index} of ${count}, ${dirs[i]} shard ${s.shard.index} of ${s.shard.count}`);
    const other = byIndex.get(s.shard.index);
    if (other !== undefined) throw new EvalUsageError(`shard ${s.shard.index} of ${count} given twice: ${other} and ${dirs[i]}`);
    byIndex.set(s.shard.index, dirs[i]!);
    for (const key of Object.keys(first.setup) as (keyof LocalizationShare['setup'])[]) {
      const [a, b] = [JSON.stringify(first.setup[key]), JSON.stringify(s.setup[key])];
      if (a !== b) throw new EvalUsageError(`${dirs[0]} and ${dirs[i]} are not shards of one evaluation: their ${key} differs (${clip(a)} against ${clip(b)})`);
    }
    if (engineText(s.provenance) !== engineText(first.provenance)) {
      throw new EvalUsageError(`${dirs[0]} and ${dirs[i]} were scored by different engines (${engineText(first.provenance)} against ${engineText(s.provenance)}): their figures would not be one run's`);
    }
    // Where and what, not the decoder's words: libvips words one corrupt JPEG differently from run to run.
    const seen = (p: LocalizationShare['problems']) => JSON.stringify([p.count, p.byKind, p.first.map((l) => l.split(': ').slice(0, 2).join(': '))]);
    if (s.read !== first.read || seen(s.problems) !== seen(first.problems)) {
      throw new EvalUsageError(`${dirs[0]} and ${dirs[i]} read different data (${first.read} images, ${first.problems.count} problems against ${s.read}, ${s.problems.count})`);
    }
  });
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !byIndex.has(i));
  if (missing.length > 0) throw new EvalUsageError(`shard${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${count} missing (given: ${dirs.join(', ')})`);
  return shares.sort((a, b) => a.shard.index - b.shard.index);
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const clip = (s: string) => (s.length > 120 ? `${s.slice(0, 117)}...` : s);
