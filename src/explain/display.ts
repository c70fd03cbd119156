/**
 * From raw maps to pictures, as the reference implementations show them.
 *   gradientMap: PAIR-code/saliency's VisualizeImageGrayscale: sum |.| over channels, then
 *                (v - min) / (p99 - min) clipped to [0, 1] (p99 = numpy's linear-interpolated
 *                99th percentile), per image.
 *   unitScale:   (v - min) / (max - min) per image (Grad-CAM, pytorch-grad-cam's scale_cam_image).
 *   colour maps (jet as matplotlib defines it, gray), overlays on the image, grids, PNG.
 * A constant map (e.g. all-zero gradients) becomes 0 everywhere instead of NaN.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';

/** Per image [N, P] -> the q-th percentile [N, 1], numpy's default (linear) interpolation. */
export function percentile(v: tf.Tensor2D, q: number): tf.Tensor2D {
  return tf.tidy(() => {
    const p = v.shape[1];
    const pos = (q / 100) * (p - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, p - 1);
    // The (p - lo) largest values, descending: ascending rank r sits at index p - 1 - r.
    const top = tf.topk(v, p - lo).values;
    const at = (r: number) => top.slice([0, p - 1 - r], [-1, 1]);
    return tf.add(at(lo), tf.mul(tf.sub(at(hi), at(lo)), pos - lo)) as tf.Tensor2D;
  });
}

/** Gradient-shaped raw maps [N, H, W, C] -> [N, H, W] in [0, 1]. */
export function gradientMap(raw: tf.Tensor4D, q = 99): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, h, w] = raw.shape;
    const v = tf.sum(tf.abs(raw), 3).reshape([n, h * w]) as tf.Tensor2D;
    const vmin = tf.min(v, 1, true);
    const vmax = percentile(v, q);
    return tf.clipByValue(tf.divNoNan(tf.sub(v, vmin), tf.sub(vmax, vmin)), 0, 1).reshape([n, h, w]) as tf.Tensor3D;
  });
}

/** One-channel maps [N, H, W, 1] -> [N, H, W], min-max scaled per image. */
export function unitScale(raw: tf.Tensor4D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, h, w] = raw.shape;
    const v = raw.reshape([n, h * w]);
    const vmin = tf.min(v, 1, true);
    return tf.divNoNan(tf.sub(v, vmin), tf.sub(tf.max(v, 1, true), vmin)).reshape([n, h, w]) as tf.Tensor3D;
  });
}

export const COLORMAPS = ['jet', 'gray'] as const;
export type Colormap = (typeof COLORMAPS)[number];

/** matplotlib's _jet_data: per channel, (x, y) anchors of a piecewise-linear ramp. */
const JET: [number, number][][] = [
  [
    [0, 0],
    [0.35, 0],
    [0.66, 1],
    [0.89, 1],
    [1, 0.5],
  ],
  [
    [0, 0],
    [0.125, 0],
    [0.375, 1],
    [0.64, 1],
    [0.91, 0],
    [1, 0],
  ],
  [
    [0, 0.5],
    [0.11, 1],
    [0.34, 1],
    [0.65, 0],
    [1, 0],
  ],
];

function ramp(anchors: [number, number][], x: number): number {
  for (let i = 1; i < anchors.length; i++) {
    const [x1, y1] = anchors[i];
    if (x <= x1) {
      const [x0, y0] = anchors[i - 1];
      return y0 + ((x - x0) / (x1 - x0)) * (y1 - y0);
    }
  }
  return anchors[anchors.length - 1][1];
}

/** 256-entry RGB lookup tables, sampled at i / 255 like matplotlib's LinearSegmentedColormap(N=256). */
const LUTS: Record<Colormap, Uint8Array> = {
  jet: lut((x) => JET.map((a) => ramp(a, x))),
  gray: lut((x) => [x, x, x]),
};

