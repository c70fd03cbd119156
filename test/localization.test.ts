/** Box extraction, IoU and localisation error on hand-made masks with known answers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { binarize, binarizeTopK, centreBox, iou, isHit, largestComponentBox, localizationError, maskBox, type Box } from '../src/boxes.js';
import { f1Scores, LocalizationTally, scoreMask, maskStats } from '../src/eval/localization.js';

/** Builds an h x w binary image from rows of '#' and '.'. */
function grid(rows: string[]): { b: Uint8Array; h: number; w: number } {
  const h = rows.length;
  const w = rows[0].length;
  const b = new Uint8Array(h * w);
  rows.forEach((r, y) => [...r].forEach((ch, x) => (b[y * w + x] = ch === '#' ? 1 : 0)));
  return { b, h, w };
}

test('largest 4-connected component wins over a smaller blob', () => {
  const { b, h, w } = grid(['##......', '##......', '....###.', '....###.', '....###.', '........']);
  assert.deepEqual(largestComponentBox(b, h, w), [4, 2, 7, 5]);
});

test('pixels touching only at corners are separate components', () => {
  const { b, h, w } = grid(['#.....', '.#....', '..##..', '..##..']);
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
  assert.equal(
    isHit(
      [0, 0, 10, 10],
      [
        [50, 50, 60, 60],
        [1, 1, 10, 10],
      ],
    ),
    true,
  );
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

test('top-k binarisation keeps round(mean * N) pixels, earlier first among equals', () => {
  const m = new Float32Array([0.9, 0.1, 0.5, 0.5]); // sum 2 -> k = 2
  assert.deepEqual(Array.from(binarizeTopK(m)), [1, 0, 1, 0]);
  assert.deepEqual(Array.from(binarize(m)), [1, 0, 1, 1]); // mean 0.5: both 0.5s stay
  assert.deepEqual(maskBox(m, 2, 2, 1, 'top-k'), [0, 0, 1, 2]); // pixels 0 and 2: the left column
  assert.deepEqual(Array.from(binarizeTopK(new Float32Array(4))), [0, 0, 0, 0]);
});

/** 4x4 mask: ones on the top-left 2x2 block and on (2,3), (3,3) (x, y). */
function f1Mask(): Float32Array {
  const m = new Float32Array(16);
  for (const [x, y] of [
    [0, 0],
    [1, 0],
    [0, 1],
    [1, 1],
    [2, 3],
    [3, 3],
  ])
    m[y * 4 + x] = 1;
  return m;
}

test('continuous F1: max over boxes (F1) and mean (F1a), hand-derived', () => {
  // Box A = the top-left 2x2: P = 4/6, R = 1, F1 = 0.8. Box B = the bottom-right 2x2: inside 2,
  // P = 2/6, R = 2/4, F1 = 0.4.
  const f = f1Scores(f1Mask(), 4, 4, [
    [0, 0, 2, 2],
    [2, 2, 4, 4],
  ]);
  assert.ok(Math.abs(f.max - 0.8) < 1e-12, `F1 ${f.max}`);
  assert.ok(Math.abs(f.mean - 0.6) < 1e-12, `F1a ${f.mean}`);
  // A box reaching outside the image is clipped first: [-2,-2,2,2] is box A.
  assert.ok(Math.abs(f1Scores(f1Mask(), 4, 4, [[-2, -2, 2, 2]]).max - 0.8) < 1e-12);
  // Half-on mask over the whole 4x4, box = whole image: P = 1, R = 0.5, F1 = 2/3.
  assert.ok(Math.abs(f1Scores(new Float32Array(16).fill(0.5), 4, 4, [[0, 0, 4, 4]]).max - 2 / 3) < 1e-12);
  // An empty mask scores 0, not NaN.
  assert.equal(f1Scores(new Float32Array(16), 4, 4, [[0, 0, 2, 2]]).max, 0);
  assert.throws(() => f1Scores(f1Mask(), 4, 4, []), /without ground-truth boxes/);
});

test('continuous F1 with fractional box edges: pixel coverage, hand-derived', () => {
  // 4x4 mask, m(x, y) = 1 for x <= 1 (the left half), else 0: sum(m) = 8.
  const m = new Float32Array(16);
  for (let y = 0; y < 4; y++) for (let x = 0; x < 2; x++) m[y * 4 + x] = 1;
  // Box [0.5, 1.25, 2.5, 3.75] (a box mapped through a resize): columns 0 and 1 are covered 0.5
  // and 1 wide, rows 1..3 are covered 0.75, 1, 0.75 high. sum(m gt) = (0.5 + 1) * (0.75 + 1 + 0.75)
  // = 3.75; |gt| = 2 * 2.5 = 5. P = 3.75 / 8, R = 3.75 / 5, F1 = 2PR / (P + R) = 7.5 / 13.
  const f = f1Scores(m, 4, 4, [[0.5, 1.25, 2.5, 3.75]]);
  assert.ok(Number.isFinite(f.max), `F1 ${f.max}`);
  assert.ok(Math.abs(f.max - 7.5 / 13) < 1e-12, `F1 ${f.max}, expected ${7.5 / 13}`);
  // Clipped at the border: [-0.5, 3.5, 1.5, 9] keeps [0, 3.5, 1.5, 4]: inside = 1.5 * 0.5 = 0.75 =
  // |gt|, so R = 1, P = 0.75 / 8, F1 = 2P / (P + 1) = 1.5 / 8.75.
  assert.ok(Math.abs(f1Scores(m, 4, 4, [[-0.5, 3.5, 1.5, 9]]).max - 1.5 / 8.75) < 1e-12);
  // A box inside one pixel: [1.2, 0.2, 1.7, 0.6]: inside = 0.5 * 0.4 = |gt|, R = 1, P = 0.2 / 8.
  const p = 0.2 / 8;
  assert.ok(Math.abs(f1Scores(m, 4, 4, [[1.2, 0.2, 1.7, 0.6]]).max - (2 * p) / (p + 1)) < 1e-12);
  // Integer edges give the plain 0/1 box, as before.
  assert.ok(Math.abs(f1Scores(m, 4, 4, [[0, 0, 2, 4]]).max - 1) < 1e-12);
});

test('mask statistics: area, binary entropy in bits, total variation per pixel', () => {
  const s = maskStats(new Float32Array([0, 1, 0.5, 0.5]), 2, 2);
  assert.equal(s.area, 0.5);
  assert.equal(s.entropy, 0.5); // 0, 0, 1, 1 bits
  assert.equal(s.tv, 0.5); // horizontal 1 + 0, vertical 0.5 + 0.5, over 4 pixels
});

test('scoreMask and LocalizationTally: LE, OM, F1 and area spread on synthetic masks', () => {
  const t = new LocalizationTally();
  const truth: Box[] = [[0, 0, 2, 2]];
  // Image 1: the mask is box A plus a far blob -> largest component = the 2x2 block: hit, classifier right.
  const one = scoreMask(f1Mask(), 4, 4, truth);
  assert.deepEqual([one.box, one.hit, one.area], [[0, 0, 2, 2], true, 6 / 16]);
  t.add(one, true);
  // Image 2: the same hit but the classifier was wrong -> counts for LE, not for OM.
  t.add(scoreMask(f1Mask(), 4, 4, truth), false);
  // Image 3: an all-zero mask: every pixel is >= its mean (0), the box is the whole image: a miss.
  const zero = scoreMask(new Float32Array(16), 4, 4, truth);
  assert.deepEqual([zero.box, zero.hit], [[0, 0, 4, 4], false]);
  t.add(zero, true);
  // Image 4: the whole image (a constant mask): IoU 4/16 -> a miss.
  t.add(scoreMask(new Float32Array(16).fill(1), 4, 4, truth), true);
  const r = t.result();
  assert.equal(r.images, 4);
  assert.equal(r.le, 1 - 2 / 4);
  assert.equal(r.om, 1 - 1 / 4);
  assert.equal(r.noBox, 0);
  // F1: 0.8, 0.8, 0, and the full mask P = 4/16, R = 1 -> 0.4.
  assert.ok(Math.abs(r.f1 - (0.8 + 0.8 + 0 + 0.4) / 4) < 1e-12);
  // Areas 6/16, 6/16, 0, 1.
  const areas = [6 / 16, 6 / 16, 0, 1];
  const mean = areas.reduce((a, b) => a + b) / 4;
  assert.ok(Math.abs(r.area.mean - mean) < 1e-12);
  assert.ok(Math.abs(r.area.std - Math.sqrt(areas.reduce((a, b) => a + (b - mean) ** 2, 0) / 4)) < 1e-12);
  // Top-k keeps round(0 * 16) = 0 pixels of an all-zero mask: no box, a miss.
  const k = new LocalizationTally();
  const none = scoreMask(new Float32Array(16), 4, 4, truth, 1, 'top-k');
  assert.deepEqual([none.box, none.hit], [null, false]);
  k.add(none, true);
  assert.deepEqual([k.result().noBox, k.result().le], [1, 1]);
  // Without the classifier's answers OM is unknown, not 0.
  const u = new LocalizationTally();
  u.add(scoreMask(f1Mask(), 4, 4, truth), null);
  assert.equal(u.result().om, null);
  assert.equal(u.result().le, 0);
  assert.throws(() => new LocalizationTally().result(), /no image/);
});
