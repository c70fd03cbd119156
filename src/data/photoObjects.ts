/**
 * Photo objects: the project's own real-photo localisation benchmark. Photo cut-outs with an
 * alpha channel (Tux Paint's stamps) are pasted onto random crops of real background photos
 * (MATE's nature wallpapers, Tux Paint's photo templates); the object's exact mask is its alpha
 * channel, its box the mask's tight box. Sources come from Debian's packages
 * (scripts/fetch-photo-sources.sh); everything is seeded, so a command makes the same bytes again.
 *
 * Written in the layouts of spec section 5: an ImageFolder of training images (seen classes only)
 * and of validation images (every class), VOC XML boxes for the validation images, WebDataset
 * shards of both; plus the synset list, the seen / unseen split and the object masks.
 * No tfjs: sharp and node:fs only.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { Rng, seedFrom } from '../util/rng.js';
import { makeShards } from './dataCommand.js';
import type { PixelBox } from './samples.js';

/** A class: its name (the synset of the layouts) and the stamp folders its instances come from. */
export interface PhotoClass {
  name: string;
  folders: string[];
  seen: boolean;
}

/**
 * Ten classes to train on and three never trained on. Unseen classes are related to seen ones
 * (mammals to bovines, garments to tools and balls as man-made things), as on ImageNet.
 */
export const PHOTO_CLASSES: PhotoClass[] = [
  { name: 'ball', folders: ['sports'], seen: true },
  { name: 'bird', folders: ['animals/birds'], seen: true },
  { name: 'bovine', folders: ['animals/mammals/bovines'], seen: true },
  { name: 'fish', folders: ['animals/fish'], seen: true },
  { name: 'flower', folders: ['plants/flowers'], seen: true },
  { name: 'fruit', folders: ['food/fruit'], seen: true },
  { name: 'insect', folders: ['animals/insects'], seen: true },
  { name: 'sign', folders: ['town/roadsigns'], seen: true },
  { name: 'tool', folders: ['household/tools'], seen: true },
  { name: 'vegetable', folders: ['food/vegetables'], seen: true },
  { name: 'garment', folders: ['clothes', 'clothes/hats'], seen: false },
  {
    name: 'mammal',
    folders: ['animals/mammals', ...['apes', 'cats', 'deer', 'dogs', 'equines', 'rodents'].map((d) => `animals/mammals/${d}`)],
    seen: false,
  },
  { name: 'planet', folders: ['space/planets'], seen: false },
];

export interface PhotoObjectsOptions {
  /** scripts/fetch-photo-sources.sh's folder: stamps/ and backgrounds/. */
  sources: string;
  out: string;
  /** Training images per seen class. */
  trainPerClass?: number;
  /** Validation images per class (seen and unseen). */
  valPerClass?: number;
  width?: number;
  height?: number;
  /** The object's box covers this share of the image, uniformly drawn. */
  area?: [number, number];
  /** Share of the background photos kept for validation images (never seen in training). */
  valBackgrounds?: number;
  /**
   * A diagnostic: validation images on the training backgrounds instead (same objects, boxes,
   * crops and places as without it, only the photo behind differs), to tell a masker that has
   * learnt the training backgrounds from one that does not find the object.
   */
  valOnTrainBackgrounds?: boolean;
  /** Only these classes (names); default all. */
  classes?: string[];
  shardSize?: number;
  seed?: number;
  log?: (line: string) => void;
}

export interface PhotoImage {
  id: string;
  split: 'train' | 'val';
  class: string;
  instance: string;
  background: string;
  /** Tight box of the object's mask (alpha >= 128), [x0, y0, x1, y1], x1 / y1 exclusive. */
  box: PixelBox;
  /** Share of the image the mask covers. */
  maskArea: number;
}

export interface PhotoObjectsManifest {
  generator: string;
  options: Required<Omit<PhotoObjectsOptions, 'sources' | 'out' | 'log' | 'classes'>> & { classes: string[] };
  classes: { name: string; seen: boolean; instances: string[] }[];
  backgrounds: { train: string[]; val: string[] };
  images: PhotoImage[];
}

const DEFAULTS = {
  trainPerClass: 250,
  valPerClass: 40,
  width: 200,
  height: 150,
  area: [0.1, 0.45] as [number, number],
  valBackgrounds: 0.25,
  valOnTrainBackgrounds: false,
  shardSize: 500,
  seed: 0,
};

/** Mask pixels: alpha at or above half. */
const OPAQUE = 128;