function lut(f: (x: number) => number[]): Uint8Array {
  const t = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++)
    t.set(
      f(i / 255).map((v) => Math.round(v * 255)),
      i * 3,
    );
  return t;
}

/** A map in [0, 1] (H*W values) -> RGB bytes; value v picks entry min(floor(256 v), 255), as matplotlib does. */
export function colorize(map: ArrayLike<number>, cmap: Colormap): Uint8Array {
  const table = LUTS[cmap];
  const rgb = new Uint8Array(map.length * 3);
  for (let p = 0; p < map.length; p++) {
    const i = Math.min(255, Math.max(0, Math.floor(map[p] * 256))) * 3;
    rgb[p * 3] = table[i];
    rgb[p * 3 + 1] = table[i + 1];
    rgb[p * 3 + 2] = table[i + 2];
  }
  return rgb;
}

/** Alpha blend of a heatmap over an image (both RGB bytes): (1 - alpha) * image + alpha * heat. */
export function overlay(image: Uint8Array, heat: Uint8Array, alpha = 0.5): Uint8Array {
  if (image.length !== heat.length) throw new Error(`overlay: image has ${image.length} bytes, heatmap ${heat.length}`);
  return image.map((v, i) => Math.round((1 - alpha) * v + alpha * heat[i]));
}

/** N interleaved images of `channels` (1: gray, 3: RGB) pixels each -> one RGB picture per image. */
export function pixelsToRgb(pixels: Uint8Array, n: number, channels: number): Uint8Array[] {
  const per = pixels.length / n;
  return Array.from({ length: n }, (_, i) => {
    const img = pixels.subarray(i * per, (i + 1) * per);
    if (channels === 3) return Uint8Array.from(img);
    const rgb = new Uint8Array(img.length * 3);
    for (let p = 0; p < img.length; p++) rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = img[p]!;
    return rgb;
  });
}

/** [0, 1] images [N, H, W, 1|3] -> one RGB byte array per image (gray replicated, values clipped). */
export function imagesToRgb(images01: tf.Tensor4D): Uint8Array[] {
  const [n, h, w, c] = images01.shape;
  const bytes = tf.tidy(() => {
    const x = c === 1 ? tf.tile(images01, [1, 1, 1, 3]) : images01;
    return tf.round(tf.mul(tf.clipByValue(x, 0, 1), 255)).dataSync();
  });
  return Array.from({ length: n }, (_, i) => Uint8Array.from(bytes.subarray(i * h * w * 3, (i + 1) * h * w * 3)));
}

export const SEPARATOR = 2;
const SEPARATOR_GRAY = 128;

/**
 * Equal-sized RGB cells (rows x columns) tiled with SEPARATOR px gray lines around and between:
 * width = cols * w + (cols + 1) * SEPARATOR, height = rows * h + (rows + 1) * SEPARATOR.
 */
export function tile(cells: Uint8Array[][], w: number, h: number): { rgb: Uint8Array; width: number; height: number } {
  const rows = cells.length;
  const cols = Math.max(...cells.map((r) => r.length));
  const width = cols * w + (cols + 1) * SEPARATOR;
  const height = rows * h + (rows + 1) * SEPARATOR;
  const rgb = new Uint8Array(width * height * 3).fill(SEPARATOR_GRAY);
  cells.forEach((row, r) =>
    row.forEach((cell, c) => {
      if (cell.length !== w * h * 3) throw new Error(`tile: cell (${r}, ${c}) has ${cell.length} bytes, expected ${w * h * 3}`);
      const x0 = SEPARATOR + c * (w + SEPARATOR);
      const y0 = SEPARATOR + r * (h + SEPARATOR);
      for (let y = 0; y < h; y++) rgb.set(cell.subarray(y * w * 3, (y + 1) * w * 3), ((y0 + y) * width + x0) * 3);
    }),
  );
  return { rgb, width, height };
}

/** RGB bytes -> PNG. */
export function png(rgb: Uint8Array, width: number, height: number): Promise<Buffer> {
  return sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}
