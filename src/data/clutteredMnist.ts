/**
 * "Cluttered MNIST", the built-in real data set: one MNIST digit, bilinearly resized to a random
 * square size in [minDigit, maxDigit] px, pasted at a random position on a black size x size
 * canvas, plus `fragments` clutter pieces (random 8..12 px square crops, at original scale, of
 * OTHER random MNIST digits) pasted where they do not touch the digit's box. Layers are
 * composited with max(). The label is the digit's class; the box is the digit's tight bounding
 * box.
 *
 * Conventions:
 *  - boxes are [x0, y0, x1, y1] in canvas pixels, x1/y1 EXCLUSIVE (slice style): the digit
 *    covers columns x0..x1-1 and rows y0..y1-1; width = x1 - x0.
 *  - After resizing, digit pixels below DIGIT_THRESHOLD (16/255) are set to 0, so the box is
 *    exactly the support of the digit layer: with fragments = 0 every nonzero canvas pixel lies
 *    inside the box. Clutter fragments never intersect the box, so inside the box the canvas
 *    equals the digit layer.
 *  - Deterministic: sample i uses its own Rng seeded from hash(seed, i), drawing the digit first
 *    and the fragments after, so the same seed gives identical bytes, and changing only
 *    `fragments` keeps every digit (choice, size, position, box) the same.
 *  - train split draws digits and fragments from MNIST train, test split from MNIST t10k.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../util/atomicWrite.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../util/rng.js';
import { loadMnist, MNIST_SIDE, type MnistSplit } from './mnist.js';

export interface ClutteredOptions {
  /** Canvas side in px (default 64). */
  size: number;
  /** Number of samples. */
  count: number;
  split: MnistSplit;
  seed: number;
  /** Clutter fragments per sample (default 4). */
  fragments: number;
  /** Digit side range in px, inclusive (default 20..40). */
  minDigit: number;
  maxDigit: number;
  /** Keep only these digit classes (labels stay the original digits 0..9). */
  classes?: number[];
}

export interface ClutteredSet {
  size: number;
  n: number;
  /** n*size*size grayscale bytes, row-major. */
  images: Uint8Array;
  labels: Int32Array;
  /** n*4: [x0, y0, x1, y1] per sample, x1/y1 exclusive. */
  boxes: Int32Array;
  options: ClutteredOptions;
}

export const CLUTTERED_DEFAULTS: Omit<ClutteredOptions, 'count'> = {
  size: 64,
  split: 'train',
  seed: 0,
  fragments: 4,
  minDigit: 20,
  maxDigit: 40,
};

/** Digit pixels below this (after resizing) are zeroed; defines the tight box. */
export const DIGIT_THRESHOLD = 16;
export const FRAGMENT_MIN = 8;
export const FRAGMENT_MAX = 12;
/** Bump when generation or the cache layout changes: old cache files then miss. */
export const CLUTTERED_FORMAT_VERSION = 1;

export type ClutteredInput = Partial<ClutteredOptions> & { count: number };

/** Fills defaults, validates, and canonicalises (classes sorted, deduplicated). */
export function clutteredOptions(input: ClutteredInput): ClutteredOptions {
  const o: ClutteredOptions = { ...CLUTTERED_DEFAULTS, ...input };
  const int = (name: string, v: number, lo: number, hi = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new Error(`cluttered MNIST: option ${name}=${v} must be an integer in [${lo}, ${hi}]`);
    }
  };
  int('size', o.size, 8, 4096);
  int('count', o.count, 0);
  int('seed', o.seed, -0x80000000, 0xffffffff);
  int('fragments', o.fragments, 0, 1000);
  int('minDigit', o.minDigit, 4, o.size);
  int('maxDigit', o.maxDigit, o.minDigit, o.size);
  if (o.split !== 'train' && o.split !== 'test') throw new Error(`cluttered MNIST: unknown split '${String(o.split)}'`);
  const out: ClutteredOptions = {
    size: o.size,
    count: o.count,
    split: o.split,
    seed: o.seed >>> 0,
    fragments: o.fragments,
    minDigit: o.minDigit,
    maxDigit: o.maxDigit,
  };
  if (o.classes !== undefined) {
    const cls = [...new Set(o.classes)].sort((a, b) => a - b);
    if (cls.length === 0) throw new Error('cluttered MNIST: classes is empty');
    for (const c of cls) int('classes[]', c, 0, 9);
    out.classes = cls;
  }
  return out;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Seed of sample i's own Rng. */
