/**
 * CutMix (Yun et al., ICCV 2019) for the classifier's warm-up: a random box of each image is
 * replaced by the same box of another image of the batch, and the label becomes the mix of the
 * two, weighted by area. A classifier trained so cannot lean on the surroundings of an object
 * (they may belong to another image) and must recognise it from part of itself; CutMix's paper
 * measured better CAM localisation from it. Here the aim is a classifier whose evidence is the
 * object, which is what CASM's masks then cover.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/rng.js';
import { crossEntropy } from './score.js';

/** Rows y0..y1-1, columns x0..x1-1. */
export interface Box {
  y0: number;
  y1: number;
  x0: number;
  x1: number;
}

/**
 * The paper's box: lambda ~ U(0, 1) (Beta(1, 1)), a box of sides sqrt(1 - lambda) times the
 * image's, centred uniformly and clipped to the image; `kept` is the area fraction of the image's
 * own pixels, the weight of its own label.
 */
export function cutMixBox(height: number, width: number, rng: Rng): { box: Box; kept: number } {
  const cut = Math.sqrt(1 - rng.next());
  const [h, w] = [Math.floor(height * cut), Math.floor(width * cut)];
  const [cy, cx] = [rng.int(height), rng.int(width)];
  const box = {
    y0: Math.max(0, cy - (h >> 1)),
    y1: Math.min(height, cy + (h >> 1)),
    x0: Math.max(0, cx - (w >> 1)),
    x1: Math.min(width, cx + (w >> 1)),
  };
  return { box, kept: 1 - ((box.y1 - box.y0) * (box.x1 - box.x0)) / (height * width) };
}

/** A batch mixed by CutMix: its images, the label of each pasted box, and the area weight of the own label. */
export interface Mix {
  x: tf.Tensor4D;
  other: tf.Tensor1D;
  kept: number;
}

/** The batch with one box (cutMixBox) pasted into every image from a permutation of the batch. */
export function cutMix(x: tf.Tensor4D, y: tf.Tensor1D, rng: Rng): Mix {
  const [n, height, width] = x.shape;
  const { box, kept } = cutMixBox(height, width, rng);
  const order = rng.permutation(n);
  const inBox = tf.buffer([1, height, width, 1]);
  for (let r = box.y0; r < box.y1; r++) for (let c = box.x0; c < box.x1; c++) inBox.set(1, 0, r, c, 0);
  return tf.tidy(() => {
    const m = inBox.toTensor();
    const from = tf.tensor1d(order, 'int32');
    return { x: tf.add(tf.mul(x, tf.sub(1, m)), tf.mul(tf.gather(x, from), m)) as tf.Tensor4D, other: tf.gather(y, from) as tf.Tensor1D, kept };
  });
}

/** kept * CE(logits, y) + (1 - kept) * CE(logits, the pasted images' labels). */
export function mixedCrossEntropy(logits: tf.Tensor2D, y: tf.Tensor1D, mix: Mix): tf.Scalar {
  return tf.tidy(() => tf.add(tf.mul(mix.kept, crossEntropy(logits, y)), tf.mul(1 - mix.kept, crossEntropy(logits, mix.other))) as tf.Scalar);
}
