/**
 * `casm explain` end to end: a tiny CASM checkpoint trained here, real cluttered digits as PNG
 * files (plus one file that is not an image), every method; then the bad invocations.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { loadCluttered } from '../src/data/clutteredMnist.js';
import { SEPARATOR } from '../src/explain/display.js';
import { METHODS } from '../src/explain/explainCommand.js';
import { useTestBackend } from './helpers/backend.js';
import { trainTinyRun } from './helpers/tinyRun.js';

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'casm-explain-cli-'));
const run = join(tmp, 'run');
const SIZE = 64;
const images = [join(tmp, 'digit-a.png'), join(tmp, 'broken.jpg'), join(tmp, 'digit-b.png')];
let backend = '';

before(async () => {
  backend = await useTestBackend();
  await trainTinyRun(run, { inputSize: SIZE, decoderWidth: 64 });
  const digits = await loadCluttered({ split: 'test', count: 2, size: SIZE, seed: 5 });
  for (const [k, file] of [images[0], images[2]].entries()) {
    const gray = Buffer.from(digits.images.subarray(k * SIZE * SIZE, (k + 1) * SIZE * SIZE));
    await sharp(gray, { raw: { width: SIZE, height: SIZE, channels: 1 } })
      .png()
      .toFile(file);
  }
  writeFileSync(images[1], 'this is not a JPEG');
});
after(() => rmSync(tmp, { recursive: true, force: true }));

function casm(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, 'explain', '--backend', backend === 'cpu' ? 'cpu' : 'tensorflow', ...args], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

async function rgbOf(file: string) {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

test('every method: heatmap and overlay per image, one grid; the undecodable file is reported and skipped', async () => {
  const out = join(tmp, 'out');
  const { code, out: stdout, err } = casm('--checkpoint', run, '--out', out, '--method', 'all', '--samples', '2', ...images);
  assert.equal(code, 0, err);
  assert.match(stdout, /skipping .*broken\.jpg: cannot decode it/);
  assert.match(stdout, /Grad-CAM layer layer4_0_out/);
  for (const name of ['digit-a', 'digit-b']) {
    for (const method of METHODS) {
      for (const kind of ['heatmap', 'overlay']) {
        const file = join(out, `${name}-${method}-${kind}.png`);
        assert.ok(existsSync(file), `${file} is missing`);
        const meta = await sharp(file).metadata();
        assert.deepEqual([meta.width, meta.height], [SIZE, SIZE], file);
      }
    }
  }
  assert.ok(!existsSync(join(out, 'broken-casm-heatmap.png')));
  // Rows: 2 images; columns: the image, then one heatmap per method.
  const grid = await rgbOf(join(out, 'grid.png'));
  const cols = 1 + METHODS.length;
  assert.deepEqual([grid.width, grid.height], [cols * SIZE + (cols + 1) * SEPARATOR, 2 * SIZE + 3 * SEPARATOR]);
  // The second row's Grad-CAM cell is digit-b's Grad-CAM heatmap, and the overlay blends it with the digit.
  const heat = await rgbOf(join(out, 'digit-b-gradcam-heatmap.png'));
  const overlay = await rgbOf(join(out, 'digit-b-gradcam-overlay.png'));
  const digit = await rgbOf(images[2]);
  const x0 = SEPARATOR + (1 + METHODS.indexOf('gradcam')) * (SIZE + SEPARATOR);
  const y0 = 2 * SEPARATOR + SIZE;
  for (let y = 0; y < SIZE; y += 7) {
    for (let x = 0; x < SIZE; x += 5) {
      const g = ((y0 + y) * grid.width + x0 + x) * 3;
      const p = (y * SIZE + x) * 3;
      assert.deepEqual([...grid.data.subarray(g, g + 3)], [...heat.data.subarray(p, p + 3)], `grid pixel (${x}, ${y})`);
      const gray = digit.data[(y * SIZE + x) * digit.channels];
      for (let c = 0; c < 3; c++) {
        const expected = Math.round(0.5 * gray + 0.5 * heat.data[p + c]);
        assert.ok(Math.abs(overlay.data[p + c] - expected) <= 1, `overlay pixel (${x}, ${y}): ${overlay.data[p + c]}, expected ${expected}`);
      }
    }
  }
});

test('a folder argument explains the images in it (as casm mask does)', () => {
  const folder = join(tmp, 'folder');
  mkdirSync(folder);
  for (const f of [images[0]!, images[2]!]) copyFileSync(f, join(folder, basename(f)));
  const out = join(tmp, 'out-folder');
  const { code, err } = casm('--checkpoint', run, '--out', out, '--method', 'vanilla', folder);
  assert.equal(code, 0, err);
  for (const name of ['digit-a', 'digit-b']) assert.ok(existsSync(join(out, `${name}-vanilla-heatmap.png`)), name);
});

test('bad invocations: unknown method or layer lists the valid ones (exit 2); target out of range is named (exit 2); nothing decodable (exit 1)', () => {
  const out = join(tmp, 'bad');
  let r = casm('--checkpoint', run, '--out', out, '--method', 'vanilla,saliency', images[0]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /unknown method 'saliency': valid methods are casm, gradcam, smoothgrad, vanilla, gradxinput, all/);
  r = casm('--checkpoint', run, '--out', out, '--method', 'gradcam', '--layer', 'layer9', images[0]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--layer layer9: unknown layer; valid layers are conv1_pad, conv1, bn1, relu, maxpool_pad, maxpool, layer1_0_conv1, .*, layer4_0_out$/m);
  r = casm('--checkpoint', run, '--out', out, '--method', 'vanilla', '--target', '10', images[0]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /target class 10 is outside the model's range 0\.\.9/);
  r = casm('--checkpoint', run, '--out', out, '--method', 'vanilla', images[1]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.out, /skipping .*broken\.jpg/);
  assert.match(r.err, /none of the 1 image file\(s\) could be decoded/);
});
