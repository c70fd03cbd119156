/**
 * Image files -> pixels. Each file is decoded with sharp (JPEG, PNG, WebP, TIFF, ...), its
 * alpha dropped, resized so the short side fits and centre-cropped to the model's size (spec
 * section 4's preprocessing) and converted to the model's channels (3: sRGB, 1: gray); model input
 * is then preprocess.ts's. A file that cannot be decoded is reported and skipped.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import { UsageError } from '../util/usageError.js';

/** Files and folders (each contributes its files, sorted, hidden ones skipped) -> files; a missing path or no file at all is a UsageError. */
export function expandInputs(inputs: string[]): string[] {
  const files: string[] = [];
  for (const p of inputs) {
    if (!existsSync(p)) throw new UsageError(`${p}: no such file or directory`);
    if (statSync(p).isDirectory()) {
      const inside = readdirSync(p)
        .filter((f) => !f.startsWith('.'))
        .sort()
        .map((f) => join(p, f))
        .filter((f) => statSync(f).isFile());
      files.push(...inside);
    } else {
      files.push(p);
    }
  }
  if (files.length === 0) throw new UsageError(`no image files in ${inputs.join(', ')}`);
  return files;
}

export interface DecodedImages {
  /** N x height x width x channels, interleaved. */
  pixels: Uint8Array;
  /** Position in `files` of each decoded image. */
  indices: number[];
}

/** Decodes files, calling skip(file, reason) for each one that cannot be decoded; null if none could be. */
export async function loadImages(
  files: string[],
  [height, width, channels]: [number, number, number],
  skip: (file: string, reason: string) => void,
): Promise<DecodedImages | null> {
  if (channels !== 1 && channels !== 3) throw new Error(`images: the model takes ${channels} channels; only 1 (gray) or 3 (RGB) are supported`);
  const pixels: Uint8Array[] = [];
  const decoded: number[] = [];
  for (const [i, file] of files.entries()) {
    try {
      const data = await sharp(file)
        .removeAlpha()
        .resize(width, height, { fit: 'cover', position: 'centre' })
        .toColourspace(channels === 3 ? 'srgb' : 'b-w')
        .raw({ depth: 'uchar' })
        .toBuffer();
      if (data.length !== height * width * channels) throw new Error(`decoded to ${data.length} bytes, expected ${height * width * channels}`);
      pixels.push(data);
      decoded.push(i);
    } catch (e) {
      skip(file, (e as Error).message);
    }
  }
  if (decoded.length === 0) return null;
  const all = new Uint8Array(decoded.length * height * width * channels);
  pixels.forEach((p, i) => all.set(p, i * p.length));
  return { pixels: all, indices: decoded };
}

/** Output names for files: 'a/cat.png', 'b/cat.jpg' -> 'cat', 'cat-2'. */
export function uniqueStems(files: string[]): string[] {
  const taken = new Set<string>();
  return files.map((f) => {
    const stem = basename(f, extname(f));
    let name = stem;
    for (let k = 2; taken.has(name); k++) name = `${stem}-${k}`;
    taken.add(name);
    return name;
  });
}
