/**
 * Validation boxes (spec section 5) and the crop geometry of the preprocessing (spec section 4).
 *
 * Sources: one VOC-style XML per image (`ILSVRC2012_val_00000001.xml`) or `LOC_val_solution.csv`
 * (`ImageId,PredictionString`, groups of `synset xmin ymin xmax ymax`). Boxes are pixels of the
 * original image and are kept as written ([x0, y0, x1, y1], x1/y1 taken as exclusive edges, the
 * convention of src/eval/localization.ts).
 *
 * Geometry: every preprocessing is a per-axis affine map x' = x * sx + tx onto an outW x outH
 * output (plus an optional horizontal flip); decode.ts resamples with the same numbers, so a box
 * mapped here lands where the pixels land. No tfjs: usable in a worker.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Problems, type PixelBox } from './samples.js';

export interface BoxObject {
  synset: string;
  box: PixelBox;
}

export interface Annotation {
  imageId: string;
  width?: number;
  height?: number;
  objects: BoxObject[];
  /** Where it came from (file, and byte offset of the line for the CSV). */
  source: { file: string; offset: number };
}

function tag(xml: string, name: string): string | undefined {
  const m = new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>`).exec(xml);
  return m ? m[1]!.trim() : undefined;
}

function allTags(xml: string, name: string): string[] {
  const re = new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>`, 'g');
  return [...xml.matchAll(re)].map((m) => m[1]!);
}

/** Parses one VOC XML annotation. Throws (with the file name) when it is not one. */
export function parseVocXml(text: string, file = '<xml>'): Annotation {
  const ann = tag(text, 'annotation');
  if (ann === undefined) throw new Error(`${file}: no <annotation> element`);
  const fname = tag(ann, 'filename');
  const imageId = (fname ?? basename(file)).replace(/\.(xml|jpe?g|png)$/i, '');
  const out: Annotation = { imageId, objects: [], source: { file, offset: 0 } };
  const size = tag(ann, 'size');
  if (size !== undefined) {
    const w = Number(tag(size, 'width'));
    const h = Number(tag(size, 'height'));
    if (w > 0) out.width = w;
    if (h > 0) out.height = h;
  }
  for (const obj of allTags(ann, 'object')) {
    const synset = tag(obj, 'name');
    const bb = tag(obj, 'bndbox');
    if (synset === undefined || bb === undefined) throw new Error(`${file}: <object> without <name> or <bndbox>`);
    const box = ['xmin', 'ymin', 'xmax', 'ymax'].map((k) => Number(tag(bb, k))) as PixelBox;
    if (!box.every(Number.isFinite)) throw new Error(`${file}: <bndbox> of ${synset} has a missing or non-numeric coordinate`);
    out.objects.push({ synset, box });
  }
  return out;
}

/**
 * All `*.xml` in a folder -> annotations by image id (the file name without `.xml`, which is the
 * image's). A file that does not parse is reported ('bad-annotation') and skipped.
 */
export function loadXmlBoxes(dir: string, problems = new Problems()): Map<string, Annotation> {
  const out = new Map<string, Annotation>();
  const files = readdirSync(dir)
    .filter((f) => f.toLowerCase().endsWith('.xml'))
    .sort();
  for (const f of files) {
    const path = join(dir, f);
    try {
      const a = parseVocXml(readFileSync(path, 'utf8'), path);
      a.imageId = f.slice(0, -4);
      out.set(a.imageId, a);
    } catch (e) {
      problems.add('bad-annotation', path, 0, (e as Error).message);
    }
  }
  return out;
}

/**
 * LOC_val_solution.csv text -> annotations by image id. A line whose PredictionString is not
 * groups of five (synset and four numbers) is reported with its byte offset and skipped.
 */
export function parseLocCsv(text: string, file = 'LOC_val_solution.csv', problems = new Problems()): Map<string, Annotation> {
  const out = new Map<string, Annotation>();
  let offset = 0;
  const lines = text.split('\n');
  for (let li = 0; li < lines.length; li++) {
    const raw = lines[li]!;
    const lineOffset = offset;
    offset += Buffer.byteLength(raw, 'utf8') + 1;
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || (li === 0 && /^imageid\s*,/i.test(line))) continue;
    const comma = line.indexOf(',');
    if (comma < 0) {
      problems.add('bad-annotation', file, lineOffset, `line ${li + 1}: no comma`);
      continue;
    }
    const imageId = line.slice(0, comma).trim();
    const toks = line
      .slice(comma + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    if (toks.length === 0 || toks.length % 5 !== 0) {
      problems.add('bad-annotation', file, lineOffset, `line ${li + 1}: ${toks.length} tokens, expected groups of 5 (synset x0 y0 x1 y1)`);
      continue;
    }
    const objects: BoxObject[] = [];
    let ok = true;
    for (let i = 0; i < toks.length; i += 5) {
      const box = toks.slice(i + 1, i + 5).map(Number) as PixelBox;
      if (!box.every(Number.isFinite)) ok = false;
      objects.push({ synset: toks[i]!, box });
    }
    if (!ok) {
      problems.add('bad-annotation', file, lineOffset, `line ${li + 1}: a non-numeric coordinate`);
      continue;
    }
    const prev = out.get(imageId);
    if (prev) prev.objects.push(...objects);
    else out.set(imageId, { imageId, objects, source: { file, offset: lineOffset } });
  }
  return out;
}

