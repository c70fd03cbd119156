import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { DecodeError, decodeTransform, probeImage } from '../src/data/decode.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeTar, readTarMembers, readWebDataset, webDatasetEntries, writeTar } from '../src/data/tar.js';
import { resolveDataSpec } from '../src/data/spec.js';
import type { Sample } from '../src/data/samples.js';
import { formatInspect, inspectData, makeShards, shardKey, sniffImageExt } from '../src/data/dataCommand.js';
import { digitImage, digitJpeg } from './helpers/images.js';

const digit = digitImage;

async function collect(stream: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of stream) out.push(s);
  return out;
}

const SYNSETS = ['n01440764', 'n02102040', 'n03000134'];

interface Folder {
  root: string;
  /** folder key (`synset/name` without the extension) -> expected sample */
  images: Map<string, { bytes: Buffer; label: number; synset: string; file: string }>;
  empty: string;
  tiff: string;
}

/**
 * 3 synsets, 11 usable images (10 JPEG, 1 PNG; sizes below), one zero-byte file, one TIFF (not a
 * format of the pipeline), one name with dots. Widths sorted: 30 30 30 44 44 56 56 56 56 64 80;
 * heights: 36 36 36 40 40 48 48 48 48 60 70.
 */
async function makeFolder(dir: string): Promise<Folder> {
  const root = join(dir, 'folder');
  const layout: [number, string, 'jpg' | 'png', number, number][] = [
    [0, 'img1.JPEG', 'jpg', 56, 48],
    [0, 'img2.JPEG', 'jpg', 30, 36],
    [0, 'img3.jpg', 'jpg', 56, 48],
    [0, 'img4.JPEG', 'jpg', 44, 40],
    [1, 'a.JPEG', 'jpg', 30, 36],
    [1, 'b.JPEG', 'jpg', 56, 48],
    [1, 'c.JPEG', 'jpg', 44, 40],
    [1, 'd.png', 'png', 80, 70],
    [2, 'x.JPEG', 'jpg', 56, 48],
    [2, 'y.JPEG', 'jpg', 30, 36],
    [2, 'scan.v2.final.JPEG', 'jpg', 64, 60],
  ];
  const images: Folder['images'] = new Map();
  for (const s of SYNSETS) mkdirSync(join(root, s), { recursive: true });
  let k = 0;
  for (const [label, name, kind, w, h] of layout) {
    const bytes = kind === 'jpg' ? await digitJpeg(k, w, h, 90) : await digit(k).resize(w, h).png().toBuffer();
    k++;
    const synset = SYNSETS[label]!;
    const file = join(root, synset, name);
    writeFileSync(file, bytes);
    images.set(`${synset}/${name.slice(0, name.lastIndexOf('.'))}`, { bytes, label, synset, file });
  }
  const empty = join(root, SYNSETS[1]!, 'empty.JPEG');
  writeFileSync(empty, '');
  const tiff = join(root, SYNSETS[2]!, 'scan.tif');
  writeFileSync(tiff, await digit(20).tiff().toBuffer());
  writeFileSync(join(root, SYNSETS[0]!, 'notes.txt'), 'not listed: not an image extension');
  return { root, images, empty, tiff };
}

/** Every sample of the shards, in order, with its member names. */
async function readShards(files: string[]) {
  const samples: Sample[] = [];
  const members: string[][] = [];
  for (const f of files) {
    const s = readWebDataset(f);
    samples.push(...(await collect(s)));
    assert.equal(s.problems.count, 0, s.problems.format().join('\n'));
    const names: string[] = [];
    for await (const m of readTarMembers(f)) names.push(m.name);
    members.push(names);
  }
  return { samples, members };
}

test('makeShards: helpers (magic-byte sniffing, key mapping)', () => {
  assert.equal(sniffImageExt(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0])), 'jpg');
  assert.equal(sniffImageExt(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'png');
  assert.equal(sniffImageExt(new TextEncoder().encode('RIFF\0\0\0\0WEBPVP8 ')), 'webp');
  assert.equal(sniffImageExt(new TextEncoder().encode('II*\0 tiff')), null);
  assert.equal(sniffImageExt(new Uint8Array([0xff, 0xd8])), null);
  assert.equal(shardKey('n01/scan.v2.final'), 'n01/scan_v2_final');
  assert.equal(shardKey('n01/plain'), 'n01/plain');
});

