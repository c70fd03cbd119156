/**
 * SummaryWriter round trip: files written by our TypeScript writer are read back by TensorBoard's
 * own EventAccumulator (test/helpers/read_events.py), which is what the TensorBoard UI shows.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import sharp from 'sharp';
import { crc32c, maskedCrc32c } from '../src/util/crc32c.js';
import { encodeTfRecord as tfRecord } from '../src/data/tfrecord.js';
import { ProtoWriter, SummaryWriter } from '../src/log/tensorboard.js';
import { runPython } from './helpers/python.js';

interface ImageInfo {
  step: number;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
}
interface ReadBack {
  scalars: Record<string, [number, number | string][]>;
  images: Record<string, ImageInfo[]>;
  file_version: number | null;
}
interface Records {
  records: number;
  error: string | null;
  file_version: string | null;
}

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'casm-tb-'));
  tmpRoots.push(d);
  return d;
}
after(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

function readBack(logdir: string): ReadBack {
  return JSON.parse(runPython('read_events.py', [logdir])) as ReadBack;
}

function f32(x: number): number {
  return Math.fround(x);
}

describe('crc32c', () => {
  test('known vectors', () => {
    assert.equal(crc32c('123456789'), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(0)), 0);
    // RFC 3720 (iSCSI) B.4 vectors
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  });

  test('incremental equals one-shot', () => {
    const data = new TextEncoder().encode('123456789');
    assert.equal(crc32c(data.subarray(4), crc32c(data.subarray(0, 4))), 0xe3069283);
  });

  test('masked crc', () => {
    const c = 0xe3069283;
    const expected = ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) % 2 ** 32;
    assert.equal(maskedCrc32c(new TextEncoder().encode('123456789')), expected);
  });
});

describe('protobuf encoding', () => {
  test('varints, negative int64, fixed width', () => {
    const w = new ProtoWriter();
    w.int64(2, 300);
    assert.deepEqual([...w.finish()], [0x10, 0xac, 0x02]);
    const n = new ProtoWriter();
    n.int64(2, -1);
    assert.deepEqual([...n.finish()], [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    const big = new ProtoWriter();
    big.int64(2, 2 ** 33 + 5);
    assert.deepEqual([...big.finish()], [0x10, 0x85, 0x80, 0x80, 0x80, 0x20]);
    const f = new ProtoWriter();
    f.float(2, 1);
    f.double(1, 1);
    assert.deepEqual([...f.finish()], [0x15, 0, 0, 0x80, 0x3f, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
    const s = new ProtoWriter();
    s.string(1, 'ab');
    assert.deepEqual([...s.finish()], [0x0a, 2, 0x61, 0x62]);
  });

  test('TFRecord framing', () => {
    const data = new TextEncoder().encode('hello');
    const rec = tfRecord(data);
    const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
    assert.equal(rec.length, 8 + 4 + 5 + 4);
    assert.equal(dv.getBigUint64(0, true), 5n);
    assert.equal(dv.getUint32(8, true), maskedCrc32c(rec.subarray(0, 8)));
    assert.deepEqual(rec.subarray(12, 17), data);
    assert.equal(dv.getUint32(17, true), maskedCrc32c(data));
  });
});

describe('SummaryWriter read back by TensorBoard', () => {
  test('scalars and an image round-trip through EventAccumulator', async () => {
    const logdir = join(tempDir(), 'run', 'nested');
    const w = new SummaryWriter(logdir);
    const files = readdirSync(logdir);
    assert.equal(files.length, 1);
    assert.match(files[0]!, new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.${process.pid}\\.\\d+$`));

    const bigStep = 2 ** 33 + 5; // > 2^32: needs a multi-byte int64 varint
    const loss: [number, number][] = [
      [0, 0.1],
      [1, -2.5],
      [2, 1e-7],
      [10, 123456.789],
    ];
    for (const [step, v] of loss) {
      w.scalar('train/loss', v, step);
      w.scalar('train/acc', 1 - step / 100, step);
      w.flush(); // flushing often must be safe
    }
    w.flush();
    w.scalar('special/nan', Number.NaN, 11);
    w.scalar('special/inf', Number.NEGATIVE_INFINITY, 11);

    // a 6x4 RGB image, encoded by sharp
    const width = 6;
    const height = 4;
    const raw = Buffer.alloc(width * height * 3);
    for (let i = 0; i < width * height; i++) {
      raw[3 * i] = (i * 37) & 0xff;
      raw[3 * i + 1] = (i * 91) & 0xff;
      raw[3 * i + 2] = 255 - ((i * 11) & 0xff);
    }
    const png = await sharp(raw, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer();
    w.image('viz/saliency', png, height, width, 3, 12);
    w.scalar('train/loss', -0.75, bigStep);
    w.close();
    w.close(); // idempotent
    assert.throws(() => w.scalar('x', 1, 1), /closed/);

    const got = readBack(logdir);
    assert.equal(got.file_version, 2); // EventAccumulator parses 'brain.Event:2' to 2
    assert.deepEqual(Object.keys(got.scalars).sort(), ['special/inf', 'special/nan', 'train/acc', 'train/loss']);

    const gotLoss = got.scalars['train/loss']!;
    const wantLoss = [...loss, [bigStep, -0.75] as [number, number]];
    assert.deepEqual(
      gotLoss.map(([s]) => s),
      wantLoss.map(([s]) => s),
    );
    for (let i = 0; i < wantLoss.length; i++) {
      const g = gotLoss[i]![1] as number;
      const want = wantLoss[i]![1];
      // stored as float32: exact equality with the float32 rounding, close to the double
      assert.equal(g, f32(want), `loss[${i}]`);
      assert.ok(Math.abs(g - want) <= Math.abs(want) * 2 ** -23, `loss[${i}] ${g} vs ${want}`);
    }
    assert.notEqual(gotLoss[0]![1], 0.1); // 0.1 went through float32
    assert.deepEqual(
      got.scalars['train/acc']!.map(([s, v]) => [s, v]),
      loss.map(([s]) => [s, f32(1 - s / 100)]),
    );
    assert.deepEqual(got.scalars['special/nan'], [[11, 'NaN']]);
    assert.deepEqual(got.scalars['special/inf'], [[11, '-Infinity']]);

    assert.deepEqual(Object.keys(got.images), ['viz/saliency']);
    const imgs = got.images['viz/saliency']!;
    assert.equal(imgs.length, 1);
    assert.deepEqual(imgs[0], {
      step: 12,
      width,
      height,
      bytes: png.length,
      sha256: createHash('sha256').update(png).digest('hex'),
    });
  });

  test('flushes by itself past 1 MiB buffered, and appends on later flushes', () => {
    const logdir = tempDir();
    const w = new SummaryWriter(logdir);
    const path = join(logdir, readdirSync(logdir)[0]!);
    const sizeAfterHeader = statSync(path).size;
    assert.ok(sizeAfterHeader > 0, 'the file_version record is written at once');
    const blob = new Uint8Array(400 * 1024).map((_, i) => (i * 7) & 0xff);
    w.image('big', blob, 1, 1, 1, 1);
    w.image('big', blob, 1, 1, 1, 2);
    assert.equal(statSync(path).size, sizeAfterHeader, 'below 1 MiB nothing is written before flush');
    w.image('big', blob, 1, 1, 1, 3);
    const sizeAuto = statSync(path).size;
    assert.ok(sizeAuto > 3 * blob.length, `auto flush past 1 MiB (size ${sizeAuto})`);
    w.scalar('s', 1, 4);
    w.close();
    assert.ok(statSync(path).size > sizeAuto);
    const got = readBack(logdir);
    assert.deepEqual(
      got.images['big']!.map((i) => [i.step, i.bytes]),
      [
        [1, blob.length],
        [2, blob.length],
        [3, blob.length],
      ],
    );
    assert.deepEqual(got.scalars['s'], [[4, 1]]);
  });

  test("a corrupted byte fails TensorBoard's CRC check", () => {
    const logdir = tempDir();
    const w = new SummaryWriter(logdir);
    for (let step = 0; step < 5; step++) w.scalar('loss', step / 2, step);
    w.close();
    const path = join(logdir, readdirSync(logdir)[0]!);

    const clean = JSON.parse(runPython('read_events.py', ['--records', path])) as Records;
    assert.deepEqual(clean, { records: 6, error: null, file_version: 'brain.Event:2' });

    // flip one bit inside the data of the last record (the last 4 bytes are its data CRC)
    const bytes = readFileSync(path);
    bytes[bytes.length - 6]! ^= 0x01;
    writeFileSync(path, bytes);
    const bad = JSON.parse(runPython('read_events.py', ['--records', path])) as Records;
    assert.equal(bad.records, 5);
    assert.match(bad.error ?? '', /DataLoss|corrupt|crc|checksum/i);
    // TensorBoard itself stops at the bad record and shows what came before it
    assert.deepEqual(readBack(logdir).scalars['loss'], [
      [0, 0],
      [1, 0.5],
      [2, 1],
      [3, 1.5],
    ]);
  });
});
