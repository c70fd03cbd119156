/**
 * ImageFolder layout: `root/<synset>/<name>.JPEG`. The class index of a synset is its position
 * in the sorted synset list (code-point order, as Python's sorted() and torchvision's
 * ImageFolder): the list comes from a file (one synset per line, first token; e.g.
 * LOC_synset_mapping.txt) or from the folder names under root.
 */
import { readdirSync, readFileSync, realpathSync, statSync, type Dirent } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Problems, sampleStream, type Sample, type SampleStream } from './samples.js';
import { IMAGE_FILE_EXTS } from './spec.js';

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

/** What a directory entry is, links followed; null for anything else, and for a dangling link (reported). */
function entryKind(path: string, d: Dirent, problems: Problems): 'dir' | 'file' | null {
  if (!d.isSymbolicLink()) return d.isDirectory() ? 'dir' : d.isFile() ? 'file' : null;
  try {
    const st = statSync(path);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : null;
  } catch (err) {
    problems.add('unreadable', path, 0, `broken symbolic link (${(err as Error).message})`);
    return null;
  }
}

/**
 * Image files under a class folder, relative to it: subfolders too, symbolic links followed, in
 * torchvision's order (folders sorted by path, files by name within each: sorted(os.walk(...,
 * followlinks=True))). A link back to a folder being walked is reported, not followed, where
 * os.walk would loop forever.
 */
function imageFiles(classDir: string, problems: Problems): string[] {
  const byFolder: [string, string[]][] = [];
  const walk = (rel: string, ancestors: ReadonlySet<string>) => {
    const abs = join(classDir, rel);
    const real = realpathSync(abs);
    if (ancestors.has(real)) {
      problems.add('symlink-cycle', abs, 0, `links back to ${real}, a folder it is inside of: not followed`);
      return;
    }
    const inside = new Set(ancestors).add(real);
    const files: string[] = [];
    for (const d of readdirSync(abs, { withFileTypes: true })) {
      const kind = entryKind(join(abs, d.name), d, problems);
      if (kind === 'dir' && !d.name.startsWith('.')) walk(join(rel, d.name), inside);
      else if (kind === 'file' && IMAGE_FILE_EXTS.some((e) => d.name.toLowerCase().endsWith(e))) files.push(join(rel, d.name));
    }
    byFolder.push([abs, files.sort(byCodePoint)]);
  };
  walk('', new Set());
  return byFolder.sort((a, b) => byCodePoint(a[0], b[0])).flatMap(([, files]) => files);
}

/**
 * Lists root/<synset>/** image files, sorted by synset, then as torchvision walks a class folder;
 * class folders may be symbolic links (a common way to make ImageNet subsets). `synsets` (a list
 * or a list file) fixes the classes; folders outside it are skipped and reported ('unknown-synset').
 */
export function listImageFolder(root: string, synsets?: string[] | string, problems = new Problems()): ImageFolderListing {
  const dirs = readdirSync(root, { withFileTypes: true })
    .filter((d) => !d.name.startsWith('.') && entryKind(join(root, d.name), d, problems) === 'dir')
    .map((d) => d.name)
    .sort(byCodePoint);
  const list = synsets === undefined ? dirs : typeof synsets === 'string' ? readSynsetList(synsets) : [...new Set(synsets)].sort(byCodePoint);
  const index = new Map(list.map((s, i) => [s, i]));
  const entries: ImageFolderEntry[] = [];
  for (const dir of dirs) {
    const label = index.get(dir);
    if (label === undefined) {
      problems.add('unknown-synset', join(root, dir), 0, `folder ${JSON.stringify(dir)} is not in the synset list: skipped`);
      continue;
    }
    for (const f of imageFiles(join(root, dir), problems)) {
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
export function readImageFolder(
  root: string,
  synsets?: string[] | string,
  opts: ImageFolderOptions = {},
): SampleStream & {
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
