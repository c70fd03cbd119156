import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { GT_COLOR, maskGridPng, PRED_COLOR, SEPARATOR, SEPARATOR_COLOR } from '../src/log/maskGrid.js';

await tf.setBackend('cpu');

async function decode(png: Buffer): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function pixel(img: { data: Buffer; width: number; channels: number }, x: number, y: number): number[] {
  const o = (y * img.width + x) * img.channels;
  return Array.from(img.data.subarray(o, o + 3));
}

/** Top-left output pixel of cell (row, col) for an h x w image at `scale`. */
function cellOrigin(row: number, col: number, h: number, w: number, scale: number): [number, number] {
  return [SEPARATOR + col * (w * scale + SEPARATOR), SEPARATOR + row * (h * scale + SEPARATOR)];
}

test('mask of ones: masked-in equals the image, masked-out is black; size and separators', async () => {
  const n = 3;
  const h = 8;
  const w = 10;
  const scale = 2;
  const images = tf.tidy(() => tf.randomUniform([n, h, w, 3], 0, 1, 'float32', 42) as tf.Tensor4D);
  const masks = tf.ones([n, h, w, 1]) as tf.Tensor4D;
  const before = tf.memory().numTensors;
  const out = await maskGridPng(images, masks, { scale, maxRows: 2 });
  assert.equal(tf.memory().numTensors, before, 'no tensors leaked');
  assert.equal(out.channels, 3);
  assert.equal(out.width, 4 * w * scale + 5 * SEPARATOR);
  assert.equal(out.height, 2 * h * scale + 3 * SEPARATOR);
  const img = await decode(out.png);
  assert.equal(img.width, out.width);
  assert.equal(img.height, out.height);
  assert.equal(img.channels, 3);

  const src = images.arraySync();
  for (let r = 0; r < 2; r++) {
    for (const [y, x] of [
      [0, 0],
      [3, 7],
      [7, 9],
    ] as const) {
      const want = src[r]![y]![x]!.map((v) => Math.round(v * 255));
      for (let dy = 0; dy < scale; dy++) {
        for (let dx = 0; dx < scale; dx++) {
          const [ix, iy] = cellOrigin(r, 0, h, w, scale);
          assert.deepEqual(pixel(img, ix + x * scale + dx, iy + y * scale + dy), want, 'image column');
          const [mx, my] = cellOrigin(r, 1, h, w, scale);
          assert.deepEqual(pixel(img, mx + x * scale + dx, my + y * scale + dy), [255, 255, 255], 'mask column');
          const [ax, ay] = cellOrigin(r, 2, h, w, scale);
          assert.deepEqual(pixel(img, ax + x * scale + dx, ay + y * scale + dy), want, 'masked-in column');
          const [bx, by] = cellOrigin(r, 3, h, w, scale);
          assert.deepEqual(pixel(img, bx + x * scale + dx, by + y * scale + dy), [0, 0, 0], 'masked-out column');
        }
      }
    }
  }
  // Separators: the frame corner, and the gap between column 0 and 1.
  assert.deepEqual(pixel(img, 0, 0), SEPARATOR_COLOR);
  assert.deepEqual(pixel(img, SEPARATOR + w * scale, 5), SEPARATOR_COLOR);
  assert.deepEqual(pixel(img, SEPARATOR + w * scale + 1, 5), SEPARATOR_COLOR);
  assert.deepEqual(pixel(img, 5, SEPARATOR + h * scale), SEPARATOR_COLOR);
  tf.dispose([images, masks]);
});

test('gray images, half mask, mask at lower resolution, and boxes', async () => {
  const h = 16;
  const w = 16;
  // One gray image of constant 0.8; the mask is 1 on the left half, 0 on the right half.
  const images = tf.fill([1, h, w, 1], 0.8) as tf.Tensor4D;
  const maskData = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w / 2; x++) maskData[y * w + x] = 1;
  const masks = tf.tensor4d(maskData, [1, h, w, 1]);
  const gt = Int32Array.from([2, 3, 10, 12]); // x1, y1 exclusive
  const out = await maskGridPng(images, masks, { gtBoxes: gt, predBoxes: [[4.2, 4.4, 6, 7]] });
  const img = await decode(out.png);
  assert.equal(img.width, 4 * w + 5 * SEPARATOR);
  assert.equal(img.height, h + 2 * SEPARATOR);
  const g = Math.round(0.8 * 255);
  const at = (col: number, x: number, y: number) => {
    const [ox, oy] = cellOrigin(0, col, h, w, 1);
    return pixel(img, ox + x, oy + y);
  };
  assert.deepEqual(at(0, 0, 0), [g, g, g]);
  assert.deepEqual(at(1, 1, 1), [255, 255, 255]);
  assert.deepEqual(at(1, 14, 1), [0, 0, 0]);
  assert.deepEqual(at(2, 1, 1), [g, g, g]);
  assert.deepEqual(at(2, 14, 1), [0, 0, 0]);
  assert.deepEqual(at(3, 1, 1), [0, 0, 0]);
  assert.deepEqual(at(3, 14, 1), [g, g, g]);
  // Ground-truth box outline (green) on the image column: corners (2,3) and (9,11), not (10,12).
  assert.deepEqual(at(0, 2, 3), GT_COLOR);
  assert.deepEqual(at(0, 9, 11), GT_COLOR);
  assert.deepEqual(at(0, 5, 3), GT_COLOR);
  assert.deepEqual(at(0, 2, 7), GT_COLOR);
  assert.deepEqual(at(0, 10, 12), [g, g, g]);
  assert.deepEqual(at(0, 6, 6), [g, g, g], 'interior untouched');
  // Predicted box, rounded to [4,4,6,7): outline on x 4..5, y 4..6, red wins over nothing.
  assert.deepEqual(at(0, 4, 4), PRED_COLOR);
  assert.deepEqual(at(0, 5, 6), PRED_COLOR);
  // Masks at half resolution are resized to the image.
  const small = tf.ones([1, 8, 8, 1]) as tf.Tensor4D;
  const out2 = await maskGridPng(images, small, { scale: 3 });
  assert.equal(out2.width, 4 * w * 3 + 5 * SEPARATOR);
  const img2 = await decode(out2.png);
  const [ox, oy] = cellOrigin(0, 3, h, w, 3);
  assert.deepEqual(pixel(img2, ox + 20, oy + 20), [0, 0, 0]);
  const wrong = tf.ones([2, h, w, 1]) as tf.Tensor4D;
  await assert.rejects(maskGridPng(images, wrong), /masks shape/);
  tf.dispose([images, masks, small, wrong]);
});