test('makeShards: ImageFolder -> shuffled WebDataset shards with the same images, labels and synsets', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-shards-'));
  try {
    const f = await makeFolder(dir);
    const out = join(dir, 'shards');
    const lines: string[] = [];
    const r = await makeShards({ root: f.root, out, shardSize: 4, log: (l) => lines.push(l) });

    // 11 usable images in shards of 4 -> 3 shards (4, 4, 3)
    const files = [0, 1, 2].map((i) => join(out, `shard-00000${i}.tar`));
    assert.equal(r.samples, 11);
    assert.deepEqual(r.shards, files);
    assert.equal(r.spec, join(out, 'shard-{000000..000002}.tar'));
    const resolved = resolveDataSpec(r.spec);
    assert.equal(resolved.layout, 'webdataset');
    assert.deepEqual(resolved.files, files);
    assert.equal(readFileSync(join(out, 'synsets.txt'), 'utf8'), SYNSETS.join('\n') + '\n');
    assert.equal(lines.filter((l) => l.startsWith('wrote ')).length, 3);
    assert.match(lines[0]!, /^wrote .*shard-000000\.tar: 4 samples/);

    // skipped: the zero-byte file and the TIFF, named with their paths
    assert.equal(r.problems.count, 2);
    assert.deepEqual(r.problems.byKind, { unreadable: 1, 'decode-error': 1 });
    const byFile = new Map(r.problems.list.map((p) => [p.file, p]));
    assert.equal(byFile.get(f.empty)?.kind, 'unreadable');
    assert.equal(byFile.get(f.empty)?.message, 'empty file');
    assert.equal(byFile.get(f.tiff)?.kind, 'decode-error');
    assert.ok(r.problems.format().some((l) => l.startsWith(`${f.empty}@0: unreadable: empty file`)));

    // read back: exactly the folder's images (key-mapped), labels and synsets
    const { samples, members } = await readShards(files);
    assert.deepEqual(
      members.map((m) => m.length),
      [12, 12, 9],
    ); // image, .cls, .json per sample
    const got = new Map(samples.map((s) => [s.key, s]));
    assert.equal(samples.length, 11);
    assert.equal(got.size, 11);
    const expectedKeys = [...f.images.keys()].map(shardKey).sort();
    assert.deepEqual([...got.keys()].sort(), expectedKeys);
    assert.ok(got.has('n03000134/scan_v2_final'));
    for (const [folderKey, e] of f.images) {
      const s = got.get(shardKey(folderKey))!;
      assert.ok(Buffer.from(s.image).equals(e.bytes), `${folderKey}: bytes differ`);
      assert.equal(s.label, e.label, folderKey);
      assert.equal(s.synset, e.synset, folderKey);
    }
    const allMembers = members.flat();
    assert.ok(allMembers.includes('n02102040/d.png'));
    assert.ok(allMembers.includes('n03000134/scan_v2_final.jpg'));
    assert.ok(allMembers.includes('n03000134/scan_v2_final.cls'));
    const json = allMembers.filter((m) => m.endsWith('.json')).length;
    assert.equal(json, 11);

    // shuffled: not class-sorted; deterministic for a seed, different for another seed
    const labels = samples.map((s) => s.label);
    assert.notDeepEqual(
      labels,
      [...labels].sort((a, b) => a - b),
    );
    const again = await makeShards({ root: f.root, out: join(dir, 'again'), shardSize: 4 });
    for (let i = 0; i < 3; i++) assert.ok(readFileSync(again.shards[i]!).equals(readFileSync(files[i]!)), `shard ${i} differs`);
    const other = await makeShards({ root: f.root, out: join(dir, 'seed1'), shardSize: 4, seed: 1 });
    const otherKeys = (await readShards(other.shards)).samples.map((s) => s.key);
    assert.notDeepEqual(
      otherKeys,
      samples.map((s) => s.key),
    );
    assert.deepEqual([...otherKeys].sort(), expectedKeys);
    // no shuffle: the ImageFolder order (synset, then file name)
    const sorted = await makeShards({ root: f.root, out: join(dir, 'sorted'), shardSize: 4, shuffle: false });
    const sortedKeys = (await readShards(sorted.shards)).samples.map((s) => s.key);
    assert.deepEqual(sortedKeys, [...f.images.keys()].sort().map(shardKey));

    // never overwrite: a second run into the same folder throws and leaves the shards alone
    const before = files.map((p) => statSync(p).mtimeMs);
    await assert.rejects(makeShards({ root: f.root, out, shardSize: 4 }), (e: Error) => {
      assert.ok(e.message.includes(out), e.message);
      assert.match(e.message, /already holds 3 shard\(s\) with prefix "shard" \(shard-000000\.tar, shard-000001\.tar, shard-000002\.tar\)/);
      return true;
    });
    assert.deepEqual(
      files.map((p) => statSync(p).mtimeMs),
      before,
    );
    // another prefix into the same folder is fine (same synset list)
    const val = await makeShards({ root: f.root, out, shardSize: 100, prefix: 'val' });
    assert.equal(val.spec, join(out, 'val-{000000..000000}.tar'));
    assert.deepEqual(resolveDataSpec(val.spec).files, [join(out, 'val-000000.tar')]);
    assert.equal(val.samples, 11);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('makeShards: bad arguments and duplicate keys', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-shards-bad-'));
  try {
    const root = join(dir, 'root');
    mkdirSync(join(root, 'n01'), { recursive: true });
    const img = await digitJpeg(0, 28, 28);
    writeFileSync(join(root, 'n01', 'a.b.jpg'), img);
    writeFileSync(join(root, 'n01', 'a_b.jpg'), img); // same WebDataset key as a.b.jpg
    writeFileSync(join(root, 'n01', 'c.jpg'), 'text, not an image');
    const aFile = join(dir, 'afile');
    writeFileSync(aFile, 'x');

    await assert.rejects(makeShards({ root: aFile, out: join(dir, 'o1') }), (e: Error) => {
      assert.equal(e.message, `${aFile}: image folder root is not a folder`);
      return true;
    });
    await assert.rejects(makeShards({ root: join(dir, 'missing'), out: join(dir, 'o1') }), /missing: image folder root does not exist/);
    await assert.rejects(makeShards({ root, out: aFile }), (e: Error) => {
      assert.equal(e.message, `${aFile}: output path exists and is not a folder`);
      return true;
    });
    await assert.rejects(makeShards({ root, out: join(root, 'shards') }), /output folder is inside the image folder root/);
    await assert.rejects(makeShards({ root, out: join(dir, 'o1'), shardSize: 0 }), /shard size 0/);
    await assert.rejects(makeShards({ root, out: join(dir, 'o1'), prefix: 'a/b' }), /shard prefix "a\/b"/);

    const out = join(dir, 'o2');
    const r = await makeShards({ root, out, shuffle: false });
    assert.equal(r.samples, 1);
    assert.deepEqual(r.problems.byKind, { 'duplicate-key': 1, 'decode-error': 1 });
    assert.deepEqual(
      r.problems.list.map((p) => [p.kind, p.file]),
      [
        ['duplicate-key', join(root, 'n01', 'a_b.jpg')],
        ['decode-error', join(root, 'n01', 'c.jpg')],
      ],
    );
    assert.match(r.problems.list[0]!.message, /key "n01\/a_b" is already taken by .*a\.b\.jpg/);
    const { samples } = await readShards(r.shards);
    assert.deepEqual(
      samples.map((s) => [s.key, s.label, s.synset]),
      [['n01/a_b', 0, 'n01']],
    );

    // a different synset list in the output folder is not overwritten
    mkdirSync(join(root, 'n02'));
    writeFileSync(join(root, 'n02', 'z.jpg'), img);
    await assert.rejects(makeShards({ root, out, prefix: 'more' }), /synsets\.txt: exists with a different synset list/);
    // nothing usable at all
    const junk = join(dir, 'junk');
    mkdirSync(join(junk, 'n01'), { recursive: true });
    writeFileSync(join(junk, 'n01', 'e.jpg'), '');
    await assert.rejects(makeShards({ root: junk, out: join(dir, 'o3') }), /junk: none of its 1 image files could be used/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('inspectData: the folder and its shards report the same samples, classes and sizes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-inspect-'));
  try {
    const f = await makeFolder(dir);
    const out = join(dir, 'shards');
    const made = await makeShards({ root: f.root, out, shardSize: 4 });

    const progress: string[] = [];
    const folder = await inspectData(f.root, { log: (l) => progress.push(l), progressEvery: 5 });
    const shards = await inspectData(made.spec, { synsets: join(out, 'synsets.txt') });

    const classes = { count: 3, min: 3, max: 4, perClass: { '0': 4, '1': 4, '2': 3 } };
    const sizes = { width: { min: 30, median: 56, max: 80 }, height: { min: 36, median: 48, max: 70 } };
    for (const r of [folder, shards]) {
      assert.equal(r.samples, 11);
      assert.deepEqual(r.classes, classes);
      assert.deepEqual(r.sizes, sizes);
      assert.deepEqual(r.formats, { jpeg: 10, png: 1 });
      assert.equal(r.withBoxes, 0);
    }
    assert.equal(folder.layout, 'imagefolder');
    assert.equal(folder.spec, f.root);
    assert.deepEqual([folder.shards, folder.totalShards], [1, 1]);
    // the folder's problems: the empty file, and the TIFF (a format the pipeline does not decode)
    assert.equal(folder.problems.count, 2);
    assert.deepEqual(folder.problems.byKind, { unreadable: 1, 'decode-error': 1 });
    assert.ok(folder.problems.first.includes(`${f.empty}@0: unreadable: empty file`), folder.problems.first.join('\n'));
    assert.ok(folder.problems.first.some((l) => l.startsWith(`${f.tiff}@0: decode-error: n03000134/scan: unsupported image format tiff`)));
    // 12 samples read (11 + the TIFF): progress at 5 and 10
    assert.equal(progress.length, 2);
    assert.match(progress[0]!, /^inspect: 5 samples read \(shard 1\/1\), \d+ samples\/s, \d+ problems$/);
    assert.match(progress[1]!, /^inspect: 10 samples read/);

    assert.equal(shards.layout, 'webdataset');
    assert.deepEqual([shards.shards, shards.totalShards], [3, 3]);
    assert.deepEqual(shards.problems, { count: 0, byKind: {}, first: [] });

    // this job's share: shard 1 of 0..2 with 2 jobs
    const part = await inspectData(made.spec, { shardIndex: 1, numShards: 2 });
    assert.deepEqual([part.shards, part.totalShards, part.samples], [1, 3, 4]);
    // a class subset
    const sub = await inspectData(made.spec, { classes: '0,2' });
    assert.equal(sub.samples, 7);
    assert.deepEqual(sub.classes, { count: 2, min: 3, max: 4, perClass: { '0': 4, '2': 3 } });

    // a pixel limit below the two largest images (80x70 and 64x60): counted, not fatal
    const limited = await inspectData(made.spec, { pixelLimit: 3000 });
    assert.equal(limited.samples, 9);
    assert.deepEqual(limited.problems.byKind, { 'decode-error': 2 });
    assert.equal(limited.problems.first.filter((l) => /exceeds the pixel limit 3000/.test(l)).length, 2);
    assert.ok(limited.problems.first.some((l) => /: decode-error: n02102040\/d: image of 80x70 = 5600 pixels exceeds/.test(l)));
    assert.deepEqual(limited.sizes, { width: { min: 30, median: 44, max: 56 }, height: { min: 36, median: 40, max: 48 } });

    const text = formatInspect(shards);
    const lines = text.split('\n');
    assert.equal(lines[0], `data:     ${made.spec} (webdataset, 3 of 3 shards)`);
    assert.ok(lines.includes('samples:  11'), text);
    assert.ok(lines.includes('classes:  3 with samples, 3..4 samples per class'), text);
    assert.ok(lines.includes('width:    30 / 56 / 80 px (min / median / max)'), text);
    assert.ok(lines.includes('formats:  jpeg 10, png 1'), text);
    assert.ok(lines.includes('problems: 0'), text);
    assert.ok(formatInspect(limited).includes('problems: 2 (decode-error 2)'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('inspectData: a corrupt JPEG and a truncated tar are counted with file and offset; inspection goes on', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-inspect-bad-'));
  try {
    const good = await digitJpeg(3, 56, 48);
    const corrupt = new Uint8Array(300);
    corrupt.set([0xff, 0xd8, 0xff, 0xe0]); // JPEG magic, then zeros
    const bad = join(dir, 'bad-000000.tar');
    const boxes = { name: 'a.json', data: JSON.stringify({ label: 0, boxes: [[1, 2, 30, 40]] }) };
    writeTar(bad, [...webDatasetEntries('a', good, 0), boxes, ...webDatasetEntries('b', corrupt, 1), ...webDatasetEntries('c', good, 2)]);
    // a's members: header + data padded to 512, header + 1-byte .cls padded, header + .json; b starts after them
    const bOffset = 512 + Math.ceil(good.length / 512) * 512 + 1024 + 1024;

    const cut = join(dir, 'cut-000000.tar');
    const whole = encodeTar([...webDatasetEntries('d', good, 0), ...webDatasetEntries('e', good, 1), ...webDatasetEntries('f', good, 2)]);
    const sampleBytes = 512 + Math.ceil(good.length / 512) * 512 + 1024;
    const fOffset = 2 * sampleBytes;
    writeFileSync(cut, whole.subarray(0, fOffset + 512 + 100)); // ends inside f.jpg's data

    const r = await inspectData(join(dir, '{bad,cut}-000000.tar'));
    assert.equal(r.layout, 'webdataset');
    assert.equal(r.totalShards, 2);
    assert.equal(r.samples, 4); // a, c, d, e
    assert.deepEqual(r.classes.perClass, { '0': 2, '1': 1, '2': 1 });
    assert.equal(r.withBoxes, 1); // a
    assert.equal(r.problems.count, 2);
    assert.deepEqual(r.problems.byKind, { 'decode-error': 1, truncated: 1 });
    assert.match(r.problems.first[0]!, new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}@${bOffset}: decode-error: b: `));
    assert.match(r.problems.first[1]!, /^.*cut-000000\.tar@\d+: truncated: archive ends inside member "f\.jpg"/);
    assert.ok(r.problems.first[1]!.startsWith(`${cut}@${fOffset}: truncated`), r.problems.first[1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A PNG whose header says 20000 x 20000 (a decompression bomb's header; the body is a 1x1 image's). */
async function bombPng(): Promise<Buffer> {
  const png = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#808080' } })
    .png()
    .toBuffer();
  png.writeUInt32BE(20000, 16); // IHDR width, height
  png.writeUInt32BE(20000, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29); // IHDR's CRC covers its type and data
  return png;
}

test('inspect, make-shards and training decode with one policy: a truncated JPEG is an error to all three, counted', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-policy-'));
  try {
    const good = await digitJpeg(3, 56, 48, 90);
    const truncated = good.subarray(0, Math.floor(good.length * 0.6));
    // The header still reads: a header-only check calls it valid.
    assert.equal((await probeImage(truncated)).width, 56);
    await assert.rejects(decodeTransform(truncated, { kind: 'eval', size: 32 }), DecodeError);

    const tar = join(dir, 'mixed-000000.tar');
    writeTar(tar, [...webDatasetEntries('a', good, 0), ...webDatasetEntries('t', truncated, 1), ...webDatasetEntries('z', new Uint8Array(0), 1)]);
    const r = await inspectData(tar);
    assert.equal(r.samples, 1, JSON.stringify(r.problems));
    assert.deepEqual(r.problems.byKind, { 'decode-error': 2 });
    assert.match(r.problems.first.join('\n'), /mixed-000000\.tar@\d+: decode-error: t: decode failed/);

    const root = join(dir, 'folder');
    mkdirSync(join(root, 'n01'), { recursive: true });
    writeFileSync(join(root, 'n01', 'good.jpg'), good);
    writeFileSync(join(root, 'n01', 'cut.jpg'), truncated);
    writeFileSync(join(root, 'n01', 'bomb.png'), await bombPng());
    symlinkSync('/etc/passwd', join(root, 'n01', 'passwd.jpg'));
    const lines: string[] = [];
    const made = await makeShards({ root, out: join(dir, 'shards'), log: (l) => lines.push(l) });
    assert.equal(made.samples, 1);
    assert.deepEqual(made.problems.byKind, { 'decode-error': 3 });
    const report = made.problems.format().join('\n');
    assert.match(report, /cut\.jpg@0: decode-error: decode failed: .*: skipped/);
    assert.match(report, /bomb\.png@0: decode-error: image of 20000x20000 = 400000000 pixels exceeds the pixel limit .*: skipped/);
    assert.match(report, /passwd\.jpg@0: decode-error: not a decodable image .*: skipped/);
    assert.match(lines.at(-1)!, /1 samples in 1 shards: .* \(3 skipped or reported\)/);
    const packed = await collect(readWebDataset(made.shards[0]!));
    assert.deepEqual(
      packed.map((s) => s.key),
      ['n01/good'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
