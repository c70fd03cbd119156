/**
 * PNG figures of the evaluation: bar charts of localisation error, and a grid of example masks
 * with their boxes. Both are drawn (in part) as SVG and rasterised by sharp's librsvg, so text
 * needs a font that fontconfig can find (DejaVu Sans / Liberation Sans or any sans-serif).
 */
import sharp from 'sharp';
import { colorize, overlay, SEPARATOR, tile } from '../explain/display.js';
import { GT_COLOR, PRED_COLOR } from '../log/maskGrid.js';
import type { Box } from '../boxes.js';

export interface BarChart {
  title: string;
  yLabel: string;
  categories: string[];
  /** One bar per series in each category group; null = no value (drawn as "n/a"). */
  series: { name: string; values: (number | null)[] }[];
  /** Top of the y axis (default: niceMax of the largest value). */
  yMax?: number;
}

export interface ExampleRow {
  /** height*width*3 RGB bytes. */
  image: Uint8Array;
  width: number;
  height: number;
  truth: Box[];
  /** Drawn in the image cell's bottom-left corner. */
  title?: string;
  /** One per method, in the order of opts.methods; mask is height*width values in [0, 1]. */
  cells: { mask: Float32Array; box: Box | null }[];
}

/** Okabe-Ito colours: told apart under the common colour-vision deficiencies. */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442'];
const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';
const TEXT = '#222222';

