/**
 * The figure people look at: one row per image, columns
 *   image | mask | masked-in (m*x) | masked-out ((1-m)*x)
 * separated (and framed) by SEPARATOR px of SEPARATOR_COLOR, each cell upscaled by `scale`
 * (nearest neighbour). Optionally the ground-truth box (green) and a predicted box (red) are
 * drawn as 1 px rectangles on the image column.
 *
 * Layout: width = 4*W*scale + 5*SEPARATOR, height = rows*H*scale + (rows+1)*SEPARATOR.
 * Boxes are [x0, y0, x1, y1] in image pixels with x1/y1 exclusive (as in clutteredMnist.ts);
 * the rectangle is drawn on the outermost output pixels of that region.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';

export const SEPARATOR = 2;
export const SEPARATOR_COLOR: [number, number, number] = [128, 128, 128];
export const GT_COLOR: [number, number, number] = [0, 255, 0];
export const PRED_COLOR: [number, number, number] = [255, 0, 0];

export interface MaskGridOptions {
  /** Rows to draw (default 8, capped by the batch size). */
  maxRows?: number;
  /** Integer nearest-neighbour upscaling of every cell (default 1). */
  scale?: number;
  /** n*4 ground-truth boxes (green). */
  gtBoxes?: Int32Array;
  /** Predicted boxes (red), one per row or null; coordinates are rounded. */
  predBoxes?: (number[] | null)[];
}

export interface MaskGridLayout {
  rows: number;
  cellW: number;
  cellH: number;
  width: number;
  height: number;
}

export function maskGridLayout(rows: number, h: number, w: number, scale: number): MaskGridLayout {
  const cellW = w * scale;
  const cellH = h * scale;
  return { rows, cellW, cellH, width: 4 * cellW + 5 * SEPARATOR, height: rows * cellH + (rows + 1) * SEPARATOR };
}

/** Renders the grid as raw RGB bytes (exported for tests and other encoders). */
export function maskGridRgb(images01: tf.Tensor4D, masks: tf.Tensor4D, opts: MaskGridOptions = {}): { rgb: Uint8Array; width: number; height: number } {
  const [n, h, w, c] = images01.shape;
  if (c !== 1 && c !== 3) throw new Error(`maskGrid: images must have 1 or 3 channels, got ${c}`);
  if (masks.shape[0] !== n || masks.shape[3] !== 1) {
    throw new Error(`maskGrid: masks shape [${masks.shape}] does not match images [${images01.shape}] (want [${n},H,W,1])`);
  }
  const scale = opts.scale ?? 1;
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`maskGrid: scale must be a positive integer, got ${scale}`);
  const rows = Math.max(0, Math.min(n, opts.maxRows ?? 8));
  if (rows === 0) throw new Error('maskGrid: nothing to draw (no images or maxRows < 1)');

  // Four [rows, h, w, 3] panels in [0,1], computed in one tidy, read back, all tensors freed.
  const panels = tf.tidy(() => {
    let x = images01.slice([0, 0, 0, 0], [rows, h, w, c]);
    if (c === 1) x = x.tile([1, 1, 1, 3]) as tf.Tensor4D;
    let m = masks.slice([0, 0, 0, 0], [rows, -1, -1, 1]) as tf.Tensor4D;
    if (m.shape[1] !== h || m.shape[2] !== w) m = tf.image.resizeBilinear(m, [h, w]);
    m = m.clipByValue(0, 1) as tf.Tensor4D;
    const x3 = x.clipByValue(0, 1);
    const mIn = m.mul(x3);
    const mOut = tf.scalar(1).sub(m).mul(x3);
    return tf.stack([x3, m.tile([1, 1, 1, 3]), mIn, mOut]) as tf.Tensor5D; // [4, rows, h, w, 3]
  });
  const vals = panels.dataSync() as Float32Array;
  panels.dispose();

  const L = maskGridLayout(rows, h, w, scale);
  const rgb = new Uint8Array(L.width * L.height * 3);
  for (let p = 0; p < L.width * L.height; p++) rgb.set(SEPARATOR_COLOR, p * 3);
  const panelSize = rows * h * w * 3;
  for (let col = 0; col < 4; col++) {
    for (let r = 0; r < rows; r++) {
      const ox = SEPARATOR + col * (L.cellW + SEPARATOR);
      const oy = SEPARATOR + r * (L.cellH + SEPARATOR);
      const base = col * panelSize + r * h * w * 3;
      for (let y = 0; y < L.cellH; y++) {
        const sy = Math.floor(y / scale);
        let o = ((oy + y) * L.width + ox) * 3;
        for (let x = 0; x < L.cellW; x++) {
          const s = base + (sy * w + Math.floor(x / scale)) * 3;
          rgb[o++] = Math.round(vals[s]! * 255);
          rgb[o++] = Math.round(vals[s + 1]! * 255);
          rgb[o++] = Math.round(vals[s + 2]! * 255);
        }
      }
    }
  }

  const drawBox = (r: number, box: ArrayLike<number>, color: [number, number, number]) => {
    const ox = SEPARATOR;
    const oy = SEPARATOR + r * (L.cellH + SEPARATOR);
    const clampX = (v: number) => Math.min(Math.max(v, 0), L.cellW - 1);
    const clampY = (v: number) => Math.min(Math.max(v, 0), L.cellH - 1);
    const x0 = clampX(Math.round(box[0]!) * scale);
    const y0 = clampY(Math.round(box[1]!) * scale);
    const x1 = clampX(Math.round(box[2]!) * scale - 1);
    const y1 = clampY(Math.round(box[3]!) * scale - 1);
    if (x1 < x0 || y1 < y0) return;
    const put = (x: number, y: number) => rgb.set(color, ((oy + y) * L.width + ox + x) * 3);
    for (let x = x0; x <= x1; x++) {
      put(x, y0);
      put(x, y1);
    }
    for (let y = y0; y <= y1; y++) {
      put(x0, y);
      put(x1, y);
    }
  };
  for (let r = 0; r < rows; r++) {
    if (opts.gtBoxes && opts.gtBoxes.length >= (r + 1) * 4) drawBox(r, opts.gtBoxes.subarray(r * 4, r * 4 + 4), GT_COLOR);
    const pb = opts.predBoxes?.[r];
    if (pb && pb.length >= 4) drawBox(r, pb, PRED_COLOR);
  }
  return { rgb, width: L.width, height: L.height };
}

/** The grid as a PNG (RGB, 8 bit). Creates no tensors that outlive the call. */
export async function maskGridPng(
  images01: tf.Tensor4D,
  masks: tf.Tensor4D,
  opts: MaskGridOptions = {},
): Promise<{ png: Buffer; width: number; height: number; channels: 3 }> {
  const { rgb, width, height } = maskGridRgb(images01, masks, opts);
  const png = await sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), {
    raw: { width, height, channels: 3 },
  })
    .png()
    .toBuffer();
  return { png, width, height, channels: 3 };
}
