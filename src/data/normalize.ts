/**
 * preprocess.ts's rule undone on tensors: model input -> [0, 1] images, for pictures of what a
 * model saw (a masked input, say), which no longer has pixels of its own.
 */
import * as tf from '@tensorflow/tfjs';
import { channelStats } from './preprocess.js';

/**
 * Model input -> [0,1] images: x * std + mean per channel. The inverse of preprocess.ts's rule (no
 * clipping, float32 rounding); a mask-weighted input m*x (0 <= m <= 1) maps into [0,1] as well.
 */
export function denormalize(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const { mean, std } = channelStats(x.shape[3]);
    return x.mul(tf.tensor1d(std)).add(tf.tensor1d(mean)) as tf.Tensor4D;
  });
}