export function escapeXml(s: string): string {
  const ent: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
  return s.replace(/[&<>"']/g, (c) => ent[c]!);
}

/** Smallest {1, 2, 2.5, 5} x 10^k >= v, and at least 1 so that rates share one [0, 1] axis. */
export function niceMax(v: number): number {
  if (!(v > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v * (1 - 1e-12))!;
}

const text = (x: number, y: number, s: string, attrs = '') => `<text x="${x}" y="${y}" font-family="${FONT}" fill="${TEXT}" ${attrs}>${escapeXml(s)}</text>`;

async function rasterise(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).flatten({ background: '#ffffff' }).png().toBuffer();
}

/** Bar chart geometry in px (exported for tests): bars stand on y = top + plotH and are plotH tall at yMax. */
export const BAR_LAYOUT = { left: 64, right: 16, top: 60, plotH: 260, bottom: 44, barW: 40, gap: 28 } as const;

export async function barChartPng(chart: BarChart): Promise<Buffer> {
  const { categories, series } = chart;
  for (const s of series) {
    if (s.values.length !== categories.length) {
      throw new Error(`barChart: series "${s.name}" has ${s.values.length} values for ${categories.length} categories`);
    }
  }
  const L = BAR_LAYOUT;
  const values = series.flatMap((s) => s.values).filter((v): v is number => v !== null && Number.isFinite(v));
  const yMax = chart.yMax ?? niceMax(Math.max(0, ...values));
  if (!(yMax > 0)) throw new Error(`barChart: yMax must be > 0, got ${yMax}`);
  // A group is wide enough for its bars and (roughly, ~7 px per char at 12 px) for its label.
  const minGroupW = Math.max(series.length * L.barW + L.gap, ...categories.map((c) => 7 * c.length + 12));
  const legendW = series.length > 1 ? series.reduce((w, s) => w + 30 + 7 * s.name.length, 0) : 0;
  const width = Math.max(L.left + categories.length * minGroupW + L.right, legendW + L.left + L.right, 10 * chart.title.length + 40);
  const height = L.top + L.plotH + L.bottom;
  // When the title or legend sets the width, the groups spread over it.
  const groupW = Math.floor((width - L.left - L.right) / Math.max(1, categories.length));
  const base = L.top + L.plotH;
  // Values are clipped to [0, yMax]; integer edges + crispEdges keep bars flat colour, measurable exactly.
  const yOf = (v: number) => base - Math.round((Math.min(Math.max(v, 0), yMax) / yMax) * L.plotH);

  const parts: string[] = [`<rect width="${width}" height="${height}" fill="#ffffff"/>`];
  parts.push(text(width / 2, 24, chart.title, 'font-size="16" font-weight="bold" text-anchor="middle"'));
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const v = (yMax * i) / ticks;
    const y = yOf(v) + 0.5;
    parts.push(`<line x1="${L.left}" x2="${width - L.right}" y1="${y}" y2="${y}" stroke="${i ? '#dddddd' : TEXT}" shape-rendering="crispEdges"/>`);
    parts.push(text(L.left - 6, y + 4, String(Number(v.toFixed(3))), 'font-size="11" text-anchor="end"'));
  }
  parts.push(`<line x1="${L.left - 0.5}" x2="${L.left - 0.5}" y1="${L.top}" y2="${base}" stroke="${TEXT}" shape-rendering="crispEdges"/>`);
  parts.push(text(16, L.top + L.plotH / 2, chart.yLabel, `font-size="12" text-anchor="middle" transform="rotate(-90 16 ${L.top + L.plotH / 2})"`));

  categories.forEach((cat, c) => {
    const gx = L.left + c * groupW + Math.round((groupW - series.length * L.barW) / 2);
    series.forEach((s, k) => {
      const v = s.values[c];
      const x = gx + k * L.barW;
      const label = (y: number, str: string) => text(x + L.barW / 2, y - 4, str, 'font-size="11" text-anchor="middle"');
      if (v === null || !Number.isFinite(v)) return void parts.push(label(base, 'n/a'));
      const y = yOf(v);
      // Bars of one group touch; a 1 px white gap would blur the series colours at small sizes.
      parts.push(`<rect x="${x}" y="${y}" width="${L.barW}" height="${base - y}" fill="${PALETTE[k % PALETTE.length]}" shape-rendering="crispEdges"/>`);
      parts.push(label(y, v.toFixed(3)));
    });
    parts.push(text(L.left + c * groupW + groupW / 2, base + 20, cat, 'font-size="12" text-anchor="middle"'));
  });

  if (series.length > 1) {
    let x = width - L.right - legendW;
    series.forEach((s, k) => {
      parts.push(`<rect x="${x}" y="36" width="12" height="12" fill="${PALETTE[k % PALETTE.length]}"/>`);
      parts.push(text(x + 16, 46, s.name, 'font-size="12"'));
      x += 30 + 7 * s.name.length;
    });
  }
  return rasterise(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${parts.join('')}</svg>`);
}

/** Height of the column-title strip above the example grid. */
export const HEADER_H = 24;

/** Default upscaling: the smallest integer that makes a cell at least 128 px on its long side. */
export function defaultScale(width: number, height: number): number {
  return Math.max(1, Math.ceil(128 / Math.max(width, height)));
}

/** Nearest-neighbour integer upscaling of RGB bytes (each source row built once, copied s times). */
function upscale(rgb: Uint8Array, w: number, h: number, s: number): Uint8Array {
  if (s === 1) return rgb;
  const W = w * s;
  const out = new Uint8Array(W * h * s * 3);
  for (let y = 0; y < h; y++) {
    const row = out.subarray(y * s * W * 3, (y * s + 1) * W * 3);
    for (let x = 0; x < W; x++) row.set(rgb.subarray((y * w + Math.floor(x / s)) * 3, (y * w + Math.floor(x / s)) * 3 + 3), x * 3);
    for (let k = 1; k < s; k++) out.set(row, (y * s + k) * W * 3);
  }
  return out;
}

/**
 * Header | rows of [image + truth boxes (green), per method: jet overlay + its box (red) + truth].
 * width = (1 + methods) * W*scale + (methods + 2) * SEPARATOR,
 * height = HEADER_H + rows * H*scale + (rows + 1) * SEPARATOR.
 * Boxes follow log/maskGrid.ts: a 1 px rectangle on the outermost output pixels of the region
 * (x1/y1 exclusive, clamped to the cell), truth first, so the prediction is drawn on top. They are
 * SVG strokes composited with the header text, since maskGrid's pixel box drawer is not exported.
 */
export async function exampleGridPng(rows: ExampleRow[], opts: { methods: string[]; scale?: number }): Promise<Buffer> {
  if (rows.length === 0) throw new Error('exampleGrid: no rows');
  const { width: w, height: h } = rows[0]!;
  const scale = opts.scale ?? defaultScale(w, h);
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`exampleGrid: scale must be a positive integer, got ${scale}`);
  rows.forEach((r, i) => {
    if (r.width !== w || r.height !== h || r.image.length !== w * h * 3) {
      throw new Error(`exampleGrid: row ${i} is ${r.width}x${r.height} with ${r.image.length} bytes, expected ${w}x${h}x3`);
    }
    if (r.cells.length !== opts.methods.length) throw new Error(`exampleGrid: row ${i} has ${r.cells.length} cells for ${opts.methods.length} methods`);
    r.cells.forEach((c, j) => {
      if (c.mask.length !== w * h) throw new Error(`exampleGrid: row ${i} mask ${j} has ${c.mask.length} values, expected ${w * h}`);
    });
  });
  const cw = w * scale;
  const ch = h * scale;
  const body = tile(
    rows.map((r) => [r.image, ...r.cells.map((c) => overlay(r.image, colorize(c.mask, 'jet'), 0.5))].map((rgb) => upscale(rgb, w, h, scale))),
    cw,
    ch,
  );

  const svg: string[] = [`<rect width="${body.width}" height="${HEADER_H}" fill="#ffffff"/>`];
  ['image', ...opts.methods].forEach((name, c) => {
    // Shrink long titles to the cell (~0.6 em per char) rather than let them run into the neighbour.
    const size = Math.min(13, (cw - 4) / (0.6 * Math.max(1, name.length)));
    const cx = SEPARATOR + c * (cw + SEPARATOR) + cw / 2;
    svg.push(text(cx, HEADER_H / 2 + size * 0.36, name, `font-size="${size.toFixed(1)}" text-anchor="middle"`));
  });
  const origin = (r: number, c: number): [number, number] => [SEPARATOR + c * (cw + SEPARATOR), HEADER_H + SEPARATOR + r * (ch + SEPARATOR)];
  const rect = (r: number, c: number, b: Box, color: readonly number[]) => {
    const clamp = (v: number, hi: number) => Math.min(Math.max(v, 0), hi - 1);
    const [x0, y0, x1, y1] = [
      clamp(Math.round(b[0]) * scale, cw),
      clamp(Math.round(b[1]) * scale, ch),
      clamp(Math.round(b[2]) * scale - 1, cw),
      clamp(Math.round(b[3]) * scale - 1, ch),
    ];
    if (x1 < x0 || y1 < y0) return;
    const [ox, oy] = origin(r, c);
    // Pixel centres (+0.5) with a 1 px stroke and no anti-aliasing colour exactly the edge pixels.
    const [a, bb, cc, d] = [ox + x0 + 0.5, oy + y0 + 0.5, ox + x1 + 0.5, oy + y1 + 0.5];
    svg.push(
      `<path d="M${a} ${bb}H${cc}V${d}H${a}Z" fill="none" stroke="rgb(${color.join(',')})" stroke-width="1" stroke-linecap="square" shape-rendering="crispEdges"/>`,
    );
  };
  rows.forEach((row, r) => {
    if (row.title) {
      const [ox, oy] = origin(r, 0);
      // White text with a dark outline reads on any image; drawn first so boxes stay on top.
      svg.push(
        `<text x="${ox + 3}" y="${oy + ch - 4}" font-family="${FONT}" font-size="11" fill="#ffffff" stroke="#000000" stroke-width="2.5" paint-order="stroke">${escapeXml(row.title)}</text>`,
      );
    }
    for (let c = 0; c <= row.cells.length; c++) {
      for (const t of row.truth) rect(r, c, t, GT_COLOR);
      const box = c > 0 ? row.cells[c - 1]!.box : null;
      if (box) rect(r, c, box, PRED_COLOR);
    }
  });
  const overlaySvg = `<svg xmlns="http://www.w3.org/2000/svg" width="${body.width}" height="${body.height + HEADER_H}">${svg.join('')}</svg>`;
  const raw = Buffer.from(body.rgb.buffer, body.rgb.byteOffset, body.rgb.byteLength);
  const composed = await sharp(raw, { raw: { width: body.width, height: body.height, channels: 3 } })
    .extend({ top: HEADER_H, background: '#ffffff' })
    .composite([{ input: Buffer.from(overlaySvg), top: 0, left: 0 }])
    .raw()
    .toBuffer({ resolveWithObject: true });
  // Composite adds an alpha channel; the figure is opaque RGB like the other grids.
  return sharp(composed.data, { raw: composed.info }).removeAlpha().png().toBuffer();
}
