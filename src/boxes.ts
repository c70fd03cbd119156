/**
 * Boxes and the rules that make and judge them, shared by training's held-out check, `casm mask`
 * and the evaluation: a mask's box (the largest 4-connected component of its binarisation), the
 * centre baseline, IoU and the hit rule, and LE. Boxes are [x0, y0, x1, y1] in pixels with x1, y1
 * exclusive, the convention of the data sets' boxes.
 */

export type Box = [number, number, number, number];

/**
 * How a continuous mask becomes binary: `mean` (the spec's default, b = m >= alpha * mean(m)) or
 * `top-k` (the reference code's variant: the round(mean(m) * N) largest pixels, ties by position).
 */
export const BINARIZATIONS = ['mean', 'top-k'] as const;
export type Binarization = (typeof BINARIZATIONS)[number];

/** b = m >= alpha * mean(m). */
export function binarize(mask: Float32Array, alpha = 1): Uint8Array {
  let sum = 0;
  for (let i = 0; i < mask.length; i++) sum += mask[i];
  const threshold = (alpha * sum) / mask.length;
  const b = new Uint8Array(mask.length);
  for (let i = 0; i < mask.length; i++) b[i] = mask[i] >= threshold ? 1 : 0;
  return b;
}

/** The round(mean(m) * N) largest pixels of m (the earlier pixel first among equals). */
export function binarizeTopK(mask: Float32Array): Uint8Array {
  let sum = 0;
  for (let i = 0; i < mask.length; i++) sum += mask[i];
  const k = Math.round(sum);
  const order = Array.from({ length: mask.length }, (_, i) => i).sort((a, b) => mask[b] - mask[a] || a - b);
  const b = new Uint8Array(mask.length);
  for (let i = 0; i < k; i++) b[order[i]] = 1;
  return b;
}

/** Tight box of the largest 4-connected component of a binary h x w image; null when empty. */
export function largestComponentBox(b: Uint8Array, h: number, w: number): Box | null {
  const seen = new Uint8Array(b.length);
  const stack = new Int32Array(b.length);
  let best: Box | null = null;
  let bestSize = 0;
  for (let start = 0; start < b.length; start++) {
    if (!b[start] || seen[start]) continue;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    let size = 0;
    let x0 = w;
    let y0 = h;
    let x1 = -1;
    let y1 = -1;
    while (top > 0) {
      const p = stack[--top];
      size++;
      const y = (p / w) | 0;
      const x = p - y * w;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      const visit = (q: number) => {
        if (b[q] && !seen[q]) {
          seen[q] = 1;
          stack[top++] = q;
        }
      };
      if (x > 0) visit(p - 1);
      if (x < w - 1) visit(p + 1);
      if (y > 0) visit(p - w);
      if (y < h - 1) visit(p + w);
    }
    if (size > bestSize) {
      bestSize = size;
      best = [x0, y0, x1 + 1, y1 + 1];
    }
  }
  return best;
}

export function iou(a: Box, b: Box): number {
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const area = (r: Box) => (r[2] - r[0]) * (r[3] - r[1]);
  const union = area(a) + area(b) - inter;
  return union > 0 ? inter / union : 0;
}

/** The trivial "centre" baseline: a box with a 33-pixel margin at 224, scaled to the image size. */
export function centreBox(h: number, w: number): Box {
  const my = Math.round((33 / 224) * h);
  const mx = Math.round((33 / 224) * w);
  return [mx, my, w - mx, h - my];
}

/** A hit: IoU strictly above 0.5 with any ground-truth box. */
export function isHit(box: Box | null, truth: Box[]): boolean {
  return box !== null && truth.some((t) => iou(box, t) > 0.5);
}

/** The box a continuous mask in [0,1] localises: the largest component of its binarisation. */
export function maskBox(mask: Float32Array, h: number, w: number, alpha = 1, rule: Binarization = 'mean'): Box | null {
  return largestComponentBox(rule === 'mean' ? binarize(mask, alpha) : binarizeTopK(mask), h, w);
}

/** LE = 1 - hit rate, over images with predicted boxes (null = no box = miss). */
export function localizationError(predicted: (Box | null)[], truth: Box[][]): number {
  if (predicted.length !== truth.length) throw new Error(`${predicted.length} predictions for ${truth.length} images`);
  if (predicted.length === 0) throw new Error('localisation error of an empty set');
  const hits = predicted.reduce((n, box, i) => n + (isHit(box, truth[i]) ? 1 : 0), 0);
  return 1 - hits / predicted.length;
}
