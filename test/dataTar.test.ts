import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadMnist } from '../src/data/mnist.js';
import {
  parseTarNumber,
  encodeTar,
  encodeTarEntry,
  readTarMembers,
  readWebDataset,
  splitKey,
  tarHeader,
  webDatasetEntries,
  writeTar,
  type TarEntry,
} from '../src/data/tar.js';
import { Problems, type Sample } from '../src/data/samples.js';
import { decodeRgb } from '../src/data/decode.js';
import { runPython } from './helpers/python.js';

/** Real images: MNIST test digits, coloured, 42x35, as PNG or JPEG. */
async function digits(n: number, format: 'png' | 'jpeg', first = 0): Promise<{ image: Buffer; label: number }[]> {
  const m = loadMnist('test');
  const out: { image: Buffer; label: number }[] = [];
  for (let i = first; i < first + n; i++) {
    const rgb = Buffer.alloc(28 * 28 * 3);
    for (let p = 0; p < 784; p++) {
      const v = m.images[i * 784 + p]!;
      rgb[3 * p] = v;
      rgb[3 * p + 1] = 255 - v;
      rgb[3 * p + 2] = (v + 40 * m.labels[i]!) & 255;
    }
    const s = sharp(rgb, { raw: { width: 28, height: 28, channels: 3 } }).resize(42, 35);
    out.push({ image: await (format === 'png' ? s.png() : s.jpeg({ quality: 92 })).toBuffer(), label: m.labels[i]! });
  }
  return out;
}

async function collect(stream: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of stream) out.push(s);
  return out;
}