function sampleSeed(seed: number, i: number): number {
  return fmix32((Math.imul(seed >>> 0, 0x9e3779b1) ^ fmix32(i + 0x632be5ab)) >>> 0);
}

/**
 * Bilinear resize of a square single-channel byte image, half-pixel centres (like
 * tf.image.resizeBilinear with halfPixelCenters, or PIL without antialiasing), edge-clamped,
 * rounded to the nearest byte. Deterministic (plain float64 arithmetic).
 */
export function resizeBilinear(src: Uint8Array, inSide: number, outSide: number): Uint8Array {
  const out = new Uint8Array(outSide * outSide);
  const i0 = new Int32Array(outSide);
  const i1 = new Int32Array(outSide);
  const w = new Float64Array(outSide);
  const ratio = inSide / outSide;
  for (let o = 0; o < outSide; o++) {
    let s = (o + 0.5) * ratio - 0.5;
    if (s < 0) s = 0;
    if (s > inSide - 1) s = inSide - 1;
    const f = Math.floor(s);
    i0[o] = f;
    i1[o] = Math.min(f + 1, inSide - 1);
    w[o] = s - f;
  }
  for (let oy = 0; oy < outSide; oy++) {
    const r0 = i0[oy]! * inSide;
    const r1 = i1[oy]! * inSide;
    const wy = w[oy]!;
    for (let ox = 0; ox < outSide; ox++) {
      const c0 = i0[ox]!;
      const c1 = i1[ox]!;
      const wx = w[ox]!;
      const top = src[r0 + c0]! * (1 - wx) + src[r0 + c1]! * wx;
      const bot = src[r1 + c0]! * (1 - wx) + src[r1 + c1]! * wx;
      out[oy * outSide + ox] = Math.round(top * (1 - wy) + bot * wy);
    }
  }
  return out;
}

