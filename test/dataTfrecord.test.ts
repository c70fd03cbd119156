import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadMnist } from '../src/data/mnist.js';
import { decodeExample, encodeTfRecord, readTfRecord, readTfRecords } from '../src/data/tfrecord.js';
import { readWebDataset, webDatasetEntries, writeTar } from '../src/data/tar.js';
import { readImageFolder } from '../src/data/imageFolder.js';
import { decodeRgb } from '../src/data/decode.js';
import { Problems, type Sample } from '../src/data/samples.js';
import { runPython } from './helpers/python.js';

const SYNSETS = ['n01440764', 'n01443537', 'n01484850'];

interface Made {
  stem: string;
  synset: string;
  label: number; // 0-based
  ext: 'JPEG' | 'png';
  image: Buffer;
  width: number;
  height: number;
  rel: [number, number, number, number][];
}

/** Real images: MNIST test digits, coloured, varied sizes, JPEG and PNG. */
async function makeImages(n: number): Promise<Made[]> {
  const m = loadMnist('test');
  const out: Made[] = [];
  for (let i = 0; i < n; i++) {
    const rgb = Buffer.alloc(28 * 28 * 3);
    for (let p = 0; p < 784; p++) {
      const v = m.images[i * 784 + p]!;
      rgb[3 * p] = v;
      rgb[3 * p + 1] = (v * (i + 1)) & 255;
      rgb[3 * p + 2] = 255 - v;
    }
    const width = 40 + 8 * i;
    const height = 30 + 5 * i;
    const ext = i % 3 === 2 ? 'png' : 'JPEG';
    const s = sharp(rgb, { raw: { width: 28, height: 28, channels: 3 } }).resize(width, height, { fit: 'fill' });
    const image = await (ext === 'png' ? s.png() : s.jpeg({ quality: 90 })).toBuffer();
    const synset = SYNSETS[i % 3]!;
    const rel: [number, number, number, number][] =
      i === 1 ? [] : [[0.1, 0.2, 0.6, 0.9], ...(i % 2 === 0 ? [[0.25, 0.125, 1, 0.5] as [number, number, number, number]] : [])];
    out.push({ stem: `${synset}_${String(i).padStart(5, '0')}`, synset, label: i % 3, ext, image, width, height, rel });
  }
  return out;
}

async function collect(stream: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of stream) out.push(s);
  return out;
}

interface PyInfo {
  offset: number;
  length: number;
  shape: number[];
}

/** Writes images (+ one label-less record at index `noLabelAt`) as a TFRecord with TensorFlow. */
function writeWithTensorflow(dir: string, imgs: Made[], noLabelAt: number | null): { path: string; info: PyInfo[] } {
  const records = imgs.map((d, i) => {
    const f = join(dir, `src-${i}.${d.ext}`);
    writeFileSync(f, d.image);
    return {
      image: f,
      label: i === noLabelAt ? null : d.label + 1, // build_imagenet_data.py: 1..1000
      synset: d.synset,
      filename: `${d.stem}.${d.ext}`,
      height: d.height,
      width: d.width,
      bbox: d.rel,
    };
  });
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ records }));
  const path = join(dir, 'train-00000-of-00001');
  const info = JSON.parse(runPython('data_oracle.py', ['tfrecord', join(dir, 'manifest.json'), path])) as PyInfo[];
  return { path, info };
}

