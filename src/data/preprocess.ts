/**
 * The model's input preprocessing, in one home: every image reaches the models as 8-bit pixels
 * (decoded files and shards, the generated digits, the browser's canvas) and becomes model input
 * by one rule, per channel (v / 255 - mean) / std with the ImageNet statistics, computed in double
 * precision and rounded once to float32. It is a table of 256 values per channel: the data
 * loader, the image files of explain and mask, and the exported network's in-graph lookup all
 * read this table. No tfjs here, so decoding workers can import it.
 *
 * One-channel inputs use the average of the three ImageNet means/stds (GRAY_MEAN, GRAY_STD), so a
 * gray image replicated to 3 channels and the 1-channel version differ only by those constants.
 */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];
export const GRAY_MEAN = (IMAGENET_MEAN[0]! + IMAGENET_MEAN[1]! + IMAGENET_MEAN[2]!) / 3;
export const GRAY_STD = (IMAGENET_STD[0]! + IMAGENET_STD[1]! + IMAGENET_STD[2]!) / 3;

/** Per-channel mean and std for an input with `channels` channels (1 or 3). */
export function channelStats(channels: number): { mean: number[]; std: number[] } {
  if (channels === 3) return { mean: IMAGENET_MEAN.slice(), std: IMAGENET_STD.slice() };
  if (channels === 1) return { mean: [GRAY_MEAN], std: [GRAY_STD] };
  throw new Error(`preprocess: expected 1 or 3 channels, got ${channels}`);
}

const tables = new Map<number, Float32Array>();

/** The model input of byte v in channel c at [c * 256 + v], for `channels` (1 or 3) channels. */
export function normalizationTable(channels: number): Float32Array {
  let t = tables.get(channels);
  if (!t) {
    const { mean, std } = channelStats(channels);
    t = new Float32Array(256 * channels);
    for (let c = 0; c < channels; c++) for (let v = 0; v < 256; v++) t[c * 256 + v] = (v / 255 - mean[c]!) / std[c]!;
    tables.set(channels, t);
  }
  return t;
}

/** Interleaved pixels (HWC, `channels` per pixel, any number of images) -> model input. */
export function normalizeBytes(pixels: Uint8Array, channels: number): Float32Array {
  const t = normalizationTable(channels);
  const out = new Float32Array(pixels.length);
  if (channels === 1) {
    for (let i = 0; i < pixels.length; i++) out[i] = t[pixels[i]!]!;
    return out;
  }
  // RGB unrolled, no remainder per value: this runs on every training batch, on the main thread.
  for (let i = 0; i < pixels.length; i += 3) {
    out[i] = t[pixels[i]!]!;
    out[i + 1] = t[256 + pixels[i + 1]!]!;
    out[i + 2] = t[512 + pixels[i + 2]!]!;
  }
  return out;
}
