import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadMnist, mnistPaths, readIdxImages, readIdxLabels } from '../src/data/mnist.js';
import { clutteredCachePath, generateCluttered, loadCluttered, resizeBilinear, type ClutteredSet } from '../src/data/clutteredMnist.js';
import { batchIndices, toBatch } from '../src/data/batches.js';
import { denormalize } from '../src/data/normalize.js';
import { IMAGENET_MEAN, IMAGENET_STD, GRAY_MEAN, GRAY_STD } from '../src/data/preprocess.js';
import { Rng } from '../src/util/rng.js';
import { repoRoot } from './helpers/python.js';

await tf.setBackend('cpu');

function box(set: ClutteredSet, i: number): [number, number, number, number] {
  const b = set.boxes;
  return [b[4 * i]!, b[4 * i + 1]!, b[4 * i + 2]!, b[4 * i + 3]!];
}

function sameSet(a: ClutteredSet, b: ClutteredSet): void {
  assert.equal(a.n, b.n);
  assert.equal(a.size, b.size);
  assert.ok(Buffer.from(a.images).equals(Buffer.from(b.images)), 'images differ');
  assert.deepEqual(Array.from(a.labels), Array.from(b.labels));
  assert.deepEqual(Array.from(a.boxes), Array.from(b.boxes));
}

test('MNIST IDX: sizes, label range and counts', () => {
  for (const [split, n] of [
    ['train', 60000],
    ['test', 10000],
  ] as const) {
    const m = loadMnist(split);
    assert.equal(m.n, n);
    assert.equal(m.images.length, n * 28 * 28);
    assert.equal(m.labels.length, n);
    const counts = new Array(10).fill(0);
    for (const l of m.labels) {
      assert.ok(l <= 9);
      counts[l]++;
    }
    assert.equal(
      counts.reduce((s, c) => s + c, 0),
      n,
    );
    for (const c of counts) assert.ok(c > n / 20, `every digit is well represented (${counts})`);
  }
  // Known facts of the published files: first train labels 5 0 4 1 9, first t10k label 7;
  // train has 6742 ones, t10k 1135 ones.
  const tr = loadMnist('train');
  assert.deepEqual(Array.from(tr.labels.subarray(0, 5)), [5, 0, 4, 1, 9]);
  assert.equal(loadMnist('test').labels[0], 7);
  assert.equal(tr.labels.filter((l) => l === 1).length, 6742);
  assert.equal(loadMnist('test').labels.filter((l) => l === 1).length, 1135);
  // Images are bytes with a black border and ink in the middle.
  let corner = 0;
  let centre = 0;
  for (let i = 0; i < 1000; i++) {
    corner += tr.images[i * 784]!;
    centre += tr.images[i * 784 + 14 * 28 + 14]!;
  }
  assert.equal(corner, 0);
  assert.ok(centre > 1000 * 50);
});

test('MNIST IDX: truncated / bad-magic files give errors naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idx-'));
  try {
    const p = mnistPaths('test');
    const truncated = join(dir, 'truncated-images-idx3-ubyte');
    writeFileSync(truncated, readFileSync(p.images).subarray(0, 16 + 784 * 10 + 100));
    assert.throws(
      () => readIdxImages(truncated),
      (e: Error) => e.message.includes(truncated) && /truncated/.test(e.message),
    );
    const shortHeader = join(dir, 'short-labels');
    writeFileSync(shortHeader, readFileSync(p.labels).subarray(0, 6));
    assert.throws(
      () => readIdxLabels(shortHeader),
      (e: Error) => e.message.includes(shortHeader) && /truncated/.test(e.message),
    );
    // A label file is not an image file.
    const swapped = join(dir, 'labels-as-images');
    writeFileSync(swapped, readFileSync(p.labels));
    assert.throws(
      () => readIdxImages(swapped),
      (e: Error) => e.message.includes(swapped) && /magic/.test(e.message),
    );
    // Intact files read fine through the same functions.
    assert.equal(readIdxLabels(p.labels).length, 10000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bilinear resize: identity, constant images, and a hand-checked 2->4 upscale', () => {
  const src = Uint8Array.from({ length: 28 * 28 }, (_, i) => (i * 37) % 256);
  assert.deepEqual(resizeBilinear(src, 28, 28), src);
  assert.ok(resizeBilinear(new Uint8Array(28 * 28).fill(200), 28, 17).every((v) => v === 200));
  // Half-pixel centres: out coords 0..3 -> src -0.25(clamp 0), 0.25, 0.75, 1.25(clamp 1).
  const up = resizeBilinear(Uint8Array.from([0, 100, 0, 100]), 2, 4);
  assert.deepEqual(Array.from(up.subarray(0, 4)), [0, 25, 75, 100]);
});

