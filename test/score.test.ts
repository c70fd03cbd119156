/**
 * The CASM losses on small tensors, against values computed by hand here with plain Math
 * (no tfjs on the expected side).
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { classifierLoss, crossEntropy, defaultLambda, maskerLoss, totalVariation } from '../src/casm/score.js';
import { useTestBackend } from './helpers/backend.js';

before(async () => {
  await useTestBackend();
});

const softmax = (z: number[]) => {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};
const ce = (z: number[], y: number) => -Math.log(softmax(z)[y]);
const entropy = (z: number[]) => -softmax(z).reduce((a, p) => a + p * Math.log(p), 0);
const close = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

// Three images, three classes. Clean: images 0 and 1 correct, image 2 wrong.
// Masked-out: image 0 now wrong (confused), image 1 still right, image 2 wrong.
const labels = [0, 1, 2];
const cleanZ = [
  [2.0, 0.5, -1.0],
  [0.1, 1.5, 0.2],
  [1.0, 0.0, 0.5],
];
const maskedZ = [
  [0.2, 0.9, 0.1],
  [-0.3, 0.8, 0.4],
  [2.0, 1.0, -0.5],
];
const cleanCorrect = [1, 1, 0];
// Masks 2x2 per image: areas 0.25, 0.5, 1.0.
const masks = [
  [1, 0, 0, 0],
  [1, 1, 0, 0],
  [1, 1, 1, 1],
];

test('crossEntropy and eq. 8 match the hand computation', () => {
  const y = tf.tensor1d(labels, 'int32');
  const clean = tf.tensor2d(cleanZ);
  const masked = tf.tensor2d(maskedZ);
  const expectClean = labels.reduce((a, l, i) => a + ce(cleanZ[i], l), 0) / 3;
  const expectMasked = labels.reduce((a, l, i) => a + ce(maskedZ[i], l), 0) / 3;
  close(crossEntropy(clean, y).dataSync()[0], expectClean);
  close(classifierLoss(clean, masked, y).dataSync()[0], 0.5 * (expectClean + expectMasked));
  tf.dispose([y, clean, masked]);
});

for (const score of ['entropy', 'classification'] as const) {
  test(`maskerLoss (${score}): gating and adaptive lambda match the hand computation`, () => {
    const lambda = 7;
    const y = tf.tensor1d(labels, 'int32');
    const z = tf.tensor2d(maskedZ);
    const c = tf.tensor1d(cleanCorrect);
    const m = tf.tensor4d(masks.flat(), [3, 2, 2, 1]);
    const out = maskerLoss(z, y, c, m, lambda, score);
    // S_b: entropy, or cross-entropy for the classification score; only clean-correct images count.
    const s = maskedZ.map((zb, b) => (score === 'entropy' ? entropy(zb) : ce(zb, labels[b])));
    // g_b: clean correct and masked wrong -> only image 0 (image 1 still right, image 2 clean-wrong).
    const g = [1, 0, 0];
    const area = [0.25, 0.5, 1.0];
    const expected = (-(s[0] * 1) - s[1] * 1) / 3 + (lambda * (g[0] * area[0])) / 3;
    close(out.loss.dataSync()[0], expected);
    close(out.gated.dataSync()[0], 1 / 3);
    close(out.entropy.dataSync()[0], (entropy(maskedZ[0]) + entropy(maskedZ[1]) + entropy(maskedZ[2])) / 3);
    assert.deepEqual(Array.from(out.area.dataSync()), area);
    tf.dispose([y, z, c, m, out.loss, out.gated, out.entropy, out.area]);
  });
}

test('the area term reaches only gated images: dL/dm = lambda * g_b / (B * HW)', () => {
  const lambda = 3;
  const y = tf.tensor1d(labels, 'int32');
  const z = tf.tensor2d(maskedZ);
  const c = tf.tensor1d(cleanCorrect);
  const m = tf.tensor4d(
    masks.flat().map((v) => v * 0.5),
    [3, 2, 2, 1],
  );
  // Logits here do not depend on m, so only the area term has a gradient.
  const grad = tf.grad((mm: tf.Tensor) => maskerLoss(z, y, c, mm as tf.Tensor4D, lambda, 'entropy').loss)(m);
  const g = Array.from(grad.dataSync());
  const per = lambda / (3 * 4);
  assert.deepEqual(
    g.map((v) => Number(v.toFixed(6))),
    [per, per, per, per, 0, 0, 0, 0, 0, 0, 0, 0].map((v) => Number(v.toFixed(6))),
  );
  tf.dispose([y, z, c, m, grad]);
});

test('totalVariation: squared neighbour differences over H W, by hand', () => {
  // 2x3 mask [[0, 1, 1], [0, 0.5, 1]]: horizontal differences 1, 0, 0.5, 0.5 -> squares 1 + 0 + 0.25
  // + 0.25; vertical 0, -0.5, 0 -> 0.25. TV = 1.75 / 6. A constant mask has none.
  const m = tf.tensor4d([0, 1, 1, 0, 0.5, 1, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], [2, 2, 3, 1]);
  const tv = totalVariation(m);
  const [a, b] = Array.from(tv.dataSync());
  close(a!, 1.75 / 6, 1e-7);
  assert.equal(b, 0);
  tf.dispose([m, tv]);
});

test('maskerLoss with the mask terms: + tv * mean TV + maskedIn * mean_b[c_b CE(masked-in)], by hand', () => {
  const [lambda, wTv, wIn] = [7, 0.5, 2];
  const y = tf.tensor1d(labels, 'int32');
  const z = tf.tensor2d(maskedZ);
  const c = tf.tensor1d(cleanCorrect);
  const m = tf.tensor4d(masks.flat(), [3, 2, 2, 1]);
  const inZ = [
    [1.5, 0.2, 0.1],
    [0.4, 0.3, 0.9],
    [0.0, 0.0, 3.0],
  ];
  const zIn = tf.tensor2d(inZ);
  const out = maskerLoss(z, y, c, m, lambda, 'entropy', { tv: wTv, maskedIn: wIn }, zIn);
  const base = (-entropy(maskedZ[0]) - entropy(maskedZ[1])) / 3 + (lambda * 0.25) / 3;
  // TV of the 2x2 masks [1,0,0,0]: (1 + 1) / 4; [1,1,0,0]: (0 + 1 + 1) / 4 vertical; all ones: 0.
  const tv = (2 / 4 + 2 / 4 + 0) / 3;
  // Masked-in cross-entropy on clean-correct images 0 and 1 (image 2 is wrong on the clean image).
  const maskedIn = (ce(inZ[0], 0) + ce(inZ[1], 1)) / 3;
  close(out.tv.dataSync()[0], tv);
  close(out.maskedIn.dataSync()[0], maskedIn);
  close(out.loss.dataSync()[0], base + wTv * tv + wIn * maskedIn);
  // Weights 0 give the paper's loss exactly, whatever the logits.
  const plain = maskerLoss(z, y, c, m, lambda, 'entropy');
  const off = maskerLoss(z, y, c, m, lambda, 'entropy', { tv: 0, maskedIn: 0 }, zIn);
  assert.equal(off.loss.dataSync()[0], plain.loss.dataSync()[0]);
  close(plain.loss.dataSync()[0], base);
  assert.throws(() => maskerLoss(z, y, c, m, lambda, 'entropy', { tv: 0, maskedIn: 1 }), /needs the masked-in logits/);
  tf.dispose([y, z, c, m, zIn, ...Object.values(out), ...Object.values(plain), ...Object.values(off)]);
});

test('lambda presets per thinning and score (spec section 2), scaled by log(K)/log(1000)', () => {
  const table = { F: [2.5, 9], L: [14, 18], FL: [7.5, 11], L100: [10, 17], L1000: [10, 17] } as const;
  for (const [t, [e, cls]] of Object.entries(table)) {
    close(defaultLambda(t as keyof typeof table, 'entropy'), e, 1e-12);
    close(defaultLambda(t as keyof typeof table, 'classification'), cls, 1e-12);
    close(defaultLambda(t as keyof typeof table, 'entropy', 10), e / 3, 1e-12);
  }
});
