import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadMnist } from '../src/data/mnist.js';
import { colorJitterInPlace, DecodeError, decodeRgb, decodeTransform, probeImage, randomResizedCropParams, transformSample } from '../src/data/decode.js';
import { Problems } from '../src/data/samples.js';
import { IMAGENET_MEAN, IMAGENET_STD, normalizationTable, normalizeBytes } from '../src/data/preprocess.js';
import { Rng } from '../src/util/rng.js';
import { findTorchPython, repoRoot } from './helpers/python.js';

/** An asymmetric real image: MNIST digits 0..2 side by side on a W x H canvas, coloured. */
function canvas(w: number, h: number): Buffer {
  const m = loadMnist('test');
  const rgb = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const d = Math.floor(x / 28);
      const v = d < 3 && y < 28 ? m.images[d * 784 + y * 28 + (x % 28)]! : 0;
      const i = 3 * (y * w + x);
      rgb[i] = v;
      rgb[i + 1] = Math.floor((255 * x) / w); // horizontal ramp: tells left from right
      rgb[i + 2] = Math.floor((255 * y) / h); // vertical ramp: tells top from bottom
    }
  }
  return rgb;
}

const raw = (rgb: Buffer, w: number, h: number) => sharp(rgb, { raw: { width: w, height: h, channels: 3 } });

function maxAbsDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function corr(a: Uint8Array, b: Uint8Array, ch: number): number {
  let n = 0,
    sa = 0,
    sb = 0,
    saa = 0,
    sbb = 0,
    sab = 0;
  for (let i = ch; i < a.length; i += 3) {
    n++;
    sa += a[i]!;
    sb += b[i]!;
    saa += a[i]! * a[i]!;
    sbb += b[i]! * b[i]!;
    sab += a[i]! * b[i]!;
  }
  const cov = sab / n - (sa / n) * (sb / n);
  return cov / Math.sqrt((saa / n - (sa / n) ** 2) * (sbb / n - (sb / n) ** 2));
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

/** Rotates HWC RGB 90 degrees clockwise: out is h wide, w high. */
function rot90cw(d: Uint8Array, w: number, h: number): Uint8Array {
  const out = new Uint8Array(d.length);
  // out(x', y') with x' in [0,h), y' in [0,w): x' = h-1-y, y' = x
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 3 * (x * h + (h - 1 - y));
      const i = 3 * (y * w + x);
      out[o] = d[i]!;
      out[o + 1] = d[i + 1]!;
      out[o + 2] = d[i + 2]!;
    }
  }
  return out;
}

test('decode: grayscale and CMYK JPEGs, RGBA PNG -> 3-channel RGB', async () => {
  const rgb = canvas(84, 40);
  const gray = await raw(rgb, 84, 40).toColourspace('b-w').jpeg({ quality: 95 }).toBuffer();
  assert.equal((await sharp(gray).metadata()).channels, 1);
  const g = await decodeRgb(gray);
  assert.equal(g.data.length, 84 * 40 * 3);
  for (let i = 0; i < g.data.length; i += 3) {
    assert.equal(g.data[i], g.data[i + 1]);
    assert.equal(g.data[i], g.data[i + 2]);
  }

  // CMYK: a pastel digit canvas (mostly inside the CMYK gamut): digit 0 in all channels, digit 1
  // in green, digit 2 in blue, on a 60-gray background
  const m = loadMnist('test');
  const pastel = Buffer.alloc(84 * 28 * 3);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 84; x++) {
      const d = Math.floor(x / 28);
      const v = m.images[d * 784 + y * 28 + (x % 28)]!;
      const i = 3 * (y * 84 + x);
      pastel[i] = Math.round(60 + 0.6 * v);
      pastel[i + 1] = Math.round(60 + 0.6 * (d === 1 ? v : 0));
      pastel[i + 2] = Math.round(60 + 0.6 * (d === 2 ? v : 0));
    }
  }
  const cmyk = await raw(pastel, 84, 28).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  const meta = await sharp(cmyk).metadata();
  assert.equal(meta.space, 'cmyk');
  assert.equal(meta.channels, 4);
  assert.equal((await probeImage(cmyk)).space, 'cmyk');
  const c = await decodeRgb(cmyk);
  assert.equal(c.data.length, 84 * 28 * 3);
  const ref = (await decodeRgb(await raw(pastel, 84, 28).jpeg({ quality: 95 }).toBuffer())).data;
  // through the colour profiles and the CMYK gamut, so not equal: every channel keeps the picture
  // (strong positive correlation; an inverted or channel-swapped CMYK would fail)
  const rs = [0, 1, 2].map((ch) => corr(c.data, ref, ch));
  assert.ok(rs[0]! > 0.95 && rs[1]! > 0.95 && rs[2]! > 0.7, `CMYK channel correlations ${rs}`);
  const mad = meanAbsDiff(c.data, ref);
  assert.ok(mad < 25, `CMYK mean abs diff ${mad}`);

  const rgba = await raw(rgb, 84, 40).ensureAlpha(0.5).png().toBuffer();
  assert.equal((await sharp(rgba).metadata()).channels, 4);
  const a = await decodeRgb(rgba);
  assert.ok(Buffer.from(a.data).equals(rgb), 'RGBA PNG: alpha dropped, colour kept exactly');
});