test('tfrecord: a file written by TensorFlow (build_imagenet_data.py fields) reads back: labels, synsets, boxes, pixels', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-tfr-'));
  try {
    const imgs = await makeImages(7);
    const { path, info } = writeWithTensorflow(dir, imgs, 4);
    const bytes = readFileSync(path);
    assert.equal(
      bytes.length,
      info.reduce((n, r) => n + 16 + r.length, 0),
    );

    const stream = readTfRecord(path);
    const got = await collect(stream);
    const kept = imgs.filter((_, i) => i !== 4);
    assert.deepEqual(
      got.map((s) => [s.key, s.label, s.synset, s.width, s.height]),
      kept.map((d) => [`${d.stem}.${d.ext}`, d.label, d.synset, d.width, d.height]),
    );
    // the record without image/class/label: skipped, counted, reported at its offset
    assert.equal(stream.problems.count, 1);
    assert.deepEqual(
      stream.problems.list.map((p) => [p.kind, p.file, p.offset]),
      [['no-label', path, info[4]!.offset]],
    );
    for (let k = 0; k < got.length; k++) {
      const s = got[k]!;
      const d = kept[k]!;
      const i = imgs.indexOf(d);
      assert.deepEqual(s.source, { file: path, offset: info[i]!.offset });
      assert.ok(Buffer.from(s.image).equals(d.image), `${s.key}: encoded bytes`);
      // boxes: relative (float32 in the record) x the record's width / height
      if (d.rel.length === 0) assert.equal(s.boxes, undefined);
      else {
        assert.equal(s.boxes!.length, d.rel.length);
        s.boxes!.forEach((b, j) => {
          const e = [d.rel[j]![0] * d.width, d.rel[j]![1] * d.height, d.rel[j]![2] * d.width, d.rel[j]![3] * d.height];
          for (let c = 0; c < 4; c++) assert.ok(Math.abs(b[c]! - e[c]!) < 1e-4, `${s.key} box ${b} vs ${e}`);
        });
      }
      // pixels: ours (sharp) against TensorFlow's tf.io.decode_image
      const ours = await decodeRgb(s.image);
      const tfPixels = readFileSync(`${path}.${i}.rgb`);
      assert.deepEqual(info[i]!.shape, [ours.height, ours.width, 3]);
      let maxDiff = 0;
      for (let p = 0; p < tfPixels.length; p++) maxDiff = Math.max(maxDiff, Math.abs(tfPixels[p]! - ours.data[p]!));
      // identical: TensorFlow's accurate integer IDCT and libvips' libjpeg agree bit for bit
      assert.equal(maxDiff, 0, `${s.key}: ${d.ext} pixels differ from TensorFlow's by up to ${maxDiff}`);
    }

    // our framing writer reproduces TensorFlow's file byte for byte
    const raw = [];
    for await (const r of readTfRecords(path)) raw.push(encodeTfRecord(r.data));
    assert.ok(Buffer.concat(raw).equals(bytes), 'encodeTfRecord(records) == the TensorFlow file');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tfrecord: a flipped data byte skips that record (bad-crc at its offset); a bad length CRC or a cut ends the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-tfr-'));
  try {
    const imgs = await makeImages(5);
    const { path, info } = writeWithTensorflow(dir, imgs, null);
    const bytes = readFileSync(path);

    const flipped = Buffer.from(bytes);
    flipped[info[2]!.offset + 12 + 40] ^= 0x01; // inside record 2's data
    const s1 = readTfRecord(flipped, { file: 'flipped' });
    const got1 = await collect(s1);
    assert.deepEqual(
      got1.map((s) => s.label),
      [0, 1, 0, 1],
    );
    assert.deepEqual(
      got1.map((s) => s.source.offset),
      [0, 1, 3, 4].map((i) => info[i]!.offset),
    );
    assert.deepEqual(
      s1.problems.list.map((p) => [p.kind, p.file, p.offset]),
      [['bad-crc', 'flipped', info[2]!.offset]],
    );
    assert.match(s1.problems.list[0]!.message, /data CRC mismatch/);

    // a flipped data-CRC byte: same outcome
    const crcFlip = Buffer.from(bytes);
    crcFlip[info[3]!.offset + 12 + info[3]!.length + 1] ^= 0x80;
    const s2 = readTfRecord(crcFlip, { file: 'crc' });
    assert.equal((await collect(s2)).length, 4);
    assert.deepEqual(
      s2.problems.list.map((p) => [p.kind, p.offset]),
      [['bad-crc', info[3]!.offset]],
    );

    // a flipped length byte: the length CRC catches it; the framing is lost, so the file ends there
    const lenFlip = Buffer.from(bytes);
    lenFlip[info[1]!.offset + 0] ^= 0x04;
    const s3 = readTfRecord(lenFlip, { file: 'len' });
    assert.equal((await collect(s3)).length, 1);
    assert.deepEqual(
      s3.problems.list.map((p) => [p.kind, p.offset]),
      [['bad-crc', info[1]!.offset]],
    );
    assert.match(s3.problems.list[0]!.message, /length CRC/);

    // cut inside record 3
    const cut = bytes.subarray(0, info[3]!.offset + 30);
    const s4 = readTfRecord(cut, { file: 'cut' });
    assert.equal((await collect(s4)).length, 3);
    assert.deepEqual(
      s4.problems.list.map((p) => [p.kind, p.offset]),
      [['truncated', info[3]!.offset]],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// A tiny protobuf encoder, only to build Examples with unpacked repeated fields (TensorFlow's
// Python writes them packed).
const varint = (v: number): number[] => {
  const out: number[] = [];
  let x = BigInt.asUintN(64, BigInt(v));
  do {
    const b = Number(x & 0x7fn);
    x >>= 7n;
    out.push(x ? b | 0x80 : b);
  } while (x);
  return out;
};
const ld = (field: number, body: number[]): number[] => [...varint((field << 3) | 2), ...varint(body.length), ...body];
const f32 = (v: number): number[] => [...new Uint8Array(new Float32Array([v]).buffer)];

test('tfrecord: Example decoder reads unpacked floats / int64s, negative int64s, and skips unknown fields', () => {
  const floatsUnpacked = [0.25, 0.5].flatMap((v) => [(1 << 3) | 5, ...f32(v)]);
  const intsUnpacked = [3, -2].flatMap((v) => [(1 << 3) | 0, ...varint(v)]);
  const feature = (name: string, featureBody: number[]) => ld(1, [...ld(1, [...Buffer.from(name)]), ...ld(2, featureBody)]);
  const features = [
    ...feature('image/object/bbox/xmin', ld(2, floatsUnpacked)),
    ...feature('image/class/label', ld(3, intsUnpacked)),
    ...feature('image/encoded', ld(1, ld(1, [1, 2, 3]))),
    ...[(7 << 3) | 0, 5], // unknown varint field inside Features
  ];
  const example = new Uint8Array([...ld(1, features), ...[(9 << 3) | 5, 1, 2, 3, 4]]);
  const f = decodeExample(example);
  assert.deepEqual(f.get('image/object/bbox/xmin'), { kind: 'float', value: [0.25, 0.5] });
  assert.deepEqual(f.get('image/class/label'), { kind: 'int64', value: [3, -2] });
  const enc = f.get('image/encoded')!;
  assert.equal(enc.kind, 'bytes');
  assert.deepEqual(Array.from((enc as { value: Uint8Array[] }).value[0]!), [1, 2, 3]);
  assert.throws(() => decodeExample(new Uint8Array([(1 << 3) | 2, 50, 1])), /runs past the end/);

  // through the stream: label 3 -> 2; a record that is not protobuf -> 'bad-record'
  const file = Buffer.concat([encodeTfRecord(example), encodeTfRecord(new Uint8Array([0x0a, 0xff, 0xff]))]);
  const problems = new Problems();
  return collect(readTfRecord(file, { file: 'hand', problems })).then((got) => {
    assert.deepEqual(
      got.map((s) => [s.label, Array.from(s.image)]),
      [[2, [1, 2, 3]]],
    );
    assert.deepEqual(
      problems.list.map((p) => [p.kind, p.offset]),
      [['bad-record', 16 + example.length]],
    );
  });
});

test('layouts: the same images as TFRecord (TensorFlow), WebDataset tar and ImageFolder give the same samples and pixels', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-layouts-'));
  try {
    const imgs = await makeImages(9);
    // ImageFolder
    const root = join(dir, 'folder');
    for (const d of imgs) {
      mkdirSync(join(root, d.synset), { recursive: true });
      writeFileSync(join(root, d.synset, `${d.stem}.${d.ext}`), d.image);
    }
    // tar: key = synset/stem
    const tarPath = join(dir, 'shard-000000.tar');
    writeTar(
      tarPath,
      imgs.flatMap((d) => webDatasetEntries(`${d.synset}/${d.stem}`, d.image, d.label, d.ext.toLowerCase())),
    );
    const { path: tfrPath } = writeWithTensorflow(dir, imgs, null);

    const stem = (s: Sample, layout: string) => (layout === 'tfrecord' ? s.key.replace(/\.[^.]*$/, '') : s.key.slice(s.key.indexOf('/') + 1));
    const byLayout = new Map<string, Map<string, Sample>>();
    for (const [layout, stream] of [
      ['tfrecord', readTfRecord(tfrPath)],
      ['tar', readWebDataset(tarPath)],
      ['folder', readImageFolder(root)],
    ] as const) {
      const got = await collect(stream);
      assert.equal(stream.problems.count, 0, `${layout}: ${stream.problems.format().join('\n')}`);
      assert.equal(got.length, imgs.length, layout);
      byLayout.set(layout, new Map(got.map((s) => [stem(s, layout), s])));
    }
    for (const d of imgs) {
      const [a, b, c] = ['tfrecord', 'tar', 'folder'].map((l) => byLayout.get(l)!.get(d.stem)!);
      assert.deepEqual([a!.label, b!.label, c!.label], [d.label, d.label, d.label], d.stem);
      assert.equal(c!.synset, d.synset);
      assert.equal(a!.synset, d.synset);
      const pix = await Promise.all([a!, b!, c!].map((s) => decodeRgb(s.image)));
      assert.ok(Buffer.from(pix[0]!.data).equals(Buffer.from(pix[1]!.data)), `${d.stem}: tfrecord vs tar pixels`);
      assert.ok(Buffer.from(pix[0]!.data).equals(Buffer.from(pix[2]!.data)), `${d.stem}: tfrecord vs folder pixels`);
      assert.deepEqual([pix[0]!.width, pix[0]!.height], [d.width, d.height]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