/** Generates the data set in memory. ~20k 64x64 samples take well under a second or two. */
export function generateCluttered(input: ClutteredInput): ClutteredSet {
  const opts = clutteredOptions(input);
  const { size, count, fragments, minDigit, maxDigit } = opts;
  const mnist = loadMnist(opts.split);
  const S = MNIST_SIDE;
  const P = S * S;

  // Pool of MNIST indices the digit is drawn from.
  let pool: Int32Array;
  if (opts.classes) {
    const keep = new Set(opts.classes);
    const idx: number[] = [];
    for (let i = 0; i < mnist.n; i++) if (keep.has(mnist.labels[i]!)) idx.push(i);
    pool = Int32Array.from(idx);
  } else {
    pool = new Int32Array(mnist.n);
    for (let i = 0; i < mnist.n; i++) pool[i] = i;
  }
  if (pool.length === 0 && count > 0) throw new Error('cluttered MNIST: no MNIST digits of the requested classes');

  const images = new Uint8Array(count * size * size);
  const labels = new Int32Array(count);
  const boxes = new Int32Array(count * 4);
  const fragMax = Math.min(FRAGMENT_MAX, size, S);
  const fragMin = Math.min(FRAGMENT_MIN, fragMax);
  const digitBuf = new Uint8Array(P);

  for (let i = 0; i < count; i++) {
    const rng = new Rng(sampleSeed(opts.seed, i));
    const canvas = images.subarray(i * size * size, (i + 1) * size * size);

    // --- the digit ---
    const di = pool[rng.int(pool.length)]!;
    labels[i] = mnist.labels[di]!;
    const side = minDigit + rng.int(maxDigit - minDigit + 1);
    const px = rng.int(size - side + 1);
    const py = rng.int(size - side + 1);
    digitBuf.set(mnist.images.subarray(di * P, (di + 1) * P));
    const dig = resizeBilinear(digitBuf, S, side);
    let x0 = size;
    let y0 = size;
    let x1 = 0;
    let y1 = 0;
    for (let y = 0; y < side; y++) {
      const row = (py + y) * size + px;
      for (let x = 0; x < side; x++) {
        const v = dig[y * side + x]!;
        if (v < DIGIT_THRESHOLD) continue;
        canvas[row + x] = v;
        if (px + x < x0) x0 = px + x;
        if (px + x + 1 > x1) x1 = px + x + 1;
        if (py + y < y0) y0 = py + y;
        if (py + y + 1 > y1) y1 = py + y + 1;
      }
    }
    if (x1 <= x0 || y1 <= y0) {
      // An (impossible for MNIST) empty digit: fall back to the paste rectangle.
      x0 = px;
      y0 = py;
      x1 = px + side;
      y1 = py + side;
    }
    boxes.set([x0, y0, x1, y1], i * 4);

    // --- clutter fragments ---
    for (let f = 0; f < fragments; f++) {
      let si = rng.int(mnist.n);
      if (si === di) si = (si + 1) % mnist.n;
      const fs = fragMin + rng.int(fragMax - fragMin + 1);
      // Crop with some ink: up to 8 tries, keep the inkiest.
      const src = mnist.images.subarray(si * P, (si + 1) * P);
      let bestCx = 0;
      let bestCy = 0;
      let bestInk = -1;
      const want = Math.max(8, (fs * fs) >> 3);
      for (let t = 0; t < 8 && bestInk < want; t++) {
        const cx = rng.int(S - fs + 1);
        const cy = rng.int(S - fs + 1);
        let ink = 0;
        for (let y = 0; y < fs; y++) {
          const r = (cy + y) * S + cx;
          for (let x = 0; x < fs; x++) if (src[r + x]! >= 32) ink++;
        }
        if (ink > bestInk) {
          bestInk = ink;
          bestCx = cx;
          bestCy = cy;
        }
      }
      // Position not intersecting the digit box: rejection sampling, then exhaustive choice.
      const span = size - fs + 1;
      const clear = (qx: number, qy: number) => qx + fs <= x0 || qx >= x1 || qy + fs <= y0 || qy >= y1;
      let qx = -1;
      let qy = -1;
      for (let t = 0; t < 24; t++) {
        const ax = rng.int(span);
        const ay = rng.int(span);
        if (clear(ax, ay)) {
          qx = ax;
          qy = ay;
          break;
        }
      }
      if (qx < 0) {
        const ok: number[] = [];
        for (let ay = 0; ay < span; ay++) for (let ax = 0; ax < span; ax++) if (clear(ax, ay)) ok.push(ay * span + ax);
        if (ok.length === 0) continue; // no room for this fragment: skip it
        const k = ok[rng.int(ok.length)]!;
        qx = k % span;
        qy = Math.floor(k / span);
      }
      for (let y = 0; y < fs; y++) {
        const r = (bestCy + y) * S + bestCx;
        const o = (qy + y) * size + qx;
        for (let x = 0; x < fs; x++) {
          const v = src[r + x]!;
          if (v > canvas[o + x]!) canvas[o + x] = v;
        }
      }
    }
  }
  return { size, n: count, images, labels, boxes, options: opts };
}

// ---------------------------------------------------------------- cache

const MAGIC = 'CMNS';

/** Repository root: the nearest ancestor of this file holding a package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** Default cache directory: $CASM_DATA_CACHE or <repo>/data/cache. */
export function defaultCacheDir(): string {
  return process.env.CASM_DATA_CACHE ?? join(repoRoot(), 'data', 'cache');
}

/** The cache file for these options: <dir>/cluttered-<split>-<size>px-n<count>-<hash12>.bin */
export function clutteredCachePath(input: ClutteredInput, cacheDir = defaultCacheDir()): string {
  const o = clutteredOptions(input);
  const hash = createHash('sha256')
    .update(JSON.stringify({ v: CLUTTERED_FORMAT_VERSION, o: canonicalJson(o) }))
    .digest('hex')
    .slice(0, 12);
  return join(cacheDir, `cluttered-${o.split}-${o.size}px-n${o.count}-${hash}.bin`);
}

function canonicalJson(o: ClutteredOptions): string {
  const keys = Object.keys(o).sort() as (keyof ClutteredOptions)[];
  return JSON.stringify(keys.map((k) => [k, o[k]]));
}

function int32le(a: Int32Array): Buffer {
  const b = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) b.writeInt32LE(a[i]!, i * 4);
  return b;
}

function fromInt32le(b: Buffer): Int32Array {
  const a = new Int32Array(b.length / 4);
  for (let i = 0; i < a.length; i++) a[i] = b.readInt32LE(i * 4);
  return a;
}

function payloadDigest(images: Uint8Array, labels: Buffer, boxes: Buffer): string {
  return createHash('sha256').update(images).update(labels).update(boxes).digest('hex');
}

