/**
 * The localisation protocol's figures of one mask (spec section 4): its box and hit (src/boxes.ts),
 * continuous F1 against the ground truth, mask statistics; tallied over a set of images.
 */
import { isHit, maskBox, type Binarization, type Box } from '../boxes.js';

/**
 * Continuous F1 of a mask against each ground-truth box (spec section 4): P = sum(m gt) / sum(m),
 * R = sum(m gt) / |gt|, F1 = 2PR / (P + R). `max` over the boxes is the spec's F1, `mean` is F1a.
 *
 * Pixel coverage: pixel (x, y) is the unit square [x, x+1) x [y, y+1), and gt is the share of that
 * square the box covers, so a box with fractional edges (any box mapped through a resize and crop)
 * weighs its border pixels by their covered area and |gt| is the box's area. With integer edges
 * this is the plain 0/1 box. Boxes are clipped to the image; a box with no area left scores 0.
 */
export function f1Scores(mask: Float32Array, h: number, w: number, truth: Box[]): { max: number; mean: number } {
  if (truth.length === 0) throw new Error('F1 of an image without ground-truth boxes');
  let total = 0;
  for (let i = 0; i < mask.length; i++) total += mask[i];
  const scores = truth.map(([x0, y0, x1, y1]) => {
    const [cx0, cy0, cx1, cy1] = [Math.max(0, x0), Math.max(0, y0), Math.min(w, x1), Math.min(h, y1)];
    const size = Math.max(0, cx1 - cx0) * Math.max(0, cy1 - cy0);
    if (size === 0) return 0;
    let inside = 0;
    for (let y = Math.floor(cy0); y < Math.ceil(cy1); y++) {
      const cy = Math.min(y + 1, cy1) - Math.max(y, cy0);
      for (let x = Math.floor(cx0); x < Math.ceil(cx1); x++) inside += mask[y * w + x] * cy * (Math.min(x + 1, cx1) - Math.max(x, cx0));
    }
    if (inside === 0) return 0;
    const p = inside / total;
    const r = inside / size;
    return (2 * p * r) / (p + r);
  });
  return { max: Math.max(...scores), mean: scores.reduce((a, b) => a + b, 0) / scores.length };
}

/**
 * Per-mask statistics: area = mean(m); entropy = mean binary entropy of the pixels in bits
 * (0 for a binary mask, 1 for m = 0.5 everywhere); tv = anisotropic total variation per pixel,
 * (sum |m(y, x+1) - m(y, x)| + sum |m(y+1, x) - m(y, x)|) / (h w).
 */
export function maskStats(mask: Float32Array, h: number, w: number): { area: number; entropy: number; tv: number } {
  let area = 0;
  let entropy = 0;
  let tv = 0;
  const bits = (p: number) => (p <= 0 ? 0 : -p * Math.log2(p));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const m = mask[y * w + x];
      area += m;
      entropy += bits(m) + bits(1 - m);
      if (x + 1 < w) tv += Math.abs(mask[y * w + x + 1] - m);
      if (y + 1 < h) tv += Math.abs(mask[(y + 1) * w + x] - m);
    }
  }
  const n = h * w;
  return { area: area / n, entropy: entropy / n, tv: tv / n };
}

export interface MethodResult {
  /** Images scored (those with ground-truth boxes). */
  images: number;
  /** Localisation error: 1 - hit rate. */
  le: number;
  /** Official metric: 1 - hit * [top-1 right]; null without a classifier. */
  om: number | null;
  /** Continuous F1, max over the image's boxes (F1) and mean over them (F1a), averaged over images. */
  f1: number;
  f1a: number;
  /** Images whose mask gave no box (counted as misses). */
  noBox: number;
  area: { mean: number; std: number };
  entropy: number;
  tv: number;
}

/** What one mask scores against its image's boxes: all a tally, or a merge of shards, needs of it. */
export interface MaskScore {
  box: Box | null;
  hit: boolean;
  /** Continuous F1 against the best box (the spec's F1) and the mean over the boxes (F1a). */
  f1: number;
  f1a: number;
  area: number;
  entropy: number;
  tv: number;
}

/** Scores one continuous mask against the image's ground-truth boxes (spec section 4). */
export function scoreMask(mask: Float32Array, h: number, w: number, truth: Box[], alpha = 1, rule: Binarization = 'mean'): MaskScore {
  const box = maskBox(mask, h, w, alpha, rule);
  const f = f1Scores(mask, h, w, truth);
  return { box, hit: isHit(box, truth), f1: f.max, f1a: f.mean, ...maskStats(mask, h, w) };
}

/**
 * Accumulates one method's figures image by image. The sums run in the order images are added,
 * so a merge of shards that adds the same scores in the same order gives the same figures exactly.
 */
export class LocalizationTally {
  private n = 0;
  private hits = 0;
  private hitsRight = 0;
  private rightKnown = true;
  private f1 = 0;
  private f1a = 0;
  private noBox = 0;
  private areaSum = 0;
  private areaSq = 0;
  private entropy = 0;
  private tv = 0;

  /** `correct`: the classifier's top-1 on the clean image was right (null without a classifier: OM is then null). */
  add(s: MaskScore, correct: boolean | null): void {
    this.n++;
    this.hits += s.hit ? 1 : 0;
    if (correct === null) this.rightKnown = false;
    else this.hitsRight += s.hit && correct ? 1 : 0;
    this.f1 += s.f1;
    this.f1a += s.f1a;
    this.noBox += s.box === null ? 1 : 0;
    this.areaSum += s.area;
    this.areaSq += s.area * s.area;
    this.entropy += s.entropy;
    this.tv += s.tv;
  }

  result(): MethodResult {
    const n = this.n;
    if (n === 0) throw new Error('no image with ground-truth boxes was scored');
    const mean = this.areaSum / n;
    return {
      images: n,
      le: 1 - this.hits / n,
      om: this.rightKnown ? 1 - this.hitsRight / n : null,
      f1: this.f1 / n,
      f1a: this.f1a / n,
      noBox: this.noBox,
      area: { mean, std: Math.sqrt(Math.max(0, this.areaSq / n - mean * mean)) },
      entropy: this.entropy / n,
      tv: this.tv / n,
    };
  }
}
