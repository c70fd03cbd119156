import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { BAR_LAYOUT, barChartPng, exampleGridPng, HEADER_H, niceMax, PALETTE, type ExampleRow } from '../src/eval/figures.js';
import { SEPARATOR } from '../src/explain/display.js';
import { GT_COLOR, PRED_COLOR } from '../src/log/maskGrid.js';

// Samples for a human to look at; the tests only assert on pixels.
const FIGS = '/tmp/figs';
mkdirSync(FIGS, { recursive: true });

interface Img {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
}

async function decode(png: Buffer): Promise<Img> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

const px = (img: Img, x: number, y: number) => Array.from(img.data.subarray((y * img.width + x) * img.channels, (y * img.width + x) * img.channels + 3));
const hex = (c: string) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
const is = (p: number[], c: readonly number[]) => p.every((v, i) => Math.abs(v - c[i]!) <= 2);

/** Bars of colour c: for each run of columns that hold c, the length of c's run in its middle column. */
function barHeights(img: Img, c: readonly number[]): number[] {
  const count = (x: number) => Array.from({ length: img.height }, (_, y) => is(px(img, x, y), c)).filter(Boolean).length;
  const runs: [number, number][] = [];
  for (let x = 0; x < img.width; x++) {
    if (count(x) === 0) continue;
    const last = runs[runs.length - 1];
    if (last && last[1] === x - 1) last[1] = x;
    else runs.push([x, x]);
  }
  return runs.map(([a, b]) => count(Math.floor((a + b) / 2)));
}

/** Pixels darker than mid-gray in a band of rows: text (and axis lines) only. */
function darkPixels(img: Img, y0: number, y1: number): number {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = 0; x < img.width; x++) if (px(img, x, y).every((v) => v < 100)) n++;
  return n;
}

test('niceMax: rates get a [0, 1] axis, larger values a round top', () => {
  assert.equal(niceMax(0), 1);
  assert.equal(niceMax(0.37), 1);
  assert.equal(niceMax(1), 1);
  assert.equal(niceMax(1.3), 2);
  assert.equal(niceMax(2.2), 2.5);
  assert.equal(niceMax(37), 50);
  assert.equal(niceMax(100), 100);
});

test('bar chart: heights proportional to values, null draws no bar, text renders', async () => {
  const buf = await barChartPng({
    title: 'Localisation error per method',
    yLabel: 'LE',
    categories: ['casm', 'gradcam', 'smoothgrad'],
    series: [{ name: 'LE', values: [0.25, null, 0.75] }],
  });
  writeFileSync(`${FIGS}/bar_single.png`, buf);
  const img = await decode(buf);
  assert.equal(img.height, BAR_LAYOUT.top + BAR_LAYOUT.plotH + BAR_LAYOUT.bottom);
  const heights = barHeights(img, hex(PALETTE[0]!));
  assert.equal(heights.length, 2, `two bars for three categories, one null (got ${heights})`);
  // Default axis is [0, 1]: 0.25 -> a quarter of the plot.
  assert.ok(Math.abs(heights[0]! - 0.25 * BAR_LAYOUT.plotH) <= 1, `0.25 bar is ${heights[0]} px`);
  assert.ok(Math.abs(heights[1]! - 3 * heights[0]!) <= 2, `heights ${heights} not 1:3`);
  // Title band: fails on a machine where librsvg finds no font (the figure would be unlabelled).
  assert.ok(darkPixels(img, 0, 32) > 100, 'title text rendered');
  const untitled = await decode(await barChartPng({ title: '', yLabel: '', categories: ['a'], series: [{ name: 's', values: [0.5] }] }));
  assert.equal(darkPixels(untitled, 0, 32), 0);
});

test('bar chart: yMax is honoured and values above it are clipped to the plot', async () => {
  const img = await decode(await barChartPng({ title: 't', yLabel: 'y', categories: ['a', 'b'], series: [{ name: 's', values: [1, 4] }], yMax: 2 }));
  const [a, b] = barHeights(img, hex(PALETTE[0]!));
  assert.ok(Math.abs(a! - BAR_LAYOUT.plotH / 2) <= 1, `1 of 2 is ${a} px`);
  assert.equal(b, BAR_LAYOUT.plotH);
});

test('grouped bar chart: one bar per series in each group, both colours, escaped labels', async () => {
  const buf = await barChartPng({
    title: 'LE on seen vs unseen classes <per split> & "friends"',
    yLabel: 'localisation error',
    categories: ['F', 'F1', 'F2', 'F3'],
    series: [
      { name: 'seen', values: [0.31, 0.42, 0.5, 0.6] },
      { name: 'unseen', values: [0.33, null, 0.55, 0.9] },
    ],
  });
  writeFileSync(`${FIGS}/bar_grouped.png`, buf);
  const img = await decode(buf);
  // Bars are tall runs; the 12 px legend swatches are filtered out by height.
  const seen = barHeights(img, hex(PALETTE[0]!)).filter((h) => h > 20);
  const unseen = barHeights(img, hex(PALETTE[1]!)).filter((h) => h > 20);
  assert.equal(seen.length, 4);
  assert.equal(unseen.length, 3);
  assert.ok(Math.abs(unseen[2]! - 0.9 * BAR_LAYOUT.plotH) <= 1);
});

