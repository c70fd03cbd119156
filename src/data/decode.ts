/**
 * Image decoding and the preprocessing transforms, with sharp (libvips). No tfjs, so it runs in a
 * worker thread.
 *
 * Every decode: EXIF orientation applied (the output is upright), grayscale / CMYK / alpha
 * inputs -> 3-channel sRGB 8-bit, and a pixel limit checked on the header before any pixel is
 * decoded (decompression bombs). Failures throw DecodeError with a clear message; a reader's
 * caller turns it into a skipped and counted sample (Problems 'decode-error').
 *
 * Transforms (geometry in boxes.ts, so boxes map exactly where the pixels go):
 *   - 'eval':  short side to 224 + centre crop 224 (or 'stretch' to 224x224), spec section 4
 *   - 'val':   Resize(256) + CenterCrop(224)
 *   - 'train': RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3) + horizontal flip p=0.5,
 *              torchvision's algorithm, drawn from a seeded Rng; optionally ColorJitter
 *              (brightness, contrast, saturation) after them
 * Output: HWC uint8 RGB (model input: preprocess.ts, after batching).
 */
import sharp from 'sharp';
import type { Rng } from '../util/rng.js';
import { evalGeometry, mapBoxes, roundHalfEven, valGeometry, type EvalMode, type Geometry } from './boxes.js';
import type { PixelBox, Problems, Sample } from './samples.js';

/** Default pixel limit: PIL's MAX_IMAGE_PIXELS (89.5 Mpx); the largest ImageNet image is ~ 10 Mpx... */
export const DEFAULT_PIXEL_LIMIT = 89_478_485;

export const DECODE_FORMATS = ['jpeg', 'png', 'webp'];

export class DecodeError extends Error {
  override name = 'DecodeError';
}

export interface DecodeOptions {
  /** Refuse images with more pixels than this (default DEFAULT_PIXEL_LIMIT). */
  pixelLimit?: number;
  /** sharp's failOn (default 'error': recoverable JPEG warnings pass, as with PIL). */
  failOn?: 'none' | 'truncated' | 'error' | 'warning';
  /** Resampling kernel (default 'linear', antialiased like PIL's bilinear). */
  kernel?: 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';
}

export interface ImageInfo {
  format: string;
  /** Upright size (after the EXIF orientation). */
  width: number;
  height: number;
  orientation: number;
  channels: number;
  space: string;
}

const errMsg = (e: unknown) => (e instanceof Error ? e.message : String(e)).replace(/\s+$/, '');

/** Reads the header only: format, upright size, orientation. Throws DecodeError. */
export async function probeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<ImageInfo> {
  if (bytes.length === 0) throw new DecodeError('empty input (0 bytes): not an image');
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new DecodeError(`not a decodable image (${bytes.length} bytes): ${errMsg(e)}`);
  }
  const format = meta.format ?? 'unknown';
  if (!DECODE_FORMATS.includes(format)) throw new DecodeError(`unsupported image format ${format} (expected JPEG, PNG or WebP)`);
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!(w > 0 && h > 0)) throw new DecodeError(`${format} header without a size`);
  const limit = opts.pixelLimit ?? DEFAULT_PIXEL_LIMIT;
  if (w * h > limit) {
    throw new DecodeError(`image of ${w}x${h} = ${w * h} pixels exceeds the pixel limit ${limit} (decompression bomb?): refused`);
  }
  const orientation = meta.orientation ?? 1;
  const swap = orientation >= 5 && orientation <= 8;
  return {
    format,
    width: swap ? h : w,
    height: swap ? w : h,
    orientation,
    channels: meta.channels ?? 0,
    space: meta.space ?? 'unknown',
  };
}

function base(bytes: Uint8Array, opts: DecodeOptions): sharp.Sharp {
  return sharp(bytes, {
    limitInputPixels: opts.pixelLimit ?? DEFAULT_PIXEL_LIMIT,
    failOn: opts.failOn ?? 'error',
  }).rotate(); // EXIF orientation, then the metadata's orientation tag is dropped
}