test('generation is deterministic from the seed', () => {
  const a = generateCluttered({ count: 64, seed: 7 });
  const b = generateCluttered({ count: 64, seed: 7 });
  sameSet(a, b);
  const c = generateCluttered({ count: 64, seed: 8 });
  assert.ok(!Buffer.from(a.images).equals(Buffer.from(c.images)));
  assert.notDeepEqual(Array.from(a.boxes), Array.from(c.boxes));
  // A prefix of a longer set is the shorter set (per-sample seeding).
  const d = generateCluttered({ count: 100, seed: 7 });
  assert.ok(Buffer.from(d.images.subarray(0, a.images.length)).equals(Buffer.from(a.images)));
  assert.equal(a.images.length, 64 * 64 * 64);
});

test('boxes: inside the canvas, nonempty, sized like the digit; fragments=0 -> all ink in the box', () => {
  const size = 64;
  const clean = generateCluttered({ count: 300, seed: 3, fragments: 0 });
  for (let i = 0; i < clean.n; i++) {
    const [x0, y0, x1, y1] = box(clean, i);
    assert.ok(0 <= x0 && x0 < x1 && x1 <= size && 0 <= y0 && y0 < y1 && y1 <= size, `box ${i}: ${box(clean, i)}`);
    // The digit occupies a 20..40 px square; its tight box is at most that, and not tiny.
    assert.ok(x1 - x0 <= 40 && y1 - y0 <= 40);
    assert.ok(y1 - y0 >= 10, `box ${i} height ${y1 - y0}`);
    const img = clean.images.subarray(i * size * size, (i + 1) * size * size);
    const edge = [false, false, false, false];
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = img[y * size + x]!;
        if (v === 0) continue;
        assert.ok(x >= x0 && x < x1 && y >= y0 && y < y1, `sample ${i}: ink at (${x},${y}) outside ${box(clean, i)}`);
        if (x === x0) edge[0] = true;
        if (x === x1 - 1) edge[1] = true;
        if (y === y0) edge[2] = true;
        if (y === y1 - 1) edge[3] = true;
      }
    }
    assert.deepEqual(edge, [true, true, true, true], `box ${i} is tight`);
  }

  // Same seed with clutter: identical digits and boxes; inside every box the canvas is unchanged
  // (fragments never touch the box); outside, there is extra ink.
  const cl = generateCluttered({ count: 300, seed: 3, fragments: 4 });
  assert.deepEqual(Array.from(cl.boxes), Array.from(clean.boxes));
  assert.deepEqual(Array.from(cl.labels), Array.from(clean.labels));
  let inkOutside = 0;
  let inkInBox = 0;
  let inkSameArea = 0;
  for (let i = 0; i < cl.n; i++) {
    const [x0, y0, x1, y1] = box(cl, i);
    const o = i * size * size;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = cl.images[o + y * size + x]!;
        if (x >= x0 && x < x1 && y >= y0 && y < y1) {
          assert.equal(v, clean.images[o + y * size + x], `sample ${i} (${x},${y}) changed by clutter`);
          inkInBox += v;
        } else inkOutside += v;
      }
    }
    // Ink of a same-size region elsewhere: the box shifted cyclically by half the canvas.
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) inkSameArea += cl.images[o + ((y + 32) % size) * size + ((x + 32) % size)]!;
    }
  }
  assert.ok(inkOutside > 0);
  assert.ok(inkInBox > 2 * inkSameArea, `digit dominates its box: ${inkInBox} vs ${inkSameArea}`);
  // Each sample got clutter on average: ~4 fragments * a few dozen ink pixels.
  assert.ok(inkOutside / cl.n > 4 * 10 * 128, `clutter ink per sample ${inkOutside / cl.n}`);
});