test('bar chart: a series with the wrong number of values is rejected', async () => {
  await assert.rejects(barChartPng({ title: '', yLabel: '', categories: ['a', 'b'], series: [{ name: 's', values: [1] }] }), /2 categories/);
});

// A 10x8 gray image, masks 1 on the left half and 0 on the right, hand-placed boxes.
const W = 10;
const H = 8;
const gray = new Uint8Array(W * H * 3).fill(100);
const halfMask = Float32Array.from({ length: W * H }, (_, p) => (p % W < W / 2 ? 1 : 0));
const truth: [number, number, number, number] = [2, 1, 6, 5];
const pred: [number, number, number, number] = [1, 2, 9, 7];
const rows: ExampleRow[] = [
  {
    image: gray,
    width: W,
    height: H,
    truth: [truth],
    cells: [
      { mask: halfMask, box: pred },
      { mask: new Float32Array(W * H), box: null },
    ],
  },
  {
    image: gray,
    width: W,
    height: H,
    truth: [],
    cells: [
      { mask: halfMask, box: null },
      { mask: halfMask, box: [0, 0, W, H] },
    ],
  },
];
const methods = ['casm', 'gradcam'];

test('example grid: layout, box outlines at their pixels, overlay follows the mask', async () => {
  const s = 3;
  const img = await decode(await exampleGridPng(rows, { methods, scale: s }));
  assert.equal(img.channels, 3);
  assert.equal(img.width, 3 * W * s + 4 * SEPARATOR);
  assert.equal(img.height, HEADER_H + 2 * H * s + 3 * SEPARATOR);
  assert.ok(darkPixels(img, 0, HEADER_H) > 50, 'column titles rendered');

  const at = (r: number, c: number, x: number, y: number) =>
    px(img, SEPARATOR + c * (W * s + SEPARATOR) + x, HEADER_H + SEPARATOR + r * (H * s + SEPARATOR) + y);
  // Outline of [x0,y0,x1,y1] at scale s: pixels x0*s .. x1*s-1 (inclusive), likewise y.
  const edges = (b: number[]) => {
    const [x0, y0, x1, y1] = [b[0]! * s, b[1]! * s, b[2]! * s - 1, b[3]! * s - 1];
    const mx = Math.floor((x0 + x1) / 2);
    const my = Math.floor((y0 + y1) / 2);
    return {
      on: [
        [x0, y0],
        [x1, y0],
        [x0, y1],
        [x1, y1],
        [mx, y0],
        [mx, y1],
        [x0, my],
        [x1, my],
      ],
      off: [
        [x0 - 1, my],
        [x1 + 1, my],
        [mx, y0 - 1],
        [mx, y1 + 1],
        [x0 + 1, my],
        [mx, y0 + 1],
      ],
    };
  };
  const gt = edges(truth);
  for (const [x, y] of gt.on) assert.deepEqual(at(0, 0, x!, y!), [...GT_COLOR], `truth edge (${x}, ${y}) on the image`);
  for (const [x, y] of gt.off) assert.deepEqual(at(0, 0, x!, y!), [100, 100, 100], `plain image at (${x}, ${y})`);
  const pr = edges(pred);
  for (const [x, y] of pr.on) assert.deepEqual(at(0, 1, x!, y!), [...PRED_COLOR], `predicted edge (${x}, ${y})`);
  assert.ok(!is(at(0, 0, pr.on[1]![0]!, pr.on[1]![1]!), PRED_COLOR), 'no predicted box on the image column');
  // The truth's top edge (y = 3) lies above the prediction (y0 = 6): still green on the method cell.
  assert.deepEqual(at(0, 1, gt.on[4]![0]!, gt.on[4]![1]!), [...GT_COLOR]);
  // A box covering the whole image frames the cell's outermost pixels.
  assert.deepEqual(at(1, 2, 0, 0), [...PRED_COLOR]);
  assert.deepEqual(at(1, 2, W * s - 1, H * s - 1), [...PRED_COLOR]);

  // Jet at 1 is [128,0,0], at 0 [0,0,128]; blended half-and-half over gray 100.
  assert.deepEqual(at(1, 1, 1, 10), [114, 50, 50], 'mask 1');
  assert.deepEqual(at(1, 1, W * s - 2, 10), [50, 50, 114], 'mask 0');
  assert.deepEqual(at(1, 0, 1, 10), [100, 100, 100], 'image column is the image');
});

test('example grid: default scale makes cells at least 128 px; bad input is rejected', async () => {
  // Row titles (escaped) sit over the image; here only for the sample a human looks at.
  const buf = await exampleGridPng(
    rows.map((r, i) => ({ ...r, title: `#${i} <cat & dog>` })),
    { methods },
  );
  writeFileSync(`${FIGS}/example_grid.png`, buf);
  const img = await decode(buf);
  const s = Math.ceil(128 / W);
  assert.equal(img.width, 3 * W * s + 4 * SEPARATOR);
  assert.equal(img.height, HEADER_H + 2 * H * s + 3 * SEPARATOR);
  await assert.rejects(exampleGridPng(rows, { methods: ['casm'] }), /2 cells for 1 methods/);
  await assert.rejects(exampleGridPng(rows, { methods, scale: 1.5 }), /positive integer/);
});