export function loadLocCsv(path: string, problems = new Problems()): Map<string, Annotation> {
  return parseLocCsv(readFileSync(path, 'utf8'), path, problems);
}

/**
 * The boxes of the image's own class. None -> [] and a 'no-class-box' problem (the image then
 * has no ground truth; the caller decides to skip it).
 */
export function classBoxes(ann: Annotation, synset: string, problems?: Problems): PixelBox[] {
  const boxes = ann.objects.filter((o) => o.synset === synset).map((o) => o.box);
  if (boxes.length === 0) {
    const have = [...new Set(ann.objects.map((o) => o.synset))].join(', ') || 'none';
    problems?.add('no-class-box', ann.source.file, ann.source.offset, `${ann.imageId}: no box of its class ${synset} (objects: ${have})`);
  }
  return boxes;
}

// ---------------------------------------------------------------------------------------------
// Geometry

/** Python's round(): halves to even (torchvision's centre crop uses it). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * What decode.ts does to an upright srcW x srcH image: either resize to resizeW x resizeH then
 * take the window (left, top, outW, outH) of the resized image ('resize-crop'), or take the window
 * (left, top, cropW, cropH) of the original then resize it to outW x outH ('crop-resize').
 * `flip` mirrors the output horizontally.
 */
export type Geometry =
  | {
      kind: 'resize-crop';
      srcW: number;
      srcH: number;
      resizeW: number;
      resizeH: number;
      left: number;
      top: number;
      outW: number;
      outH: number;
      flip: boolean;
    }
  | {
      kind: 'crop-resize';
      srcW: number;
      srcH: number;
      left: number;
      top: number;
      cropW: number;
      cropH: number;
      outW: number;
      outH: number;
      flip: boolean;
    };

/** torchvision Resize(size) with an int: the short side becomes `size`, the long one int(size * long / short). */
export function shortSideSize(w: number, h: number, size: number): { w: number; h: number } {
  if (w <= h) return { w: size, h: Math.floor((size * h) / w) };
  return { w: Math.floor((size * w) / h), h: size };
}

/** Resize(resize) + CenterCrop(crop), torchvision's arithmetic (crop offsets round half to even). */
export function resizeCenterCrop(srcW: number, srcH: number, resize: number, crop: number): Geometry {
  const r = shortSideSize(srcW, srcH, resize);
  if (r.w < crop || r.h < crop) throw new Error(`resize ${resize} is smaller than the crop ${crop}`);
  return {
    kind: 'resize-crop',
    srcW,
    srcH,
    resizeW: r.w,
    resizeH: r.h,
    left: roundHalfEven((r.w - crop) / 2),
    top: roundHalfEven((r.h - crop) / 2),
    outW: crop,
    outH: crop,
    flip: false,
  };
}

export type EvalMode = 'short-side' | 'stretch';

/**
 * The evaluation preprocessing of spec section 4: short side to `size` then centre crop `size`
 * ('short-side', default), or resize to size x size ('stretch').
 */
export function evalGeometry(srcW: number, srcH: number, mode: EvalMode = 'short-side', size = 224): Geometry {
  if (mode === 'short-side') return resizeCenterCrop(srcW, srcH, size, size);
  return { kind: 'resize-crop', srcW, srcH, resizeW: size, resizeH: size, left: 0, top: 0, outW: size, outH: size, flip: false };
}

/** The validation preprocessing: Resize(256) + CenterCrop(224). */
export function valGeometry(srcW: number, srcH: number, resize = 256, crop = 224): Geometry {
  return resizeCenterCrop(srcW, srcH, resize, crop);
}

/** x' = x * sx + tx, y' = y * sy + ty (before the flip). */
export function affineOf(g: Geometry): { sx: number; sy: number; tx: number; ty: number } {
  if (g.kind === 'resize-crop') {
    const sx = g.resizeW / g.srcW;
    const sy = g.resizeH / g.srcH;
    return { sx, sy, tx: -g.left, ty: -g.top };
  }
  const sx = g.outW / g.cropW;
  const sy = g.outH / g.cropH;
  return { sx, sy, tx: -g.left * sx, ty: -g.top * sy };
}

/**
 * A box in original pixels -> the output's frame, clipped to it; null when nothing of it is left
 * inside (zero width or height after clipping).
 */
export function mapBox(box: PixelBox, g: Geometry): PixelBox | null {
  const a = affineOf(g);
  let x0 = Math.max(0, Math.min(g.outW, box[0] * a.sx + a.tx));
  let x1 = Math.max(0, Math.min(g.outW, box[2] * a.sx + a.tx));
  const y0 = Math.max(0, Math.min(g.outH, box[1] * a.sy + a.ty));
  const y1 = Math.max(0, Math.min(g.outH, box[3] * a.sy + a.ty));
  if (!(x1 > x0) || !(y1 > y0)) return null;
  if (g.flip) [x0, x1] = [g.outW - x1, g.outW - x0];
  return [x0, y0, x1, y1];
}

/** mapBox over a list, dropping boxes entirely outside the output. */
export function mapBoxes(boxes: PixelBox[], g: Geometry): PixelBox[] {
  const out: PixelBox[] = [];
  for (const b of boxes) {
    const m = mapBox(b, g);
    if (m !== null) out.push(m);
  }
  return out;
}
