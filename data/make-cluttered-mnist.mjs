#!/usr/bin/env node
// Generates (or validates the cached copy of) a cluttered-MNIST set into data/cache/.
// Needs the compiled project: run `npm run build` first.
//
//   node data/make-cluttered-mnist.mjs [--split train|test] [--count 20000] [--size 64] [--seed 0]
//        [--fragments 4] [--min-digit 20] [--max-digit 40] [--classes 0,1,2] [--cache-dir DIR]
//        [--preview out.png]      (a grid of the first 32 samples, boxes in green, scale 2)
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { intOption, scriptArgs } from './scriptArgs.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const values = scriptArgs(import.meta.url, {
  split: { type: 'string', default: 'train' },
  count: { type: 'string', default: '20000' },
  size: { type: 'string', default: '64' },
  seed: { type: 'string', default: '0' },
  fragments: { type: 'string', default: '4' },
  'min-digit': { type: 'string', default: '20' },
  'max-digit': { type: 'string', default: '40' },
  classes: { type: 'string' },
  'cache-dir': { type: 'string' },
  preview: { type: 'string' },
});
const lib = join(root, 'dist', 'src', 'data', 'clutteredMnist.js');
if (!existsSync(lib)) {
  console.error(`${lib} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const { loadCluttered, clutteredCachePath, defaultCacheDir } = await import(lib);

const num = (k) => intOption(import.meta.url, values, k);
const opts = {
  split: values.split,
  count: num('count'),
  size: num('size'),
  seed: num('seed'),
  fragments: num('fragments'),
  minDigit: num('min-digit'),
  maxDigit: num('max-digit'),
  ...(values.classes ? { classes: values.classes.split(',').map(Number) } : {}),
};
const dir = values['cache-dir'] ?? defaultCacheDir();
const path = clutteredCachePath(opts, dir);
const cached = existsSync(path);
const t0 = performance.now();
const set = await loadCluttered(opts, dir);
const ms = performance.now() - t0;
const counts = new Array(10).fill(0);
for (const l of set.labels) counts[l]++;
console.log(`${cached ? 'loaded' : 'generated'} ${set.n} samples ${set.size}x${set.size} (${opts.split}) in ${ms.toFixed(0)} ms -> ${path}`);
console.log(`label counts 0..9: ${counts.join(' ')}`);

if (values.preview) {
  const tf = await import('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  const { maskGridPng } = await import(join(root, 'dist', 'src', 'log', 'maskGrid.js'));
  const rows = Math.min(32, set.n);
  const s = set.size;
  const x = tf.tensor4d(
    Float32Array.from(set.images.subarray(0, rows * s * s), (v) => v / 255),
    [rows, s, s, 1],
  );
  const m = tf.ones([rows, s, s, 1]);
  const { png, width, height } = await maskGridPng(x, m, { maxRows: rows, scale: 2, gtBoxes: set.boxes });
  writeFileSync(values.preview, png);
  console.log(`preview ${width}x${height} -> ${values.preview}`);
  tf.dispose([x, m]);
}
