/**
 * Turning cluttered-MNIST samples into model input, and seeded epoch iteration.
 */
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../util/rng.js';
import type { ClutteredSet } from './clutteredMnist.js';
import { channelStats } from './normalize.js';

export interface Batch {
  /** NHWC float32: pixel/255, then (v - mean) / std per channel (see normalize.ts). */
  x: tf.Tensor4D;
  /** Labels, int32. */
  y: tf.Tensor1D;
  /** indices.length*4 boxes [x0, y0, x1, y1], x1/y1 exclusive, in pixels. */
  boxes: Int32Array;
}

/**
 * Builds a batch of the given samples. The gray channel is replicated to 3 channels by default
 * (channels: 1 keeps one channel, normalised with GRAY_MEAN / GRAY_STD). The caller owns x and y.
 */
export function toBatch(set: ClutteredSet, indices: number[], opts: { channels?: 1 | 3 } = {}): Batch {
  const c = opts.channels ?? 3;
  const { mean, std } = channelStats(c);
  const hw = set.size * set.size;
  // Lookup table byte -> normalised value per channel (float32 rounding happens once, on store).
  const lut: Float64Array[] = mean.map((m, ch) => {
    const t = new Float64Array(256);
    for (let v = 0; v < 256; v++) t[v] = (v / 255 - m) / std[ch]!;
    return t;
  });
  const data = new Float32Array(indices.length * hw * c);
  const labels = new Int32Array(indices.length);
  const boxes = new Int32Array(indices.length * 4);
  indices.forEach((idx, b) => {
    if (!Number.isInteger(idx) || idx < 0 || idx >= set.n) throw new Error(`toBatch: index ${idx} out of range [0, ${set.n})`);
    const img = set.images.subarray(idx * hw, (idx + 1) * hw);
    let o = b * hw * c;
    if (c === 1) {
      const t = lut[0]!;
      for (let p = 0; p < hw; p++) data[o++] = t[img[p]!]!;
    } else {
      const [t0, t1, t2] = lut as [Float64Array, Float64Array, Float64Array];
      for (let p = 0; p < hw; p++) {
        const v = img[p]!;
        data[o++] = t0[v]!;
        data[o++] = t1[v]!;
        data[o++] = t2[v]!;
      }
    }
    labels[b] = set.labels[idx]!;
    boxes.set(set.boxes.subarray(idx * 4, idx * 4 + 4), b * 4);
  });
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
  const order = Array.from({ length: n }, (_, i) => i);
  if (shuffle) {
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
  }
  for (let s = 0; s < n; s += batchSize) {
    if (s + batchSize > n && dropLast) return;
    yield order.slice(s, s + batchSize);
  }
}
