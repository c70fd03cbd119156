/**
 * ImageFolder layout: `root/<synset>/<name>.JPEG`. The class index of a synset is its position
 * in the sorted synset list (code-point order, as Python's sorted() and torchvision's
 * ImageFolder): the list comes from a file (one synset per line, first token; e.g.
 * LOC_synset_mapping.txt) or from the folder names under root.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Problems, sampleStream, type Sample, type SampleStream } from './samples.js';

/** torchvision's IMG_EXTENSIONS that sharp decodes. */
export const IMAGE_FILE_EXTS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff'];

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Synsets from a list file: first whitespace-separated token of every non-empty line, sorted. */
export function readSynsetList(path: string): string[] {
  const synsets = readFileSync(path, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((s) => s !== '' && !s.startsWith('#'));
  const set = new Set(synsets);
  if (set.size !== synsets.length) throw new Error(`${path}: repeated synsets in the list`);
  return [...set].sort(byCodePoint);
}

export interface ImageFolderEntry {
  path: string;
  key: string;
  synset: string;
  label: number;
}

export interface ImageFolderListing {
  synsets: string[];
  entries: ImageFolderEntry[];
}

/**
 * Lists root/<synset>/* image files, sorted by synset then file name. `synsets` (a list or a
 * list file) fixes the classes; folders outside it are skipped and reported ('unknown-synset').
 */
export function listImageFolder(root: string, synsets?: string[] | string, problems = new Problems()): ImageFolderListing {
  const dirs = readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !d.name.startsWith('.'))
    .map((d) => d.name)
    .sort(byCodePoint);
  const list =
    synsets === undefined ? dirs : typeof synsets === 'string' ? readSynsetList(synsets) : [...new Set(synsets)].sort(byCodePoint);
  const index = new Map(list.map((s, i) => [s, i]));
  const entries: ImageFolderEntry[] = [];
  for (const dir of dirs) {
    const label = index.get(dir);
    if (label === undefined) {
      problems.add('unknown-synset', join(root, dir), 0, `folder ${JSON.stringify(dir)} is not in the synset list: skipped`);
      continue;
    }
    const files = readdirSync(join(root, dir), { withFileTypes: true })
      .filter((f) => f.isFile() && IMAGE_FILE_EXTS.some((e) => f.name.toLowerCase().endsWith(e)))
      .map((f) => f.name)
      .sort(byCodePoint);
    for (const f of files) {
      const dot = f.lastIndexOf('.');
      entries.push({ path: join(root, dir, f), key: `${dir}/${f.slice(0, dot)}`, synset: dir, label });
    }
  }
  return { synsets: list, entries };
}

export interface ImageFolderOptions {
  problems?: Problems;
  /** Read only these entries (e.g. a worker's share of the listing). */
  entries?: ImageFolderEntry[];
}

/**
 * ImageFolder -> samples (files read lazily, one at a time). An unreadable or empty file is
 * skipped and reported ('unreadable').
 */
export function readImageFolder(root: string, synsets?: string[] | string, opts: ImageFolderOptions = {}): SampleStream & {
  listing: () => ImageFolderListing;
} {
  const problems = opts.problems ?? new Problems();
  let listing: ImageFolderListing | null = null;
  const getListing = () => (listing ??= opts.entries ? { synsets: [], entries: opts.entries } : listImageFolder(root, synsets, problems));
  const stream = sampleStream(problems, async function* () {
    for (const e of getListing().entries) {
      let image: Uint8Array;
      try {
        image = await readFile(e.path);
      } catch (err) {
        problems.add('unreadable', e.path, 0, (err as Error).message);
        continue;
      }
      if (image.length === 0) {
        problems.add('unreadable', e.path, 0, 'empty file');
        continue;
      }
      const s: Sample = { key: e.key, image, label: e.label, synset: e.synset, source: { file: e.path, offset: 0 } };
      yield s;
    }
  });
  return Object.assign(stream, { listing: getListing });
}
