/** Real test images: MNIST test digits, coloured and resized, encoded as JPEG (or anything sharp writes). */
import sharp from 'sharp';
import { loadMnist } from '../../src/data/mnist.js';

/** Test digit i as a 28 x 28 three-channel sharp image (the channels differ, so colour order matters). */
export function digitImage(i: number): sharp.Sharp {
  const m = loadMnist('test');
  const rgb = Buffer.alloc(784 * 3);
  for (let p = 0; p < 784; p++) {
    const v = m.images[i * 784 + p]!;
    rgb[3 * p] = v;
    rgb[3 * p + 1] = 255 - v;
    rgb[3 * p + 2] = (v * 7) & 255;
  }
  return sharp(rgb, { raw: { width: 28, height: 28, channels: 3 } });
}

/** Test digit i resized to w x h, JPEG at the given quality. */
export function digitJpeg(i: number, w: number, h: number, quality = 92): Promise<Buffer> {
  return digitImage(i).resize(w, h).jpeg({ quality }).toBuffer();
}

/** MNIST's label of test digit i. */
export function digitLabel(i: number): number {
  return loadMnist('test').labels[i]!;
}
