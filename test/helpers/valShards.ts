/**
 * Validation shards of digit JPEGs with VOC XML boxes (each box the whole image), for the
 * evaluation tests: images without a box file, one whose only box is of another class, and
 * optionally corrupt JPEGs (decoded as problems, never scored).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { webDatasetEntries, writeTar, type TarEntry } from '../../src/data/tar.js';
import { digitJpeg, digitLabel } from './images.js';

export interface ValShards {
  /** The shards' spec: one tar, or a brace range over several. */
  spec: string;
  synsets: string;
  boxes: string;
  /** The evaluation flags that read them: --data, --synsets, --boxes. */
  args: string[];
}

/**
 * `images` digits over `tars` shards (val-0.tar, ...); no box file for the last two images,
 * image 9's box of another class; a corrupt JPEG after each image listed in `corruptAfter`.
 */
export async function digitValShards(dir: string, o: { images?: number; tars?: number; corruptAfter?: number[] } = {}): Promise<ValShards> {
  const images = o.images ?? 12;
  const tars = o.tars ?? 1;
  mkdirSync(join(dir, 'boxes'), { recursive: true });
  const synset = (c: number) => `n0000000${c}`;
  writeFileSync(join(dir, 'synsets.txt'), Array.from({ length: 10 }, (_, c) => synset(c)).join('\n') + '\n');
  const entries: TarEntry[][] = Array.from({ length: tars }, () => []);
  for (let i = 0; i < images; i++) {
    const [w, h] = [48 + (i % 3) * 8, 40 + (i % 2) * 16];
    const key = `val_${String(i).padStart(3, '0')}`;
    const tar = entries[Math.floor((i * tars) / images)]!;
    tar.push(...webDatasetEntries(key, await digitJpeg(i, w, h), digitLabel(i)));
    if (o.corruptAfter?.includes(i))
      tar.push(...webDatasetEntries(`${key}_corrupt`, Buffer.from([0xff, 0xd8, 0xff, 0xe0, ...new Array<number>(300).fill(0)]), digitLabel(i)));
    if (i >= images - 2) continue; // no box file: counted, not scored
    const name = i === 9 ? synset((digitLabel(i) + 1) % 10) : synset(digitLabel(i)); // image 9: a box of another class
    writeFileSync(
      join(dir, 'boxes', `${key}.xml`),
      `<annotation><filename>${key}</filename><size><width>${w}</width><height>${h}</height></size>` +
        `<object><name>${name}</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>${w}</xmax><ymax>${h}</ymax></bndbox></object></annotation>`,
    );
  }
  entries.forEach((e, t) => writeTar(join(dir, `val-${t}.tar`), e));
  const spec = join(dir, tars === 1 ? 'val-0.tar' : `val-{0..${tars - 1}}.tar`);
  const [synsets, boxes] = [join(dir, 'synsets.txt'), join(dir, 'boxes')];
  return { spec, synsets, boxes, args: ['--data', spec, '--synsets', synsets, '--boxes', boxes] };
}