/** A decoded cut-out, trimmed to its mask's box, at most STAMP_SIDE on the long side. */
interface Stamp {
  name: string;
  rgba: Buffer;
  w: number;
  h: number;
}
const STAMP_SIDE = 400;

/**
 * A cut-out: a PNG whose border is (almost) all transparent and whose mask covers a real share of
 * it. Some stamps are photos on an opaque grey square, not cut-outs: they are left out.
 */
async function loadStamp(path: string, name: string): Promise<Stamp | null> {
  const { data, info } = await sharp(path).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  const { width: w, height: h } = info;
  let border = 0;
  let borderOpaque = 0;
  let x0 = w;
  let y0 = h;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const a = data[(y * w + x) * 4 + 3]!;
      if (x === 0 || y === 0 || x === w - 1 || y === h - 1) {
        border++;
        if (a >= OPAQUE) borderOpaque++;
      }
      if (a >= OPAQUE) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  if (x1 < 0 || borderOpaque > 0.05 * border || x1 - x0 < 16 || y1 - y0 < 16) return null;
  const scale = Math.min(1, STAMP_SIDE / Math.max(x1 - x0 + 1, y1 - y0 + 1));
  const out = await sharp(data, { raw: { width: w, height: h, channels: 4 } })
    .extract({ left: x0, top: y0, width: x1 - x0 + 1, height: y1 - y0 + 1 })
    .resize({ width: Math.max(1, Math.round((x1 - x0 + 1) * scale)), height: Math.max(1, Math.round((y1 - y0 + 1) * scale)) })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { name, rgba: out.data, w: out.info.width, h: out.info.height };
}

const pngs = (dir: string) =>
  existsSync(dir)
    ? readdirSync(dir, { withFileTypes: true })
        .filter((f) => f.isFile() && f.name.toLowerCase().endsWith('.png'))
        .map((f) => f.name)
        .sort()
    : [];