test('decode: EXIF orientation 6 comes out upright, in decodeRgb and through crops', async () => {
  const w = 84;
  const h = 40;
  const rgb = canvas(w, h);
  const plain = await raw(rgb, w, h).jpeg({ quality: 100 }).toBuffer();
  // same encoder input and settings, only the EXIF tag added: same DCT data
  const tagged = await raw(rgb, w, h).withMetadata({ orientation: 6 }).jpeg({ quality: 100 }).toBuffer();
  assert.equal((await sharp(tagged).metadata()).orientation, 6);
  const info = await probeImage(tagged);
  assert.deepEqual([info.width, info.height, info.orientation], [h, w, 6]);
  const up = await decodeRgb(tagged);
  assert.deepEqual([up.width, up.height], [h, w]);
  const stored = await decodeRgb(plain);
  const expect = rot90cw(stored.data, w, h);
  const d = maxAbsDiff(up.data, expect);
  assert.ok(d <= 3, `upright vs rotated stored pixels: max diff ${d}`);
  // the top-left of the upright image is the stored bottom-left: blue ramp high, green low
  assert.ok(up.data[2]! > 200 && up.data[1]! < 20, `top-left pixel ${up.data.slice(0, 3)}`);

  // crops act on the upright image: compare with the same transform of an upright PNG
  const uprightPng = await raw(Buffer.from(up.data), h, w).png().toBuffer();
  for (const spec of [
    { kind: 'eval' as const, size: 24 },
    { kind: 'val' as const, resize: 32, crop: 24 },
    { kind: 'train' as const, rng: new Rng(5), size: 24 },
  ]) {
    const a = await decodeTransform(tagged, spec.kind === 'train' ? { ...spec, rng: new Rng(5) } : spec);
    const b = await decodeTransform(uprightPng, spec.kind === 'train' ? { ...spec, rng: new Rng(5) } : spec);
    assert.deepEqual(a.geometry, b.geometry);
    const md = maxAbsDiff(a.data as Uint8Array, b.data as Uint8Array);
    assert.ok(md <= 3, `${spec.kind}: EXIF path vs upright PNG max diff ${md}`);
  }
});

test('decode: pixel limit refuses a huge header; empty, corrupt and truncated input give DecodeError', async () => {
  const small = await raw(canvas(84, 40), 84, 40).jpeg({ quality: 90, progressive: false }).toBuffer();
  // patch the SOF0 frame header to claim 60000 x 60000 pixels (3.6 Gpx)
  const bomb = Buffer.from(small);
  let sof = -1;
  for (let i = 2; i < bomb.length - 9; i++) {
    if (bomb[i] === 0xff && bomb[i + 1] === 0xc0) {
      sof = i;
      break;
    }
  }
  assert.ok(sof > 0, 'SOF0 marker');
  bomb.writeUInt16BE(60000, sof + 5);
  bomb.writeUInt16BE(60000, sof + 7);
  assert.equal((await sharp(bomb, { limitInputPixels: false }).metadata()).width, 60000);
  await assert.rejects(decodeRgb(bomb), (e: unknown) => e instanceof DecodeError && /60000x60000 = 3600000000 pixels exceeds the pixel limit/.test(e.message));
  await assert.rejects(decodeTransform(bomb, { kind: 'val' }), DecodeError);
  // a custom limit
  await assert.rejects(decodeRgb(small, { pixelLimit: 84 * 40 - 1 }), /exceeds the pixel limit 3359/);
  assert.equal((await decodeRgb(small, { pixelLimit: 84 * 40 })).width, 84);

  await assert.rejects(decodeRgb(new Uint8Array(0)), (e: unknown) => e instanceof DecodeError && /empty input/.test(e.message));
  const garbage = new Uint8Array(1000).map((_, i) => (i * 7919) & 255);
  await assert.rejects(decodeRgb(garbage), (e: unknown) => e instanceof DecodeError && /not a decodable image/.test(e.message));
  const truncated = small.subarray(0, Math.floor(small.length / 2));
  await assert.rejects(decodeRgb(truncated), DecodeError);
  await assert.rejects(decodeTransform(truncated, { kind: 'eval' }), DecodeError);
});

