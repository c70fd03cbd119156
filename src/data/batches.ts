/**
 * Turning cluttered-MNIST samples into model input, and seeded epoch iteration.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/rng.js';
import type { ClutteredSet } from './clutteredMnist.js';
import { normalizeBytes } from './preprocess.js';

export interface Batch {
  /** NHWC float32 model input (preprocess.ts). */
  x: tf.Tensor4D;
  /** Labels, int32. */
  y: tf.Tensor1D;
  /** indices.length*4 boxes [x0, y0, x1, y1], x1/y1 exclusive, in pixels. */
  boxes: Int32Array;
}

/** The samples' gray pixels as interleaved `channels`-channel pixels (HWC; the gray value in every channel). */
export function batchPixels(set: ClutteredSet, indices: number[], channels: 1 | 3 = 3): Uint8Array {
  const hw = set.size * set.size;
  const out = new Uint8Array(indices.length * hw * channels);
  indices.forEach((idx, b) => {
    if (!Number.isInteger(idx) || idx < 0 || idx >= set.n) throw new Error(`toBatch: index ${idx} out of range [0, ${set.n})`);
    const img = set.images.subarray(idx * hw, (idx + 1) * hw);
    if (channels === 1) out.set(img, b * hw);
    else for (let p = 0, o = b * hw * 3; p < hw; p++, o += 3) out[o] = out[o + 1] = out[o + 2] = img[p]!;
  });
  return out;
}

/**
 * Builds a batch of the given samples. The gray channel is replicated to 3 channels by default
 * (channels: 1 keeps one channel, normalised with GRAY_MEAN / GRAY_STD). The caller owns x and y.
 */
export function toBatch(set: ClutteredSet, indices: number[], opts: { channels?: 1 | 3 } = {}): Batch {
  const c = opts.channels ?? 3;
  const data = normalizeBytes(batchPixels(set, indices, c), c);
  const labels = Int32Array.from(indices, (idx) => set.labels[idx]!);
  const boxes = new Int32Array(indices.length * 4);
  indices.forEach((idx, b) => boxes.set(set.boxes.subarray(idx * 4, idx * 4 + 4), b * 4));
  return {
    x: tf.tensor4d(data, [indices.length, set.size, set.size, c], 'float32'),
    y: tf.tensor1d(labels, 'int32'),
    boxes,
  };
}

/**
 * One epoch of batch index arrays. With shuffle, a Fisher-Yates permutation drawn from rng;
 * dropLast (default true, the training setting) drops the final incomplete batch.
 */
export function* batchIndices(n: number, batchSize: number, rng: Rng, shuffle = true, dropLast = true): Generator<number[], void, undefined> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batchIndices: bad batch size ${batchSize}`);
  const order = shuffle ? rng.permutation(n) : Array.from({ length: n }, (_, i) => i);
  for (let s = 0; s < n; s += batchSize) {
    if (s + batchSize > n && dropLast) return;
    yield order.slice(s, s + batchSize);
  }
}
