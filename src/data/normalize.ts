/**
 * Input normalisation shared by the whole project. Model inputs are NHWC float32:
 * pixel/255, then per channel (v - mean) / std with the ImageNet statistics.
 *
 * One-channel inputs use the average of the three ImageNet means/stds (GRAY_MEAN, GRAY_STD),
 * so a gray image replicated to 3 channels and the 1-channel version differ only by those
 * per-channel constants.
 */
import * as tf from '@tensorflow/tfjs';
import { IMAGENET_MEAN, IMAGENET_STD } from './imagenetStats.js';

export { IMAGENET_MEAN, IMAGENET_STD };
export const GRAY_MEAN = (IMAGENET_MEAN[0] + IMAGENET_MEAN[1] + IMAGENET_MEAN[2]) / 3;
export const GRAY_STD = (IMAGENET_STD[0] + IMAGENET_STD[1] + IMAGENET_STD[2]) / 3;

/** Per-channel mean and std for an input with `channels` channels (1 or 3). */
export function channelStats(channels: number): { mean: number[]; std: number[] } {
  if (channels === 3) return { mean: IMAGENET_MEAN.slice(), std: IMAGENET_STD.slice() };
  if (channels === 1) return { mean: [GRAY_MEAN], std: [GRAY_STD] };
  throw new Error(`normalize: expected 1 or 3 channels, got ${channels}`);
}

/** [0,1] images -> model input: (x - mean) / std per channel. */
export function normalize(x01: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const { mean, std } = channelStats(x01.shape[3]);
    return x01.sub(tf.tensor1d(mean)).div(tf.tensor1d(std)) as tf.Tensor4D;
  });
}

/**
 * Model input -> [0,1] images: x * std + mean per channel. The exact inverse of normalize (no
 * clipping); a mask-weighted input m*x (0 <= m <= 1) maps into [0,1] as well.
 */
export function denormalize(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const { mean, std } = channelStats(x.shape[3]);
    return x.mul(tf.tensor1d(std)).add(tf.tensor1d(mean)) as tf.Tensor4D;
  });
}