test('decode: RandomResizedCrop is deterministic per seed and stays within scale / ratio bounds', () => {
  const draw = (seed: number, n: number, W: number, H: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => randomResizedCropParams(W, H, rng));
  };
  assert.deepEqual(draw(42, 50, 500, 375), draw(42, 50, 500, 375));
  assert.notDeepEqual(draw(42, 50, 500, 375), draw(43, 50, 500, 375));

  for (const [W, H] of [
    [500, 375],
    [375, 500],
    [224, 224],
    [1000, 333],
  ] as const) {
    const crops = draw(7, 5000, W, H);
    let minScale = Infinity;
    let maxScale = 0;
    let minRatio = Infinity;
    let maxRatio = 0;
    let fallbacks = 0;
    for (const c of crops) {
      assert.ok(c.left >= 0 && c.top >= 0 && c.left + c.width <= W && c.top + c.height <= H, JSON.stringify(c));
      assert.ok(c.width > 0 && c.height > 0);
      const scale = (c.width * c.height) / (W * H);
      const ratio = c.width / c.height;
      minScale = Math.min(minScale, scale);
      maxScale = Math.max(maxScale, scale);
      minRatio = Math.min(minRatio, ratio);
      maxRatio = Math.max(maxRatio, ratio);
      if (c.width === W && c.height === H) fallbacks++;
    }
    // the drawn window rounds w and h to integers: allow that rounding (< 1 pixel per side)
    const tolScale = (W + H + 1) / (W * H);
    assert.ok(minScale >= 0.08 - tolScale, `${W}x${H} min scale ${minScale}`);
    assert.ok(maxScale <= 1, `${W}x${H} max scale ${maxScale}`);
    assert.ok(minRatio >= (3 / 4) * (1 - 2 / Math.sqrt(0.08 * W * H)), `${W}x${H} min ratio ${minRatio}`);
    assert.ok(maxRatio <= (4 / 3) * (1 + 2 / Math.sqrt(0.08 * W * H)), `${W}x${H} max ratio ${maxRatio}`);
    // the draws cover the range (not stuck at one size)
    // (the largest window within the ratio range: the whole image, or H x 4H/3 for a wide one)
    const maxPossible = W / H > 4 / 3 ? (4 * H) / (3 * W) : H / W > 4 / 3 ? (4 * W) / (3 * H) : 1;
    assert.ok(minScale < 0.1 && maxScale > 0.9 * maxPossible, `${W}x${H} scale range ${minScale}..${maxScale}`);
    assert.ok(minRatio < 0.8 && maxRatio > 1.25, `${W}x${H} ratio range ${minRatio}..${maxRatio}`);
    assert.ok(fallbacks < crops.length * 0.05);
  }
  // a 1000 x 10 strip: no draw fits (h >= 24 > 10), so torchvision's fallback: h = 10,
  // w = round(10 * 4/3) = 13, centred: left = (1000 - 13) // 2 = 493
  assert.deepEqual(randomResizedCropParams(1000, 10, new Rng(1)), { left: 493, top: 0, width: 13, height: 10 });
  // 10 x 1000: w = 10, h = round(10 / (3/4)) = 13, top = (1000 - 13) // 2 = 493
  assert.deepEqual(randomResizedCropParams(10, 1000, new Rng(1)), { left: 0, top: 493, width: 10, height: 13 });
});