async function toRgb(p: sharp.Sharp, expectW: number, expectH: number): Promise<Uint8Array> {
  let out: { data: Buffer; info: sharp.OutputInfo };
  try {
    out = await p.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new DecodeError(`decode failed: ${errMsg(e)}`);
  }
  const { info, data } = out;
  if (info.channels !== 3 || info.width !== expectW || info.height !== expectH) {
    throw new DecodeError(`decoder returned ${info.width}x${info.height}x${info.channels}, expected ${expectW}x${expectH}x3`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

export interface RgbImage {
  /** HWC, 3 channels. */
  data: Uint8Array;
  width: number;
  height: number;
}

/**
 * Decodes the whole image as training does (same pixel limit, same failOn) and returns its header
 * information: `data inspect` and `data make-shards` check with it, so they call valid exactly
 * what training decodes (a truncated JPEG has a readable header, but fails here). Throws DecodeError.
 */
export async function verifyImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<ImageInfo> {
  const info = await probeImage(bytes, opts);
  await toRgb(base(bytes, opts), info.width, info.height);
  return info;
}

/** Whole image, upright, 8-bit RGB. */
export async function decodeRgb(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<RgbImage> {
  const info = await probeImage(bytes, opts);
  const data = await toRgb(base(bytes, opts), info.width, info.height);
  return { data, width: info.width, height: info.height };
}

// ---------------------------------------------------------------------------------------------
// RandomResizedCrop

export interface RandomResizedCropOptions {
  scale?: [number, number];
  ratio?: [number, number];
}

export interface CropWindow {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * torchvision.transforms.RandomResizedCrop.get_params: up to 10 draws of (area fraction in
 * scale, log-uniform aspect ratio in ratio); the first window that fits wins; otherwise the
 * centre crop of the whole image clamped to the ratio range. Rounding as torch (half to even).
 */
export function randomResizedCropParams(width: number, height: number, rng: Rng, opts: RandomResizedCropOptions = {}): CropWindow {
  const [s0, s1] = opts.scale ?? [0.08, 1];
  const [r0, r1] = opts.ratio ?? [3 / 4, 4 / 3];
  const area = width * height;
  const lr0 = Math.log(r0);
  const lr1 = Math.log(r1);
  for (let i = 0; i < 10; i++) {
    const target = area * rng.uniform(s0, s1);
    const aspect = Math.exp(rng.uniform(lr0, lr1));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.int(height - h + 1);
      const left = rng.int(width - w + 1);
      return { left, top, width: w, height: h };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(r0, r1)) {
    w = width;
    h = roundHalfEven(w / Math.min(r0, r1));
  } else if (inRatio > Math.max(r0, r1)) {
    h = height;
    w = roundHalfEven(h * Math.max(r0, r1));
  } else {
    w = width;
    h = height;
  }
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

// ---------------------------------------------------------------------------------------------
// Transforms

export type TransformSpec =
  | { kind: 'eval'; mode?: EvalMode; size?: number }
  | { kind: 'val'; resize?: number; crop?: number }
  | { kind: 'train'; rng: Rng; size?: number; scale?: [number, number]; ratio?: [number, number]; flipProb?: number; colorJitter?: number }
  /** A fixed geometry (e.g. computed elsewhere and sent to a worker); its srcW/srcH must match. */
  | { kind: 'geometry'; geometry: Geometry };

export interface TransformOptions extends DecodeOptions {
  /** Boxes in original (upright) pixels, mapped into the output frame and clipped. */
  boxes?: PixelBox[];
}

export interface TransformResult {
  /** HWC RGB pixels (model input: preprocess.ts). */
  data: Uint8Array;
  width: number;
  height: number;
  geometry: Geometry;
  /** The mapped boxes (only those with something inside the output), when boxes were given. */
  boxes?: PixelBox[];
  /** Original upright size. */
  srcWidth: number;
  srcHeight: number;
}

/** The geometry a spec gives for an upright srcW x srcH image (draws from the Rng for 'train'). */
export function geometryFor(spec: TransformSpec, srcW: number, srcH: number): Geometry {
  switch (spec.kind) {
    case 'eval':
      return evalGeometry(srcW, srcH, spec.mode ?? 'short-side', spec.size ?? 224);
    case 'val':
      return valGeometry(srcW, srcH, spec.resize ?? 256, spec.crop ?? 224);
    case 'train': {
      const size = spec.size ?? 224;
      const c = randomResizedCropParams(srcW, srcH, spec.rng, { scale: spec.scale, ratio: spec.ratio });
      const flip = spec.rng.next() < (spec.flipProb ?? 0.5);
      return { kind: 'crop-resize', srcW, srcH, left: c.left, top: c.top, cropW: c.width, cropH: c.height, outW: size, outH: size, flip };
    }
    case 'geometry':
      if (spec.geometry.srcW !== srcW || spec.geometry.srcH !== srcH) {
        throw new DecodeError(`geometry for ${spec.geometry.srcW}x${spec.geometry.srcH}, image is ${srcW}x${srcH}`);
      }
      return spec.geometry;
  }
}

function flipRowsInPlace(d: Uint8Array, w: number, h: number): void {
  for (let y = 0; y < h; y++) {
    const row = y * w * 3;
    for (let a = 0, b = w - 1; a < b; a++, b--) {
      for (let c = 0; c < 3; c++) {
        const t = d[row + 3 * a + c]!;
        d[row + 3 * a + c] = d[row + 3 * b + c]!;
        d[row + 3 * b + c] = t;
      }
    }
  }
}

/** The training transform's augmentation options (each off or torchvision's default when absent). */
export interface Augmentation {
  /** RandomResizedCrop's area range (default 0.08-1). */
  cropScale?: [number, number];
  /** ColorJitter strength s: brightness, contrast and saturation factors from U[1-s, 1+s] (0: off). */
  colorJitter?: number;
}

export interface JitterFactors {
  brightness: number;
  contrast: number;
  saturation: number;
}

/** Draws ColorJitter's three factors from U[max(0, 1-s), 1+s], in that order. */
export function jitterFactors(rng: Rng, s: number): JitterFactors {
  const f = (): number => rng.uniform(Math.max(0, 1 - s), 1 + s);
  return { brightness: f(), contrast: f(), saturation: f() };
}

/**
 * torchvision's ColorJitter on HWC RGB bytes, in place, in a fixed order: brightness (x * b),
 * contrast (blend with the image's mean gray level), saturation (blend with each pixel's gray
 * level); gray = 0.2989 R + 0.587 G + 0.114 B (torchvision's rgb_to_grayscale). Each step clamps to [0, 255] as torchvision does;
 * values stay float64 between steps and are rounded once at the end (torchvision's float path).
 */
export function colorJitterInPlace(d: Uint8Array, f: JitterFactors): void {
  const n = d.length / 3;
  const v = new Float64Array(d.length);
  const clamp = (x: number): number => (x < 0 ? 0 : x > 255 ? 255 : x);
  let graySum = 0;
  for (let i = 0; i < d.length; i += 3) {
    v[i] = clamp(d[i]! * f.brightness);
    v[i + 1] = clamp(d[i + 1]! * f.brightness);
    v[i + 2] = clamp(d[i + 2]! * f.brightness);
    graySum += 0.2989 * v[i]! + 0.587 * v[i + 1]! + 0.114 * v[i + 2]!;
  }
  const mean = graySum / n;
  for (let i = 0; i < d.length; i += 3) {
    for (let c = 0; c < 3; c++) v[i + c] = clamp(f.contrast * v[i + c]! + (1 - f.contrast) * mean);
    const gray = 0.2989 * v[i]! + 0.587 * v[i + 1]! + 0.114 * v[i + 2]!;
    for (let c = 0; c < 3; c++) d[i + c] = Math.round(clamp(f.saturation * v[i + c]! + (1 - f.saturation) * gray));
  }
}

/** Decode + transform one encoded image. Throws DecodeError. */
export async function decodeTransform(bytes: Uint8Array, spec: TransformSpec, opts: TransformOptions = {}): Promise<TransformResult> {
  const info = await probeImage(bytes, opts);
  const g = geometryFor(spec, info.width, info.height);
  const kernel = opts.kernel ?? 'linear';
  let p = base(bytes, opts);
  if (g.kind === 'resize-crop') {
    p = p.resize(g.resizeW, g.resizeH, { fit: 'fill', kernel });
    if (g.left !== 0 || g.top !== 0 || g.outW !== g.resizeW || g.outH !== g.resizeH) {
      p = p.extract({ left: g.left, top: g.top, width: g.outW, height: g.outH });
    }
  } else {
    if (g.left !== 0 || g.top !== 0 || g.cropW !== g.srcW || g.cropH !== g.srcH) {
      p = p.extract({ left: g.left, top: g.top, width: g.cropW, height: g.cropH });
    }
    p = p.resize(g.outW, g.outH, { fit: 'fill', kernel });
  }
  const rgb = await toRgb(p, g.outW, g.outH);
  if (g.flip) flipRowsInPlace(rgb, g.outW, g.outH);
  // Drawn after the geometry, so runs without jitter keep their crops.
  if (spec.kind === 'train' && (spec.colorJitter ?? 0) > 0) colorJitterInPlace(rgb, jitterFactors(spec.rng, spec.colorJitter!));
  const res: TransformResult = {
    data: rgb,
    width: g.outW,
    height: g.outH,
    geometry: g,
    srcWidth: info.width,
    srcHeight: info.height,
  };
  if (opts.boxes !== undefined) res.boxes = mapBoxes(opts.boxes, g);
  return res;
}

/**
 * decodeTransform for a reader's sample, its boxes mapped along. A DecodeError becomes null and
 * a 'decode-error' problem at the sample's file and offset (the sample is skipped and counted);
 * any other error is a bug and propagates.
 */
export async function transformSample(sample: Sample, spec: TransformSpec, problems: Problems, opts: TransformOptions = {}): Promise<TransformResult | null> {
  try {
    return await decodeTransform(sample.image, spec, sample.boxes ? { ...opts, boxes: sample.boxes } : opts);
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    problems.add('decode-error', sample.source.file, sample.source.offset, `${sample.key}: ${e.message}`);
    return null;
  }
}