test('labels cover 0..9; classes filter keeps only those digits; test split differs from train', () => {
  const s = generateCluttered({ count: 500, seed: 1 });
  const counts = new Array(10).fill(0);
  for (const l of s.labels) counts[l]++;
  for (const c of counts) assert.ok(c >= 20, `label counts ${counts}`);

  const f = generateCluttered({ count: 200, seed: 1, classes: [7, 3, 3] });
  assert.deepEqual(f.options.classes, [3, 7]);
  assert.ok(f.labels.every((l) => l === 3 || l === 7));
  assert.ok(f.labels.some((l) => l === 3) && f.labels.some((l) => l === 7));

  const t = generateCluttered({ count: 50, seed: 1, split: 'test' });
  assert.equal(t.options.split, 'test');
  assert.ok(!Buffer.from(t.images).equals(Buffer.from(s.images.subarray(0, t.images.length))));

  const big = generateCluttered({ count: 20, seed: 2, size: 96, minDigit: 30, maxDigit: 60 });
  assert.equal(big.images.length, 20 * 96 * 96);
  for (let i = 0; i < big.n; i++) {
    const [x0, y0, x1, y1] = box(big, i);
    assert.ok(x1 <= 96 && y1 <= 96 && y1 - y0 >= 15);
    assert.ok(x0 >= 0 && y0 >= 0);
  }
  assert.throws(() => generateCluttered({ count: 1, maxDigit: 65 }), /maxDigit/);
});

