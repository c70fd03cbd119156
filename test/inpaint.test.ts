/**
 * Telea inpainting (src/eval/inpaint.ts, OpenCV's wasm build) against OpenCV-Python's cv2.inpaint
 * (test/helpers/inpaint_oracle.py, opencv-python-headless of the same OpenCV version), on a real
 * image: a 4 x 3 mosaic of MNIST test digits (coloured, resized and JPEG-coded by
 * test/helpers/images.ts; no photograph ships with what the project installs), 224 x 168 so that
 * a width/height mix-up shows. The image is blanked to 0 under the mask, as CASM's masked-out image
 * is, before inpainting. The mask: a filled disc, a rectangle on the right border and scattered
 * pixels, with different non-zero values (any non-zero value means "fill").
 *
 * Why not byte for byte on the mosaic: OpenCV's Telea writes round(Ia/s + (Jx+Jy)/|J| + 0.5) per
 * channel. Where the known neighbourhood is flat (the digits' uniform background), that lands on an
 * exact .5 tie, and the last bit of the float sums, which the two builds (clang/wasm, gcc/x86-64)
 * need not share, decides it; a flipped pixel then feeds the pixels filled after it. So the mosaic
 * is held to a tight bound (max |diff| <= 2 levels, <= 5% of the masked pixels, mean <= 0.025
 * levels per masked byte; measured: radius 3 -> max 1 on 206 of 5987 masked pixels, radius 10 -> 0),
 * far below what any change of algorithm or parameter gives (radius 3 vs 10: thousands of pixels,
 * tens of levels), while on uniform noise (no flat areas, no ties) the two must agree byte for byte.
 * KEEP_ORACLE_DIR=1 keeps the exchange directory (its path is printed).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { DEFAULT_RADIUS, inpaintTelea, openCV } from '../src/eval/inpaint.js';
import { digitJpeg } from './helpers/images.js';
import { runPython } from './helpers/python.js';

const TILE = 56;
const COLS = 4;
const ROWS = 3;
const W = TILE * COLS; // 224
const H = TILE * ROWS; // 168
const RADII = [DEFAULT_RADIUS, 10];

/** The mosaic, as H x W x 3 bytes: digits 0..11 of MNIST's test set, each a JPEG decoded by sharp. */
async function mosaic(): Promise<Uint8Array> {
  const rgb = new Uint8Array(W * H * 3);
  for (let k = 0; k < COLS * ROWS; k++) {
    const { data, info } = await sharp(await digitJpeg(k, TILE, TILE, 85))
      .raw()
      .toBuffer({ resolveWithObject: true });
    assert.equal(info.channels, 3);
    const x0 = (k % COLS) * TILE;
    const y0 = Math.floor(k / COLS) * TILE;
    for (let y = 0; y < TILE; y++) rgb.set(data.subarray(y * TILE * 3, (y + 1) * TILE * 3), ((y0 + y) * W + x0) * 3);
  }
  return rgb;
}

/** Disc (value 255), rectangle touching the right border (1), about 2% scattered pixels (7). */
function makeMask(): Uint8Array {
  const mask = new Uint8Array(W * H);
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8) / 2 ** 24;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = y * W + x;
      if ((x - 70) ** 2 + (y - 80) ** 2 <= 32 ** 2) mask[i] = 255;
      else if (x >= 170 && y >= 30 && y < 70) mask[i] = 1;
      else if (rand() < 0.02) mask[i] = 7;
    }
  }
  return mask;
}

let dir = '';
let image: Uint8Array; // the mosaic, blanked to 0 under the mask
let noise: Uint8Array; // uniform noise, blanked to 0 under the mask
let mask: Uint8Array;
let masked = 0;
/** cv2.inpaint's output per case, e.g. 'mosaic_r3'. */
const reference = new Map<string, Uint8Array>();

