/** Box extraction, IoU and localisation error on hand-made masks with known answers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { binarize, centreBox, iou, isHit, largestComponentBox, localizationError, maskBox, type Box } from '../src/eval/localization.js';

/** Builds an h x w binary image from rows of '#' and '.'. */
function grid(rows: string[]): { b: Uint8Array; h: number; w: number } {
  const h = rows.length;
  const w = rows[0].length;
  const b = new Uint8Array(h * w);
  rows.forEach((r, y) => [...r].forEach((ch, x) => (b[y * w + x] = ch === '#' ? 1 : 0)));
  return { b, h, w };
}

test('largest 4-connected component wins over a smaller blob', () => {
  const { b, h, w } = grid([
    '##......',
    '##......',
    '....###.',
    '....###.',
    '....###.',
    '........',
  ]);
  assert.deepEqual(largestComponentBox(b, h, w), [4, 2, 7, 5]);
});

test('pixels touching only at corners are separate components', () => {
  const { b, h, w } = grid([
    '#.....',
    '.#....',
    '..##..',
    '..##..',
  ]);
  // The 2x2 block (4 px) beats the two single diagonal pixels; 8-connectivity would give [0,0,4,4].
  assert.deepEqual(largestComponentBox(b, h, w), [2, 2, 4, 4]);
});

test('an empty mask gives no box, and no box is a miss', () => {
  assert.equal(largestComponentBox(new Uint8Array(16), 4, 4), null);
  assert.equal(isHit(null, [[0, 0, 4, 4]]), false);
});

test('binarize keeps pixels at or above alpha * mean', () => {
  const m = new Float32Array([0, 0.2, 0.4, 0.6]); // mean 0.3
  assert.deepEqual(Array.from(binarize(m)), [0, 0, 1, 1]);
  assert.deepEqual(Array.from(binarize(m, 0.5)), [0, 1, 1, 1]); // threshold 0.15
  // A constant mask keeps every pixel (m >= mean): the whole image.
  assert.deepEqual(maskBox(new Float32Array(6).fill(0.5), 2, 3), [0, 0, 3, 2]);
});

test('IoU on hand-computed boxes, hit strictly above 0.5', () => {
  assert.equal(iou([0, 0, 10, 10], [0, 0, 10, 10]), 1);
  assert.equal(iou([0, 0, 10, 10], [10, 10, 20, 20]), 0);
  // Overlap 5x10 = 50; union 100 + 100 - 50 = 150.
  assert.equal(iou([0, 0, 10, 10], [5, 0, 15, 10]), 50 / 150);
  // IoU exactly 0.5 is not a hit: [0,0,10,10] vs [0,0,10,20]: 100 / 200.
  assert.equal(iou([0, 0, 10, 10], [0, 0, 10, 20]), 0.5);
  assert.equal(isHit([0, 0, 10, 10], [[0, 0, 10, 20]]), false);
  assert.equal(isHit([0, 0, 10, 11], [[0, 0, 10, 20]]), true);
  // Any of several ground-truth boxes counts.
  assert.equal(isHit([0, 0, 10, 10], [[50, 50, 60, 60], [1, 1, 10, 10]]), true);
});

test('centre box has a 33-pixel margin at 224', () => {
  assert.deepEqual(centreBox(224, 224), [33, 33, 191, 191]);
  assert.deepEqual(centreBox(64, 64), [9, 9, 55, 55]);
});

test('localisation error counts misses over images', () => {
  const truth: Box[][] = [[[0, 0, 10, 10]], [[0, 0, 10, 10]], [[20, 20, 30, 30]], [[0, 0, 4, 4]]];
  const pred: (Box | null)[] = [[0, 0, 10, 10], [0, 0, 9, 9], [0, 0, 10, 10], null];
  // Hits: image 0 (IoU 1), image 1 (IoU 0.81); misses: image 2, image 3 (no box).
  assert.equal(localizationError(pred, truth), 0.5);
  assert.throws(() => localizationError([], []), /empty/);
});
