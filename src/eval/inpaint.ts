/**
 * "Inpainted masked-out images" for the classification-by-other-classifiers evaluation: the
 * pixels under a binary mask are filled by Telea's fast-marching inpainting (Telea 2004), run by
 * OpenCV itself (OpenCV 5.0.0 compiled to WebAssembly, package @opencvjs/web), the same
 * cv.inpaint(..., INPAINT_TELEA) the CASM reference code calls from Python, not an imitation.
 */
import { loadOpenCV, type OpenCV } from '@opencvjs/web';

/** 3: the CASM reference code (kondiz/casme, utils.py inpaint) calls cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA). */
export const DEFAULT_RADIUS = 3;

let cvPromise: Promise<typeof OpenCV> | undefined;

/** OpenCV's wasm module, compiled once (about 0.3 s) and shared by every call. */
export function openCV(): Promise<typeof OpenCV> {
  cvPromise ??= loadOpenCV();
  return cvPromise;
}

/**
 * Fills the pixels where mask != 0 by Telea inpainting; the others are returned unchanged.
 * rgb: height*width*3 bytes, row-major, interleaved channels (the channel order does not matter:
 * Telea treats channels alike). mask: height*width bytes. radius: the neighbourhood that each filled
 * pixel is estimated from, in pixels (OpenCV rounds it and clamps it to [1, 100]).
 * Returns new bytes; the arguments are not modified.
 */
export async function inpaintTelea(rgb: Uint8Array, mask: Uint8Array, width: number, height: number, radius = DEFAULT_RADIUS): Promise<Uint8Array> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`inpaintTelea: width and height must be positive integers (got ${width} x ${height})`);
  }
  if (rgb.length !== width * height * 3) {
    throw new Error(`inpaintTelea: rgb has ${rgb.length} bytes, expected height*width*3 = ${height}*${width}*3 = ${width * height * 3}`);
  }
  if (mask.length !== width * height) {
    throw new Error(`inpaintTelea: mask has ${mask.length} bytes, expected height*width = ${height}*${width} = ${width * height}`);
  }
  if (!Number.isFinite(radius) || radius < 0) {
    throw new Error(`inpaintTelea: radius must be a finite number >= 0 (got ${radius})`);
  }
  const cv = await openCV();
  const src = new cv.Mat(height, width, cv.CV_8UC3);
  const m = new cv.Mat(height, width, cv.CV_8UC1);
  const dst = new cv.Mat();
  try {
    src.data.set(rgb);
    m.data.set(mask);
    cv.inpaint(src, m, dst, radius, cv.INPAINT_TELEA);
    // dst.data views the wasm heap: copy it out before dst is deleted.
    return dst.data.slice(0, rgb.length);
  } finally {
    src.delete();
    m.delete();
    dst.delete();
  }
}