/** Splits bytes into chunks of `size` (to drive the streaming reader across chunk borders). */
async function* chunked(b: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, Math.min(b.length, i + size));
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('tar: WebDataset round trip (writer -> reader), whole file and 7-byte chunks, pixels intact', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-tar-'));
  try {
    const imgs = await digits(6, 'jpeg');
    const entries = imgs.flatMap((d, i) => webDatasetEntries(`sample${String(i).padStart(4, '0')}`, d.image, d.label));
    const path = join(dir, 'shard-000000.tar');
    writeTar(path, entries);
    const bytes = readFileSync(path);
    assert.equal(bytes.length % 512, 0);
    for (const src of [path, chunked(bytes, 7), chunked(bytes, 512), chunked(bytes, 100_000)] as const) {
      const stream = readWebDataset(src, { file: 'shard' });
      const got = await collect(stream);
      assert.equal(stream.problems.count, 0, stream.problems.format().join('\n'));
      assert.deepEqual(
        got.map((s) => s.key),
        imgs.map((_, i) => `sample${String(i).padStart(4, '0')}`),
      );
      assert.deepEqual(
        got.map((s) => s.label),
        imgs.map((d) => d.label),
      );
      for (let i = 0; i < imgs.length; i++) assert.ok(Buffer.from(got[i]!.image).equals(imgs[i]!.image));
      // sample offsets: each sample = 2 members; member = header + data rounded up to 512
      let off = 0;
      for (let i = 0; i < imgs.length; i++) {
        assert.equal(got[i]!.source.offset, off);
        off += 512 + Math.ceil(imgs[i]!.image.length / 512) * 512 + 512 + 512;
      }
    }
    const a = await decodeRgb((await collect(readWebDataset(path)))[3]!.image);
    const b = await decodeRgb(imgs[3]!.image);
    assert.equal(a.width, 42);
    assert.equal(a.height, 35);
    assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tar: our archives read back by Python tarfile; Python GNU / pax / ustar archives read by us', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-tar-'));
  try {
    const imgs = await digits(3, 'png');
    const longKey = 'k'.repeat(130); // > 100 bytes, no '/': needs 'L' or pax
    const prefixKey = `${'d'.repeat(60)}/${'e'.repeat(60)}/img`; // > 100 bytes with '/': ustar prefix
    const entries: TarEntry[] = [
      ...webDatasetEntries('short', imgs[0]!.image, imgs[0]!.label, 'png'),
      ...webDatasetEntries(longKey, imgs[1]!.image, imgs[1]!.label, 'png'),
      ...webDatasetEntries(prefixKey, imgs[2]!.image, imgs[2]!.label, 'png'),
    ];
    const expectNames = entries.map((e) => e.name);
    const expectSha = entries.map((e) => sha(typeof e.data === 'string' ? Buffer.from(e.data) : e.data));
    for (const longNames of ['pax', 'gnu'] as const) {
      const path = join(dir, `ours-${longNames}.tar`);
      writeTar(path, entries, { longNames });
      const listed = JSON.parse(runPython('data_oracle.py', ['tarlist', path])) as { name: string; sha256: string }[];
      assert.deepEqual(
        listed.map((m) => m.name),
        expectNames,
      );
      assert.deepEqual(
        listed.map((m) => m.sha256),
        expectSha,
      );
      const got = await collect(readWebDataset(path));
      assert.deepEqual(
        got.map((s) => s.key),
        ['short', longKey, prefixKey],
      );
    }
    // Python-written archives
    const files = entries.map((e, i) => {
      const f = join(dir, `m${i}`);
      writeFileSync(f, e.data);
      return { name: e.name, file: f };
    });
    for (const fmt of ['gnu', 'pax', 'ustar']) {
      // ustar cannot store the 130-byte name without a '/': that format gets the other samples
      const keep = entries.map((e) => fmt !== 'ustar' || !e.name.startsWith(longKey));
      const manifest = join(dir, `manifest-${fmt}.json`);
      writeFileSync(manifest, JSON.stringify({ entries: files.filter((_, i) => keep[i]) }));
      const path = join(dir, `py-${fmt}.tar`);
      runPython('data_oracle.py', ['tarmake', manifest, path, fmt]);
      const members = [];
      const problems = new Problems();
      for await (const m of readTarMembers(path, { problems })) members.push(m);
      assert.equal(problems.count, 0, `${fmt}: ${problems.format().join('\n')}`);
      assert.deepEqual(
        members.map((m) => m.name),
        expectNames.filter((_, i) => keep[i]),
        fmt,
      );
      assert.deepEqual(
        members.map((m) => sha(m.data)),
        expectSha.filter((_, i) => keep[i]),
        fmt,
      );
      const got = await collect(readWebDataset(path));
      const want: [string, number][] = [
        ['short', imgs[0]!.label],
        [longKey, imgs[1]!.label],
        [prefixKey, imgs[2]!.label],
      ];
      assert.deepEqual(
        got.map((s) => [s.key, s.label]),
        want.filter((w) => fmt !== 'ustar' || w[0] !== longKey),
        fmt,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tar: ../evil and absolute members skipped and reported with offsets; truncated archive reported, the rest read', async () => {
  const imgs = await digits(3, 'jpeg', 10);
  const parts: Uint8Array[][] = [];
  const offsets: number[] = [];
  let off = 0;
  const add = (e: TarEntry) => {
    const blocks = encodeTarEntry(e, { allowUnsafe: true });
    offsets.push(off);
    off += blocks.reduce((n, b) => n + b.length, 0);
    parts.push(blocks);
  };
  add({ name: 'a.jpg', data: imgs[0]!.image }); // 0
  add({ name: 'a.cls', data: String(imgs[0]!.label) }); // 1
  add({ name: '../evil.jpg', data: imgs[1]!.image }); // 2
  add({ name: '/etc/abs.jpg', data: imgs[1]!.image }); // 3
  add({ name: 'x/../../up.cls', data: '3' }); // 4
  add({ name: 'b.jpg', data: imgs[1]!.image }); // 5
  add({ name: 'b.cls', data: String(imgs[1]!.label) }); // 6
  add({ name: 'c.jpg', data: imgs[2]!.image }); // 7
  add({ name: 'c.cls', data: String(imgs[2]!.label) }); // 8
  const longEvil = `../${'p'.repeat(120)}.jpg`; // needs an extended header: the '..' is in it
  const addLong = (longNames: 'pax' | 'gnu') => {
    const blocks = encodeTarEntry({ name: longEvil, data: 'x' }, { allowUnsafe: true, longNames });
    offsets.push(off);
    off += blocks.reduce((n, b) => n + b.length, 0);
    parts.push(blocks);
  };
  addLong('pax'); // 9
  addLong('gnu'); // 10
  const whole = Buffer.concat([...parts.flat(), new Uint8Array(1024)]);
  assert.throws(() => encodeTarEntry({ name: '../evil.jpg', data: 'x' }), /refusing.*'\.\.'/);

  const s1 = readWebDataset(whole, { file: 'evil.tar' });
  const got = await collect(s1);
  assert.deepEqual(
    got.map((s) => [s.key, s.label]),
    [
      ['a', imgs[0]!.label],
      ['b', imgs[1]!.label],
      ['c', imgs[2]!.label],
    ],
  );
  assert.equal(s1.problems.count, 5);
  assert.deepEqual(
    s1.problems.list.map((p) => [p.kind, p.file, p.offset]),
    [
      ['unsafe-path', 'evil.tar', offsets[2]],
      ['unsafe-path', 'evil.tar', offsets[3]],
      ['unsafe-path', 'evil.tar', offsets[4]],
      ['unsafe-path', 'evil.tar', offsets[9]], // at the pax 'x' header
      ['unsafe-path', 'evil.tar', offsets[10]], // at the GNU 'L' header
    ],
  );
  assert.ok(s1.problems.list[3]!.message.includes(longEvil));
  assert.match(s1.problems.list[0]!.message, /\.\.\/evil\.jpg.*'\.\.' segment/);
  assert.match(s1.problems.list[1]!.message, /absolute/);

  // truncated in the middle of c.jpg's data: a and b come out, c is reported at c.jpg's header
  const cut = whole.subarray(0, offsets[7]! + 512 + 100);
  const s2 = readWebDataset(chunked(cut, 333), { file: 'cut.tar' });
  const got2 = await collect(s2);
  assert.deepEqual(
    got2.map((s) => s.key),
    ['a', 'b'],
  );
  const trunc = s2.problems.list.filter((p) => p.kind === 'truncated');
  assert.equal(trunc.length, 1);
  assert.equal(trunc[0]!.offset, offsets[7]);
  assert.match(trunc[0]!.message, /c\.jpg.*100 of \d+ bytes/);

  // truncated inside a header
  const cut2 = whole.subarray(0, offsets[7]! + 200);
  const s3 = readWebDataset(cut2, { file: 'cut2.tar' });
  assert.deepEqual(
    (await collect(s3)).map((s) => s.key),
    ['a', 'b'],
  );
  assert.deepEqual(
    s3.problems.list.filter((p) => p.kind === 'truncated').map((p) => p.offset),
    [offsets[7]],
  );

  // a damaged header (checksum) ends the file with 'bad-header'
  const bad = Buffer.from(whole);
  bad[offsets[5]! + 10] ^= 0xff;
  const s4 = readWebDataset(bad, { file: 'bad.tar' });
  assert.deepEqual(
    (await collect(s4)).map((s) => s.key),
    ['a'],
  );
  assert.deepEqual(
    s4.problems.list.filter((p) => p.kind === 'bad-header').map((p) => p.offset),
    [offsets[5]],
  );
});

test('tar: .json labels, incomplete samples and bad .cls are skipped and counted', async () => {
  const imgs = await digits(2, 'png', 20);
  const tar = encodeTar([
    { name: 'd1/x.png', data: imgs[0]!.image },
    { name: 'd1/x.json', data: JSON.stringify({ label: 7, synset: 'n0000007', boxes: [[1, 2, 30, 20]] }) },
    { name: 'd1/y.png', data: imgs[1]!.image }, // no label
    { name: 'd1/z.cls', data: '4' }, // no image
    { name: 'd1/w.png', data: imgs[1]!.image },
    { name: 'd1/w.cls', data: 'seven' },
    { name: 'd1/v.PNG', data: imgs[1]!.image },
    { name: 'd1/v.json', data: '5' },
  ]);
  const s = readWebDataset(tar, { file: 'j.tar' });
  const got = await collect(s);
  assert.deepEqual(
    got.map((x) => [x.key, x.label, x.synset ?? null]),
    [
      ['d1/x', 7, 'n0000007'],
      ['d1/v', 5, null],
    ],
  );
  assert.deepEqual(got[0]!.boxes, [[1, 2, 30, 20]]);
  assert.deepEqual(s.problems.byKind, { 'incomplete-sample': 2, 'bad-label': 1 });
  assert.ok(
    s.problems.format().some((l) => /incomplete-sample: sample ".*" lacks (an image \(\.jpg\/\.png\)|a label \(\.cls\/\.json\))/.test(l)),
    s.problems.format().join('\n'),
  );
  assert.deepEqual(splitKey('a/b.c/key.seg.png'), { key: 'a/b.c/key', ext: 'seg.png' });
  // header helper: a valid header block for a plain name
  assert.equal(tarHeader('n.jpg', 5).length, 512);
  // number fields: octal, and GNU base-256 (sizes >= 8 GiB)
  assert.equal(parseTarNumber(Buffer.from('00000001750\0'), 0, 12), 1000);
  const big = new Uint8Array(12);
  big[0] = 0x80;
  big[7] = 0x02; // 2 * 2^32
  assert.equal(parseTarNumber(big, 0, 12), 2 * 2 ** 32);
  const hdr = tarHeader('big.bin', 9 * 2 ** 30);
  assert.equal(parseTarNumber(hdr, 124, 12), 9 * 2 ** 30);
});