before(async () => {
  const rgb = await mosaic();
  mask = makeMask();
  masked = mask.reduce((n, v) => n + (v ? 1 : 0), 0);
  image = rgb.map((v, i) => (mask[Math.floor(i / 3)] ? 0 : v));
  let s = 99;
  noise = rgb.map((_, i) => (mask[Math.floor(i / 3)] ? 0 : (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24));
  dir = mkdtempSync(join(tmpdir(), 'casm-inpaint-'));
  writeFileSync(join(dir, 'mosaic.u8'), image);
  writeFileSync(join(dir, 'noise.u8'), noise);
  writeFileSync(join(dir, 'mask.u8'), mask);
  const cases = ['mosaic', 'noise'].flatMap((name) => RADII.map((radius) => ({ image: `${name}.u8`, radius, out: `${name}_r${radius}.u8` })));
  writeFileSync(join(dir, 'job.json'), JSON.stringify({ width: W, height: H, mask: 'mask.u8', cases }));
  if (process.env.KEEP_ORACLE_DIR) console.log(`oracle dir ${dir}`);
  const out = JSON.parse(runPython('inpaint_oracle.py', [dir]).trim().split('\n').pop()!) as { opencv: string; cases: number };
  console.log(`oracle: OpenCV-Python ${out.opencv}, ${out.cases} cases`);
  assert.equal(out.cases, cases.length);
  for (const c of cases) reference.set(c.out.replace('.u8', ''), new Uint8Array(readFileSync(join(dir, c.out))));
});

after(() => {
  if (dir && !process.env.KEEP_ORACLE_DIR) rmSync(dir, { recursive: true, force: true });
});

/** Max |a - b| over bytes, mean |a - b| per byte under the mask, and the number of pixels where any channel differs. */
function compare(a: Uint8Array, b: Uint8Array): { maxDiff: number; meanMasked: number; pixels: number } {
  assert.equal(a.length, b.length);
  let maxDiff = 0;
  let sum = 0;
  let pixels = 0;
  for (let p = 0; p < a.length / 3; p++) {
    let differs = false;
    for (let c = 0; c < 3; c++) {
      const d = Math.abs(a[3 * p + c] - b[3 * p + c]);
      if (d > 0) differs = true;
      if (d > maxDiff) maxDiff = d;
      sum += d;
    }
    if (differs) pixels++;
  }
  return { maxDiff, meanMasked: sum / (3 * masked), pixels };
}

const ours = (img: Uint8Array, r: number) => (r === DEFAULT_RADIUS ? inpaintTelea(img, mask, W, H) : inpaintTelea(img, mask, W, H, r));

describe('Telea inpainting against OpenCV-Python', () => {
  test('the mask and image are non-trivial', () => {
    assert.ok(masked > 0.08 * W * H && masked < 0.3 * W * H, `mask covers ${masked} of ${W * H} pixels`);
    const values = new Set(image);
    assert.ok(values.size > 100, `the image has only ${values.size} distinct byte values`);
  });

  for (const r of RADII) {
    const label = `radius ${r}${r === DEFAULT_RADIUS ? ' (the default)' : ''}`;
    test(`${label}, MNIST mosaic: within ties of cv2.inpaint`, async () => {
      const { maxDiff, meanMasked, pixels } = compare(await ours(image, r), reference.get(`mosaic_r${r}`)!);
      console.log(
        `mosaic, radius ${r}: max |ours - OpenCV-Python| = ${maxDiff}, ${pixels} of ${masked} masked pixels differ, ` +
          `mean ${meanMasked.toFixed(4)} per masked byte`,
      );
      assert.ok(maxDiff <= 2, `max diff ${maxDiff} > 2`);
      assert.ok(pixels <= 0.05 * masked, `${pixels} pixels differ (> 5% of ${masked})`);
      assert.ok(meanMasked <= 0.025, `mean diff ${meanMasked} > 0.025`);
    });
    test(`${label}, uniform noise: equal to cv2.inpaint byte for byte`, async () => {
      const { maxDiff, pixels } = compare(await ours(noise, r), reference.get(`noise_r${r}`)!);
      console.log(`noise, radius ${r}: max |ours - OpenCV-Python| = ${maxDiff}, ${pixels} pixels differ`);
      assert.equal(maxDiff, 0);
    });
  }

  test('pixels outside the mask are unchanged, those under it are filled, inputs are not modified', async () => {
    const before = image.slice();
    const maskBefore = mask.slice();
    const out = await inpaintTelea(image, mask, W, H);
    assert.notEqual(out.buffer, image.buffer);
    assert.deepEqual(image, before);
    assert.deepEqual(mask, maskBefore);
    let nonZero = 0;
    for (let p = 0; p < W * H; p++) {
      if (mask[p]) {
        if (out[3 * p] || out[3 * p + 1] || out[3 * p + 2]) nonZero++;
      } else {
        for (let c = 0; c < 3; c++) assert.equal(out[3 * p + c], image[3 * p + c], `pixel ${p} outside the mask changed`);
      }
    }
    // The input is 0 under the mask; the background of the digits is green (G = 255), so nearly
    // every filled pixel must come out non-black.
    assert.ok(nonZero > 0.95 * masked, `${nonZero} of ${masked} masked pixels were filled with something other than black`);
  });

  test('the radius is a parameter: two radii give different results', () => {
    const [a, b] = RADII;
    const { maxDiff, pixels } = compare(reference.get(`mosaic_r${a}`)!, reference.get(`mosaic_r${b}`)!);
    console.log(`mosaic, OpenCV-Python, radius ${a} vs ${b}: max diff ${maxDiff}, ${pixels} pixels differ`);
    assert.ok(pixels > 0.2 * masked && maxDiff > 20, `radii ${a} and ${b} differ at only ${pixels} pixels, by at most ${maxDiff}`);
  });

  test('an empty mask returns the image unchanged', async () => {
    assert.deepEqual(await inpaintTelea(image, new Uint8Array(W * H), W, H), image);
  });
});

describe('inpaintTelea: bad input', () => {
  const rgb = new Uint8Array(4 * 3 * 3);
  const m = new Uint8Array(4 * 3);
  test('wrong lengths and sizes throw errors that name the problem', async () => {
    await assert.rejects(inpaintTelea(rgb.subarray(1), m, 4, 3), /rgb has 35 bytes, expected height\*width\*3 .* = 36/);
    await assert.rejects(inpaintTelea(rgb, m, 3, 4 + 1), /rgb has 36 bytes, expected .* = 45/);
    await assert.rejects(inpaintTelea(rgb, new Uint8Array(13), 4, 3), /mask has 13 bytes, expected height\*width .* = 12/);
    await assert.rejects(inpaintTelea(rgb, m, 0, 3), /width and height must be positive integers/);
    await assert.rejects(inpaintTelea(rgb, m, 4.5, 3), /width and height must be positive integers/);
    await assert.rejects(inpaintTelea(rgb, m, 4, 3, Number.NaN), /radius must be a finite number/);
    await assert.rejects(inpaintTelea(rgb, m, 4, 3, -1), /radius must be a finite number/);
  });
});

describe('inpaintTelea: resources', () => {
  /** The wasm allocator's next free address for a large block: it moves up when memory leaks. */
  async function heapProbe(): Promise<{ next: number; heap: number }> {
    const cv = (await openCV()) as unknown as { _malloc(n: number): number; _free(p: number): void };
    const p = cv._malloc(8 << 20);
    assert.ok(p > 0, 'malloc failed');
    cv._free(p);
    const c = await openCV();
    const one = new c.Mat(1, 1, c.CV_8UC1);
    const heap = one.data.buffer.byteLength; // the wasm memory
    one.delete();
    return { next: p, heap };
  }

  test('50 calls on 224 x 224 leave the wasm heap as it was (and the probe sees a single leaked Mat)', async () => {
    const w = 224;
    const h = 224;
    // The mosaic and its mask, their first 56 rows repeated below: 224 x 224.
    const rgb = new Uint8Array(w * h * 3);
    rgb.set(image);
    rgb.set(image.subarray(0, (h - H) * W * 3), H * W * 3);
    const m = new Uint8Array(w * h);
    m.set(mask);
    m.set(mask.subarray(0, (h - H) * W), H * W);
    await inpaintTelea(rgb, m, w, h); // warm-up: OpenCV's one-time allocations
    const start = await heapProbe();
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) await inpaintTelea(rgb, m, w, h);
    const ms = (performance.now() - t0) / 50;
    console.log(`224 x 224, radius ${DEFAULT_RADIUS}: ${ms.toFixed(2)} ms per call; wasm heap ${start.heap} bytes`);
    const end = await heapProbe();
    assert.equal(end.heap, start.heap, 'the wasm memory grew');
    assert.equal(end.next, start.next, `the allocator's free space moved by ${end.next - start.next} bytes: a Mat leaks`);
    // The probe is sensitive: one undeleted 224 x 224 x 3 Mat moves it.
    const cv = await openCV();
    const leaked = new cv.Mat(h, w, cv.CV_8UC3);
    const moved = await heapProbe();
    leaked.delete();
    assert.notEqual(moved.next, start.next);
    assert.equal((await heapProbe()).next, start.next);
  });
});