test('cache: round trip, and a corrupted file is regenerated with a warning', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cmnist-'));
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (...a: unknown[]) => void warnings.push(a.join(' '));
  try {
    const opts = { count: 120, seed: 11 };
    const first = await loadCluttered(opts, dir);
    const path = clutteredCachePath(opts, dir);
    assert.ok(statSync(path).size > 120 * 64 * 64);
    assert.deepEqual(readdirSync(dir), [path.split('/').pop()], 'no temp files left behind');
    sameSet(first, generateCluttered(opts));
    const second = await loadCluttered(opts, dir);
    sameSet(first, second);
    assert.equal(warnings.length, 0);
    assert.deepEqual(second.options, first.options);
    // Different options -> different file.
    assert.notEqual(clutteredCachePath({ count: 120, seed: 12 }, dir), path);

    // Flip one image byte: checksum mismatch -> regenerate.
    const buf = readFileSync(path);
    buf[buf.length - 120 * 20 - 5]! ^= 0xff;
    writeFileSync(path, buf);
    const third = await loadCluttered(opts, dir);
    sameSet(first, third);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /checksum/);
    assert.ok(warnings[0]!.includes(path));
    // The file was rewritten and is valid again.
    await loadCluttered(opts, dir);
    assert.equal(warnings.length, 1);

    // Truncated file -> regenerate.
    writeFileSync(path, readFileSync(path).subarray(0, 1000));
    sameSet(first, await loadCluttered(opts, dir));
    assert.equal(warnings.length, 2);
  } finally {
    console.warn = warn;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('toBatch: ImageNet normalisation of one pixel by hand; labels and boxes; denormalize inverts', () => {
  const set = generateCluttered({ count: 10, seed: 5 });
  const idx = [4, 2];
  const b = toBatch(set, idx);
  assert.deepEqual(b.x.shape, [2, 64, 64, 3]);
  assert.equal(b.x.dtype, 'float32');
  assert.equal(b.y.dtype, 'int32');
  assert.deepEqual(Array.from(b.y.dataSync()), [set.labels[4], set.labels[2]]);
  assert.deepEqual(Array.from(b.boxes), [...box(set, 4), ...box(set, 2)]);
  // A pixel with ink: the centre of sample 2's box row.
  const [x0, y0, x1, y1] = box(set, 2);
  let px = -1;
  let py = -1;
  for (let y = y0; y < y1 && px < 0; y++)
    for (let x = x0; x < x1; x++)
      if (set.images[2 * 4096 + y * 64 + x]! > 100) {
        px = x;
        py = y;
        break;
      }
  assert.ok(px >= 0);
  const v = set.images[2 * 4096 + py * 64 + px]!;
  const xs = b.x.arraySync();
  for (let c = 0; c < 3; c++) {
    const want = (v / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
    assert.ok(Math.abs(xs[1]![py]![px]![c]! - want) < 1e-6, `channel ${c}: ${xs[1]![py]![px]![c]} vs ${want}`);
    // A black pixel.
    assert.ok(Math.abs(xs[0]![0]![0]![c]! - -IMAGENET_MEAN[c]! / IMAGENET_STD[c]!) < 1e-6);
  }
  const back = denormalize(b.x);
  const bd = back.dataSync();
  for (let p = 0; p < 64 * 64; p++) {
    const v2 = set.images[2 * 4096 + p]! / 255;
    for (let c = 0; c < 3; c++) assert.ok(Math.abs(bd[(64 * 64 + p) * 3 + c]! - v2) < 1e-5);
  }

  const g = toBatch(set, [3], { channels: 1 });
  assert.deepEqual(g.x.shape, [1, 64, 64, 1]);
  const gv = set.images[3 * 4096 + 64 * 10 + 10]!;
  assert.ok(Math.abs(g.x.dataSync()[64 * 10 + 10]! - (gv / 255 - GRAY_MEAN) / GRAY_STD) < 1e-6);
  assert.throws(() => toBatch(set, [10]), /out of range/);
  tf.dispose([b.x, b.y, back, g.x, g.y]);
});

test('batchIndices: seeded shuffle, full coverage, drop-last', () => {
  const epoch = (seed: number, shuffle = true, dropLast = true) => [...batchIndices(23, 5, new Rng(seed), shuffle, dropLast)];
  const a = epoch(1);
  assert.equal(a.length, 4);
  assert.ok(a.every((b) => b.length === 5));
  const flat = a.flat();
  assert.equal(new Set(flat).size, 20);
  assert.ok(flat.every((i) => i >= 0 && i < 23));
  assert.deepEqual(epoch(1), a);
  assert.notDeepEqual(epoch(2), a);
  assert.notDeepEqual(flat, [...Array(20).keys()]);
  const seq = epoch(1, false, false);
  assert.equal(seq.length, 5);
  assert.deepEqual(seq.flat(), [...Array(23).keys()]);
  assert.deepEqual(seq[4], [20, 21, 22]);
  // Consecutive epochs from one Rng differ.
  const rng = new Rng(9);
  const e1 = [...batchIndices(50, 10, rng)].flat();
  const e2 = [...batchIndices(50, 10, rng)].flat();
  assert.notDeepEqual(e1, e2);
  assert.deepEqual(
    [...e1].sort((p, q) => p - q),
    [...Array(50).keys()],
  );
});

test('data scripts: --help prints every option of the script; an unknown option or a count that is no whole number exits 2 naming it', () => {
  const options: Record<string, string[]> = {
    'make-cluttered-mnist.mjs': ['--split', '--count', '--fragments', '--cache-dir', '--preview'],
    'make-photo-objects.mjs': ['--out', '--sources', '--train-per-class', '--area', '--seed', '--val-on-train-backgrounds'],
  };
  for (const [script, flags] of Object.entries(options)) {
    const path = join(repoRoot, 'data', script);
    const help = spawnSync(process.execPath, [path, '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0, `${script} --help: ${help.stderr}`);
    for (const flag of flags) assert.ok(help.stdout.includes(flag), `${script} --help lacks ${flag}:\n${help.stdout}`);
    const bad = spawnSync(process.execPath, [path, '--no-such-option'], { encoding: 'utf8' });
    assert.equal(bad.status, 2, `${script} --no-such-option exited ${bad.status}`);
    assert.match(bad.stderr, /no-such-option/);
    const flag = script === 'make-cluttered-mnist.mjs' ? '--count' : '--train-per-class';
    const fraction = spawnSync(process.execPath, [path, flag, '1.5'], { encoding: 'utf8' });
    assert.equal(fraction.status, 2, `${script} ${flag} 1.5 exited ${fraction.status}: ${fraction.stderr}`);
    assert.match(fraction.stderr, new RegExp(`^${script.replace('.mjs', '')}: ${flag} must be an integer >= 0, got '1.5'\\n$`));
  }
});