/**
 * Layout: "CMNS" | uint32le format version | uint32le header length | header JSON
 * {options, n, size, sha256} | images (n*size*size bytes) | labels (n int32le) | boxes (4n int32le).
 */
export function serializeCluttered(set: ClutteredSet): Buffer {
  const labels = int32le(set.labels);
  const boxes = int32le(set.boxes);
  const header = Buffer.from(JSON.stringify({ options: set.options, n: set.n, size: set.size, sha256: payloadDigest(set.images, labels, boxes) }), 'utf8');
  const pre = Buffer.alloc(12);
  pre.write(MAGIC, 0, 'ascii');
  pre.writeUInt32LE(CLUTTERED_FORMAT_VERSION, 4);
  pre.writeUInt32LE(header.length, 8);
  return Buffer.concat([pre, header, Buffer.from(set.images.buffer, set.images.byteOffset, set.images.byteLength), labels, boxes]);
}

/**
 * Parses and validates a cache file's bytes. Throws (naming `name`) on any inconsistency; if
 * `expect` is given the stored options must equal it.
 */
export function deserializeCluttered(buf: Buffer, name: string, expect?: ClutteredOptions): ClutteredSet {
  const bad = (why: string): never => {
    throw new Error(`${name}: invalid cluttered MNIST cache (${why})`);
  };
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== MAGIC) bad('bad magic');
  const version = buf.readUInt32LE(4);
  if (version !== CLUTTERED_FORMAT_VERSION) bad(`format version ${version}, expected ${CLUTTERED_FORMAT_VERSION}`);
  const hlen = buf.readUInt32LE(8);
  if (12 + hlen > buf.length) bad('truncated header');
  let header: { options: ClutteredOptions; n: number; size: number; sha256: string };
  try {
    header = JSON.parse(buf.toString('utf8', 12, 12 + hlen));
  } catch {
    return bad('header is not JSON');
  }
  const { n, size, options } = header;
  if (!Number.isInteger(n) || !Number.isInteger(size) || n < 0 || size < 1) bad('bad n/size');
  if (expect && canonicalJson(options) !== canonicalJson(expect)) bad('options differ from the requested ones');
  const imgBytes = n * size * size;
  const start = 12 + hlen;
  if (buf.length !== start + imgBytes + n * 4 + n * 16) {
    bad(`size ${buf.length} bytes, expected ${start + imgBytes + n * 20}`);
  }
  const images = new Uint8Array(imgBytes);
  images.set(buf.subarray(start, start + imgBytes));
  const labBuf = buf.subarray(start + imgBytes, start + imgBytes + n * 4);
  const boxBuf = buf.subarray(start + imgBytes + n * 4);
  if (payloadDigest(images, labBuf, boxBuf) !== header.sha256) bad('checksum mismatch');
  const labels = fromInt32le(labBuf);
  const boxes = fromInt32le(boxBuf);
  for (let i = 0; i < n; i++) {
    if (labels[i]! < 0 || labels[i]! > 9) bad(`label ${labels[i]} at ${i}`);
    const [x0, y0, x1, y1] = [boxes[4 * i]!, boxes[4 * i + 1]!, boxes[4 * i + 2]!, boxes[4 * i + 3]!];
    if (!(0 <= x0 && x0 < x1 && x1 <= size && 0 <= y0 && y0 < y1 && y1 <= size)) bad(`box ${i} out of the canvas`);
  }
  return { size, n, images, labels, boxes, options };
}

/** Writes the set to `path` atomically (temp file in the same directory, then rename). */
export function saveCluttered(set: ClutteredSet, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileAtomic(path, serializeCluttered(set));
}

/**
 * The data set for these options, generated on first use and cached under `cacheDir`
 * (default data/cache). A cache file that fails validation is regenerated with a warning.
 */
export async function loadCluttered(input: ClutteredInput, cacheDir = defaultCacheDir()): Promise<ClutteredSet> {
  const opts = clutteredOptions(input);
  const path = clutteredCachePath(opts, cacheDir);
  let buf: Buffer | undefined;
  try {
    buf = readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (buf) {
    try {
      return deserializeCluttered(buf, path, opts);
    } catch (e) {
      console.warn(`warning: ${(e as Error).message}; regenerating`);
    }
  }
  const set = generateCluttered(opts);
  saveCluttered(set, path);
  return set;
}