test('decode: train transform is seeded, flips mirror exactly; float output is the ImageNet normalisation', async () => {
  const png = await raw(canvas(120, 90), 120, 90).png().toBuffer();
  const a = await decodeTransform(png, { kind: 'train', rng: new Rng(11), size: 64 });
  const b = await decodeTransform(png, { kind: 'train', rng: new Rng(11), size: 64 });
  assert.deepEqual(a.geometry, b.geometry);
  assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)));
  assert.deepEqual([a.width, a.height, a.data.length], [64, 64, 64 * 64 * 3]);

  const noFlip = await decodeTransform(png, { kind: 'train', rng: new Rng(3), size: 64, flipProb: 0 });
  const flip = await decodeTransform(png, { kind: 'train', rng: new Rng(3), size: 64, flipProb: 1 });
  assert.equal(noFlip.geometry.flip, false);
  assert.equal(flip.geometry.flip, true);
  const { flip: _f, ...gA } = noFlip.geometry;
  const { flip: _g, ...gB } = flip.geometry;
  assert.deepEqual(gA, gB);
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 64; x++) {
      for (let c = 0; c < 3; c++) assert.equal(flip.data[3 * (y * 64 + x) + c], noFlip.data[3 * (y * 64 + 63 - x) + c]);
    }
  }
  // about half of the draws flip
  const rng = new Rng(9);
  let flips = 0;
  for (let i = 0; i < 200; i++) if ((await decodeTransform(png, { kind: 'train', rng, size: 8 })).geometry.flip) flips++;
  assert.ok(flips > 70 && flips < 130, `flips ${flips}/200`);

  // Model input: (v / 255 - mean) / std per channel, in double precision rounded once, by hand.
  const u = await decodeTransform(png, { kind: 'val', resize: 80, crop: 64 });
  assert.ok(u.data instanceof Uint8Array);
  const byHand = Array.from(u.data, (v, i) => Math.fround((v / 255 - IMAGENET_MEAN[i % 3]!) / IMAGENET_STD[i % 3]!));
  assert.deepEqual(Array.from(normalizeBytes(u.data, 3)), byHand);
  assert.ok(Math.abs(normalizeBytes(u.data, 3)[0]! - (u.data[0]! / 255 - 0.485) / 0.229) < 1e-6);
  assert.equal(normalizationTable(1)[255], Math.fround((1 - (0.485 + 0.456 + 0.406) / 3) / ((0.229 + 0.224 + 0.225) / 3)));
  assert.throws(() => normalizationTable(2), /expected 1 or 3 channels, got 2/);
  // val geometry of 120 x 90: short side 80 -> 106 x 80 (int(80 * 120 / 90) = 106), crop at (21, 8)
  assert.deepEqual(
    [u.geometry.kind, (u.geometry as { resizeW: number }).resizeW, (u.geometry as { resizeH: number }).resizeH, u.geometry.left, u.geometry.top],
    ['resize-crop', 106, 80, 21, 8],
  );
  // the crop equals cropping the resized image by hand
  const resized = await sharp(png).resize(106, 80, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
  let md = 0;
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 64 * 3; x++) md = Math.max(md, Math.abs(u.data[y * 64 * 3 + x]! - resized[(y + 8) * 106 * 3 + 21 * 3 + x]!));
  }
  assert.equal(md, 0);
});