/** One composite: a background crop, the cut-out pasted on it; returns JPEG bytes, mask and box. */
async function composite(
  stamp: Stamp,
  background: Buffer,
  rng: Rng,
  o: { width: number; height: number; area: [number, number] },
): Promise<{ jpeg: Buffer; mask: Buffer; box: PixelBox; maskArea: number }> {
  const { width: W, height: H } = o;
  // Background: a random crop of the photo with the output's aspect, 35-100% of the largest one.
  const meta = await sharp(background).metadata();
  const bw = meta.width!;
  const bh = meta.height!;
  const maxW = Math.min(bw, (bh * W) / H);
  const s = Math.sqrt(rng.uniform(0.35, 1));
  const cw = Math.max(1, Math.floor(maxW * s));
  const ch = Math.max(1, Math.floor((cw * H) / W));
  const left = rng.int(bw - cw + 1);
  const top = rng.int(bh - ch + 1);
  let bg = sharp(background).extract({ left, top, width: cw, height: ch }).resize(W, H, { fit: 'fill' });
  if (rng.next() < 0.5) bg = bg.flop();
  const pixels = await bg.removeAlpha().raw().toBuffer();

  // Object: box area uniformly in o.area, the stamp's aspect kept, shrunk to fit; placed inside.
  const target = rng.uniform(o.area[0], o.area[1]) * W * H;
  let ow = Math.sqrt((target * stamp.w) / stamp.h);
  let oh = (ow * stamp.h) / stamp.w;
  const fit = Math.min(1, W / ow, H / oh);
  ow = Math.max(8, Math.round(ow * fit));
  oh = Math.max(8, Math.round(oh * fit));
  let obj = sharp(stamp.rgba, { raw: { width: stamp.w, height: stamp.h, channels: 4 } }).resize(ow, oh, { fit: 'fill' });
  if (rng.next() < 0.5) obj = obj.flop();
  const rgba = await obj.raw().toBuffer();
  const ox = rng.int(W - ow + 1);
  const oy = rng.int(H - oh + 1);
  // A mild brightness change, so that an instance never looks exactly the same twice.
  const gain = rng.uniform(0.85, 1.15);

  const mask = Buffer.alloc(W * H);
  let x0 = W;
  let y0 = H;
  let x1 = -1;
  let y1 = -1;
  let covered = 0;
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const a = rgba[(y * ow + x) * 4 + 3]!;
      if (a === 0) continue;
      const p = (oy + y) * W + (ox + x);
      const t = a / 255;
      for (let c = 0; c < 3; c++) {
        const v = Math.min(255, rgba[(y * ow + x) * 4 + c]! * gain);
        pixels[p * 3 + c] = Math.round(t * v + (1 - t) * pixels[p * 3 + c]!);
      }
      mask[p] = a;
      if (a >= OPAQUE) {
        covered++;
        if (ox + x < x0) x0 = ox + x;
        if (ox + x > x1) x1 = ox + x;
        if (oy + y < y0) y0 = oy + y;
        if (oy + y > y1) y1 = oy + y;
      }
    }
  }
  const jpeg = await sharp(pixels, { raw: { width: W, height: H, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  return { jpeg, mask, box: [x0, y0, x1 + 1, y1 + 1], maskArea: covered / (W * H) };
}

/** VOC XML of one image with one object (pixels of the image; xmax / ymax exclusive). */
export function vocXml(id: string, synset: string, width: number, height: number, box: PixelBox): string {
  return [
    '<annotation>',
    `  <filename>${id}</filename>`,
    `  <size><width>${width}</width><height>${height}</height><depth>3</depth></size>`,
    '  <object>',
    `    <name>${synset}</name>`,
    `    <bndbox><xmin>${box[0]}</xmin><ymin>${box[1]}</ymin><xmax>${box[2]}</xmax><ymax>${box[3]}</ymax></bndbox>`,
    '  </object>',
    '</annotation>',
    '',
  ].join('\n');
}

/**
 * Writes the benchmark into `out` (which must not exist yet; written to `out.tmp-*` and renamed,
 * so an interrupted run leaves nothing half-made):
 *   classes.txt, seen.txt, unseen.txt        synset lists (all 13; the 10 trained on; the 3 never)
 *   train/<class>/<id>.jpg                   training images, seen classes
 *   val/<class>/<id>.jpg, val_xml/<id>.xml   validation images of every class and their boxes
 *   val_masks/<id>.png                       the object's exact mask (its alpha, 0..255)
 *   shards/train-*.tar, shards/val-*.tar     the same images as WebDataset shards
 *   manifest.json                            options, sources, and every image's class, instance,
 *                                            background and box
 */
export async function makePhotoObjects(opts: PhotoObjectsOptions): Promise<PhotoObjectsManifest> {
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & PhotoObjectsOptions;
  const log = opts.log ?? (() => {});
  const stampsDir = join(o.sources, 'stamps');
  const bgDir = join(o.sources, 'backgrounds');
  if (!existsSync(stampsDir) || !existsSync(bgDir)) {
    throw new Error(`${o.sources}: no stamps/ and backgrounds/ in it (run scripts/fetch-photo-sources.sh first)`);
  }
  if (existsSync(o.out)) throw new Error(`${o.out}: exists already; choose another folder or remove it`);
  if (!(o.area[0] > 0 && o.area[0] <= o.area[1] && o.area[1] <= 1)) throw new Error(`area ${o.area.join('-')}: need 0 < min <= max <= 1`);
  const classes = o.classes ? PHOTO_CLASSES.filter((c) => o.classes!.includes(c.name)) : PHOTO_CLASSES;
  const unknown = (o.classes ?? []).filter((n) => !PHOTO_CLASSES.some((c) => c.name === n));
  if (unknown.length > 0) throw new Error(`unknown classes ${unknown.join(', ')}: valid are ${PHOTO_CLASSES.map((c) => c.name).join(', ')}`);

  const stamps = new Map<string, Stamp[]>();
  for (const c of classes) {
    const list: Stamp[] = [];
    for (const folder of c.folders) {
      for (const f of pngs(join(stampsDir, folder))) {
        const s = await loadStamp(join(stampsDir, folder, f), `${folder}/${f}`);
        if (s) list.push(s);
      }
    }
    if (list.length === 0) throw new Error(`${stampsDir}: no cut-out for class ${c.name} in ${c.folders.join(', ')}`);
    stamps.set(c.name, list);
  }
  const bgNames = readdirSync(bgDir)
    .filter((f) => /\.(jpe?g|png)$/i.test(f))
    .sort();
  if (bgNames.length < 2) throw new Error(`${bgDir}: need at least 2 background photos, found ${bgNames.length}`);
  // Background split: a seeded shuffle, the first share for validation.
  const order = bgNames
    .map((n) => ({ n, k: seedFrom('background', o.seed, n) }))
    .sort((a, b) => a.k - b.k)
    .map((e) => e.n);
  const nVal = Math.max(1, Math.round(order.length * o.valBackgrounds));
  const backgrounds = { val: order.slice(0, nVal).sort(), train: order.slice(nVal).sort() };
  const bgBytes = new Map<string, Buffer>();
  for (const n of bgNames) bgBytes.set(n, await readFile(join(bgDir, n)));

  const tmp = `${o.out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const images: PhotoImage[] = [];
  try {
    for (const d of ['train', 'val', 'val_xml', 'val_masks']) mkdirSync(join(tmp, d), { recursive: true });
    const synsets = classes.map((c) => c.name).sort();
    writeFileSync(join(tmp, 'classes.txt'), synsets.join('\n') + '\n');
    writeFileSync(
      join(tmp, 'seen.txt'),
      classes
        .filter((c) => c.seen)
        .map((c) => c.name)
        .sort()
        .join('\n') + '\n',
    );
    writeFileSync(
      join(tmp, 'unseen.txt'),
      classes
        .filter((c) => !c.seen)
        .map((c) => c.name)
        .sort()
        .join('\n') + '\n',
    );
    const t0 = performance.now();
    for (const split of ['train', 'val'] as const) {
      const perClass = split === 'train' ? o.trainPerClass : o.valPerClass;
      const pool = o.valOnTrainBackgrounds ? backgrounds.train : backgrounds[split];
      for (const c of classes) {
        if (split === 'train' && !c.seen) continue;
        mkdirSync(join(tmp, split, c.name), { recursive: true });
        const list = stamps.get(c.name)!;
        for (let i = 0; i < perClass; i++) {
          // Each image draws from its own stream: one image's bytes do not depend on the others.
          const rng = new Rng(seedFrom('photo-objects', o.seed, split, c.name, i));
          const stamp = list[rng.int(list.length)]!;
          const bgName = pool[rng.int(pool.length)]!;
          const id = `${split}_${c.name}_${String(i).padStart(5, '0')}`;
          const r = await composite(stamp, bgBytes.get(bgName)!, rng, o);
          writeFileSync(join(tmp, split, c.name, `${id}.jpg`), r.jpeg);
          if (split === 'val') {
            writeFileSync(join(tmp, 'val_xml', `${id}.xml`), vocXml(id, c.name, o.width, o.height, r.box));
            await sharp(r.mask, { raw: { width: o.width, height: o.height, channels: 1 } })
              .png()
              .toFile(join(tmp, 'val_masks', `${id}.png`));
          }
          images.push({ id, split, class: c.name, instance: stamp.name, background: bgName, box: r.box, maskArea: r.maskArea });
        }
      }
      const n = images.filter((im) => im.split === split).length;
      log(`${split}: ${n} images (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    for (const split of ['train', 'val'] as const) {
      await makeShards({
        root: join(tmp, split),
        out: join(tmp, 'shards'),
        prefix: split,
        synsets: join(tmp, 'classes.txt'),
        shardSize: o.shardSize,
        seed: o.seed,
      });
    }
    const { log: _log, sources: _s, out: _o, classes: _c, ...rest } = o;
    const manifest: PhotoObjectsManifest = {
      generator: 'casm-ts data/make-photo-objects.mjs',
      options: { ...rest, classes: synsets },
      classes: classes.map((c) => ({ name: c.name, seen: c.seen, instances: stamps.get(c.name)!.map((s) => s.name) })),
      backgrounds,
      images,
    };
    writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
    renameSync(tmp, o.out);
    return manifest;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** A PNG grid of the first validation images of each class (a row each), boxes drawn in green. */
export async function previewPhotoObjects(dir: string, out: string, perRow = 6): Promise<void> {
  const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as PhotoObjectsManifest;
  const { width: W, height: H } = m.options;
  const tiles: sharp.OverlayOptions[] = [];
  m.classes.forEach((c, row) => {
    m.images
      .filter((im) => im.split === 'val' && im.class === c.name)
      .slice(0, perRow)
      .forEach((im, col) => {
        const [x0, y0, x1, y1] = im.box;
        const svg = `<svg width="${W}" height="${H}"><rect x="${x0 + 0.5}" y="${y0 + 0.5}" width="${x1 - x0 - 1}" height="${y1 - y0 - 1}" fill="none" stroke="#00ff00" stroke-width="2"/></svg>`;
        tiles.push({ input: join(dir, 'val', c.name, `${im.id}.jpg`), left: col * (W + 2), top: row * (H + 2) });
        tiles.push({ input: Buffer.from(svg), left: col * (W + 2), top: row * (H + 2) });
      });
  });
  await sharp({ create: { width: perRow * (W + 2), height: m.classes.length * (H + 2), channels: 3, background: '#ffffff' } })
    .composite(tiles)
    .png()
    .toFile(out);
}
