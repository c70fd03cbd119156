/** Pictures of maps (percentile, colour map, tiling) and image decoding for `casm explain`. */
import * as tf from '@tensorflow/tfjs';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { colorize, gradientMap, overlay, percentile, pixelsToRgb, SEPARATOR, tile, unitScale } from '../src/explain/display.js';
import { loadImages, uniqueStems } from '../src/explain/images.js';
import { useTestBackend } from './helpers/backend.js';

const tmp = mkdtempSync(join(tmpdir(), 'casm-explain-img-'));
before(async () => {
  await useTestBackend();
});
after(() => rmSync(tmp, { recursive: true, force: true }));

test("percentile is numpy's linear interpolation", () => {
  // 0..99: position 0.99 * 99 = 98.01 -> 98.01; 50th of [1, 2, 3, 10] -> 2.5; one value -> itself.
  const cases: [number[], number, number][] = [
    [Array.from({ length: 100 }, (_, i) => 99 - i), 99, 98.01],
    [[10, 1, 3, 2], 50, 2.5],
    [[7], 99, 7],
  ];
  for (const [values, q, expected] of cases) {
    const p = tf.tidy(() => percentile(tf.tensor2d([values]), q).dataSync()[0]);
    assert.ok(Math.abs(p - expected) < 1e-4, `percentile ${q} of [${values.slice(0, 4)}...] = ${p}, expected ${expected}`);
  }
});

test('gradientMap: sum |.| over channels, p99 cap, constant maps become zeros; unitScale: min-max', () => {
  const [m, zero, scaled] = tf.tidy(() => {
    // One image, 10x10 pixels, 2 channels: |c0| + |c1| = pixel index; the top value is above p99.
    const idx = tf.range(0, 100).reshape([1, 10, 10, 1]);
    const raw = tf.concat([tf.mul(idx, -0.25), tf.mul(idx, 0.75)], 3) as tf.Tensor4D;
    return [gradientMap(raw).dataSync(), gradientMap(tf.zeros([1, 4, 4, 3])).dataSync(), unitScale(tf.tensor4d([2, 4, 6, 10], [1, 2, 2, 1])).dataSync()];
  });
  assert.ok(Math.abs(m[50] - 50 / 98.01) < 1e-6);
  assert.equal(m[99], 1);
  assert.equal(m[0], 0);
  assert.deepEqual(Array.from(zero), new Array(16).fill(0));
  assert.deepEqual(Array.from(scaled), [0, 0.25, 0.5, 1]);
});

test("jet is matplotlib's: ends dark blue and dark red, green in the middle; gray is linear", () => {
  assert.deepEqual(Array.from(colorize([0, 0.5, 1], 'jet')), [0, 0, 128, 125, 255, 122, 128, 0, 0]);
  assert.deepEqual(Array.from(colorize([0, 0.5, 1], 'gray')), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(Array.from(overlay(Uint8Array.from([0, 100, 255]), Uint8Array.from([255, 100, 0]), 0.5)), [128, 100, 128]);
});

test('tile: cells framed by separators, at the documented size', () => {
  const red = new Uint8Array(3 * 2 * 3).fill(0).map((_, i) => (i % 3 === 0 ? 255 : 0));
  const { rgb, width, height } = tile([[red, red], [red]], 3, 2);
  assert.equal(width, 2 * 3 + 3 * SEPARATOR);
  assert.equal(height, 2 * 2 + 3 * SEPARATOR);
  const px = (x: number, y: number) => Array.from(rgb.subarray((y * width + x) * 3, (y * width + x) * 3 + 3));
  assert.deepEqual(px(SEPARATOR, SEPARATOR), [255, 0, 0]);
  assert.deepEqual(px(0, 0), [128, 128, 128]);
  assert.deepEqual(px(SEPARATOR + 3 + SEPARATOR, 2 * SEPARATOR + 2), [128, 128, 128], 'the missing cell stays gray');
});

test('loadImages: cover-resize + centre crop to pixels; undecodable files reported and skipped', async () => {
  // 40x20: left half red, right half blue. Cover to 16x16 scales to 32x16 and keeps columns 8..23,
  // so the left half of the crop is red and the right half blue.
  const wide = Buffer.alloc(40 * 20 * 3);
  for (let p = 0; p < 40 * 20; p++) wide.set(p % 40 < 20 ? [255, 0, 0] : [0, 0, 255], p * 3);
  const files = [join(tmp, 'wide.png'), join(tmp, 'bad.png'), join(tmp, 'gray.png'), join(tmp, 'photo.jpg')];
  await sharp(wide, { raw: { width: 40, height: 20, channels: 3 } })
    .png()
    .toFile(files[0]);
  writeFileSync(files[1], 'not an image');
  await sharp(Buffer.alloc(30 * 30, 255), { raw: { width: 30, height: 30, channels: 1 } })
    .png()
    .toFile(files[2]);
  await sharp(Buffer.alloc(30 * 30 * 3, 255), { raw: { width: 30, height: 30, channels: 3 } })
    .jpeg()
    .toFile(files[3]);
  const skipped: string[] = [];
  const out = await loadImages(files, [16, 16, 3], (f, reason) => skipped.push(`${f}: ${reason}`));
  assert.ok(out);
  assert.deepEqual(out.indices, [0, 2, 3]);
  assert.equal(skipped.length, 1);
  assert.match(skipped[0], /bad\.png: .*unsupported image format/);
  assert.equal(out.pixels.length, 3 * 16 * 16 * 3);
  const at = (i: number, y: number, x: number) => Array.from(out.pixels.subarray(((i * 16 + y) * 16 + x) * 3, ((i * 16 + y) * 16 + x) * 3 + 3));
  const close = (a: number[], b: number[], what: string) => a.forEach((ai, i) => assert.ok(Math.abs(ai - b[i]!) <= 2, `${what}: ${a} vs ${b}`));
  close(at(0, 8, 2), [255, 0, 0], 'left of the crop');
  close(at(0, 8, 13), [0, 0, 255], 'right of the crop');
  close(at(1, 5, 5), [255, 255, 255], 'gray image replicated to RGB');
  close(at(2, 5, 5), [255, 255, 255], 'JPEG');
  // A 1-channel model gets one gray byte per pixel.
  const gray = await loadImages([files[2]!], [16, 16, 1], () => {});
  assert.deepEqual([gray?.pixels.length, gray?.pixels[100]], [256, 255]);
  assert.equal(await loadImages([files[1]], [16, 16, 3], () => {}), null);
});

test('pixelsToRgb: one RGB picture per image, gray replicated', () => {
  assert.deepEqual(
    pixelsToRgb(Uint8Array.from([1, 2, 3, 4]), 2, 1).map((p) => Array.from(p)),
    [
      [1, 1, 1, 2, 2, 2],
      [3, 3, 3, 4, 4, 4],
    ],
  );
  assert.deepEqual(
    pixelsToRgb(Uint8Array.from([1, 2, 3, 4, 5, 6]), 2, 3).map((p) => Array.from(p)),
    [
      [1, 2, 3],
      [4, 5, 6],
    ],
  );
});

test('uniqueStems: one output name per file', () => {
  assert.deepEqual(uniqueStems(['a/cat.png', 'b/cat.jpg', 'cat-2.png', 'dog.jpeg']), ['cat', 'cat-2', 'cat-2-2', 'dog']);
});