test('decode: ColorJitter by hand on two pixels, and against torchvision on a photo-like image', async () => {
  // Two pixels, factors brightness 1.5, contrast 0.5, saturation 2, gray = 0.2989 R + 0.587 G + 0.114 B:
  // brightness: (100, 50, 0) -> (150, 75, 0); (200, 220, 240) -> (255, 255, 255) (clamped)
  // gray: 0.2989*150 + 0.587*75 = 88.86 and 254.9745; mean 171.91725
  // contrast 0.5: v/2 + 85.958625 -> (160.958625, 123.458625, 85.958625), (213.458625 x 3)
  // saturation 2: 2v - gray; gray = 130.3800291375 -> (191.537..., 116.537..., 41.537...)
  //   -> rounded (192, 117, 42); the second: 2 * 213.458625 - 213.437255... = 213.479... -> 213
  const d = new Uint8Array([100, 50, 0, 200, 220, 240]);
  colorJitterInPlace(d, { brightness: 1.5, contrast: 0.5, saturation: 2 });
  assert.deepEqual(Array.from(d), [192, 117, 42, 213, 213, 213]);

  // torchvision.transforms.functional on the same bytes (float64 there): within one grey level
  // (values exactly at .5 may round either way after float rounding), most equal.
  const { python } = findTorchPython(join(repoRoot, 'test', 'helpers', 'torchvision_transforms.py'));
  const W = 40;
  const H = 30;
  const img = canvas(W, H);
  const dir = mkdtempSync(join(tmpdir(), 'jitter-'));
  try {
    writeFileSync(join(dir, 'in.rgb'), img);
    for (const f of [
      { brightness: 0.6, contrast: 1.4, saturation: 0.7 },
      { brightness: 1.3, contrast: 0.6, saturation: 1.5 },
    ]) {
      const out = join(dir, 'out.f32');
      execFileSync(python, [
        join(repoRoot, 'test', 'helpers', 'torchvision_transforms.py'),
        'jitter',
        join(dir, 'in.rgb'),
        out,
        String(H),
        String(W),
        String(f.brightness),
        String(f.contrast),
        String(f.saturation),
      ]);
      const ref = new Float32Array(readFileSync(out).buffer.slice(0));
      const ours = Uint8Array.from(img);
      colorJitterInPlace(ours, f);
      let maxDiff = 0;
      let equal = 0;
      ours.forEach((v, i) => {
        maxDiff = Math.max(maxDiff, Math.abs(v - ref[i]!));
        if (v === Math.round(ref[i]!)) equal++;
      });
      assert.ok(maxDiff <= 0.5 + 1e-3, `${JSON.stringify(f)}: max difference ${maxDiff} from torchvision`);
      assert.ok(equal / ours.length > 0.99, `${JSON.stringify(f)}: ${equal} of ${ours.length} equal after rounding`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // In the train transform: seeded, and the crop is drawn before the jitter (same geometry as without).
  const png = await raw(canvas(120, 90), 120, 90).png().toBuffer();
  const plain = await decodeTransform(png, { kind: 'train', rng: new Rng(5), size: 64 });
  const j1 = await decodeTransform(png, { kind: 'train', rng: new Rng(5), size: 64, colorJitter: 0.4 });
  const j2 = await decodeTransform(png, { kind: 'train', rng: new Rng(5), size: 64, colorJitter: 0.4 });
  assert.deepEqual(j1.geometry, plain.geometry);
  assert.ok(Buffer.from(j1.data).equals(Buffer.from(j2.data)));
  assert.ok(!Buffer.from(j1.data).equals(Buffer.from(plain.data)), 'jitter changed nothing');
});

test('decode: transformSample skips a corrupt sample into Problems (file, offset) and maps a good one with its boxes', async () => {
  const good = await raw(canvas(120, 90), 120, 90).png().toBuffer();
  const problems = new Problems();
  const ok = await transformSample(
    { key: 'good', image: good, label: 1, boxes: [[60, 0, 120, 90]], source: { file: 's.tar', offset: 0 } },
    { kind: 'eval', size: 64 },
    problems,
  );
  // 120 x 90 -> 85 x 64 (int(64 * 120 / 90) = 85), crop left round(10.5) = 10: x0 = 60 * 85 / 120 - 10 = 32.5
  assert.deepEqual(ok!.boxes, [[32.5, 0, 64, 64]]);
  const bad = await transformSample(
    { key: 'bad', image: good.subarray(0, 40), label: 1, source: { file: 's.tar', offset: 4096 } },
    { kind: 'eval', size: 64 },
    problems,
  );
  assert.equal(bad, null);
  assert.deepEqual(
    problems.list.map((p) => [p.kind, p.file, p.offset]),
    [['decode-error', 's.tar', 4096]],
  );
  assert.match(problems.list[0]!.message, /^bad: /);
});

test('decode + tar run inside a worker thread (no tfjs in the import graph)', async () => {
  const png = await raw(canvas(120, 90), 120, 90).png().toBuffer();
  const here = await decodeTransform(png, { kind: 'val', resize: 80, crop: 64 });
  const decodeUrl = new URL('../src/data/decode.js', import.meta.url).href;
  const tarUrl = new URL('../src/data/tar.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { decodeTransform } = await import(workerData.decodeUrl);
      const { readWebDataset, encodeTar } = await import(workerData.tarUrl);
      const tar = encodeTar([{ name: 'k.png', data: workerData.png }, { name: 'k.cls', data: '3' }]);
      const out = [];
      for await (const s of readWebDataset(tar)) {
        const r = await decodeTransform(s.image, { kind: 'val', resize: 80, crop: 64 });
        out.push({ key: s.key, label: s.label, data: r.data });
      }
      const tfLoaded = Object.keys(require.cache).some((k) => k.includes('@tensorflow'));
      parentPort.postMessage({ out, tfLoaded });
    })().catch((e) => parentPort.postMessage({ error: String(e) }));
  `;
  const msg = await new Promise<{ out?: { key: string; label: number; data: Float32Array }[]; tfLoaded?: boolean; error?: string }>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { decodeUrl, tarUrl, png: new Uint8Array(png) } });
    w.once('message', (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
  assert.equal(msg.error, undefined);
  assert.equal(msg.tfLoaded, false);
  assert.deepEqual(
    msg.out!.map((o) => [o.key, o.label]),
    [['k', 3]],
  );
  assert.deepEqual(Array.from(msg.out![0]!.data), Array.from(here.data));
});
