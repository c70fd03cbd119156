import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countShard, openDataset, parseClassRanges } from '../src/data/dataset.js';
import { decodeTransform } from '../src/data/decode.js';
import { DataLoader, type LoaderOptions } from '../src/data/loader.js';
import { transformOf, type DecodedSample } from '../src/data/pipeline.js';
import { webDatasetEntries, writeTar } from '../src/data/tar.js';
import { digitJpeg } from './helpers/images.js';
import { runPython } from './helpers/python.js';

const SYNSETS = ['n01440764', 'n01443537', 'n01484850'];
const N = 24;

interface Fixture {
  dir: string;
  folder: string;
  /** Brace spec of the tar shards (4 samples each, written in key order). */
  tars: string;
  images: { key: string; synset: string; label: number; jpeg: Buffer }[];
}

async function makeFixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'casm-loader-'));
  const folder = join(dir, 'folder');
  const images: Fixture['images'] = [];
  for (let i = 0; i < N; i++) {
    const label = i % 3;
    const synset = SYNSETS[label]!;
    const jpeg = await digitJpeg(i, 60 + (i % 5) * 4, 44 + (i % 3) * 6);
    mkdirSync(join(folder, synset), { recursive: true });
    const name = `img_${String(i).padStart(3, '0')}`;
    writeFileSync(join(folder, synset, `${name}.JPEG`), jpeg);
    images.push({ key: `${synset}/${name}`, synset, label, jpeg });
  }
  images.sort((a, b) => (a.key < b.key ? -1 : 1));
  mkdirSync(join(dir, 'wds'));
  for (let s = 0; s < N / 4; s++) {
    const part = images.slice(4 * s, 4 * s + 4);
    writeTar(
      join(dir, 'wds', `train-${String(s).padStart(4, '0')}.tar`),
      part.flatMap((e) => webDatasetEntries(e.key, e.jpeg, e.label)),
    );
  }
  return { dir, folder, tars: join(dir, 'wds', `train-{0000..${String(N / 4 - 1).padStart(4, '0')}}.tar`), images };
}

const fixture = makeFixture();
test.after(async () => rmSync((await fixture).dir, { recursive: true, force: true }));

const base: LoaderOptions = { workers: 0, batchSize: 4, preprocess: 'val', size: 32, seed: 3, shuffleBuffer: 0 };

async function collect(loader: DataLoader, epoch = 0, range = {}): Promise<DecodedSample[]> {
  const out: DecodedSample[] = [];
  for await (const s of loader.samples(epoch, range)) out.push(s);
  return out;
}

async function withLoader<T>(spec: string, opts: Partial<LoaderOptions>, f: (l: DataLoader) => Promise<T>, ds = {}): Promise<T> {
  const loader = new DataLoader(openDataset(spec, ds), { ...base, ...opts });
  try {
    return await f(loader);
  } finally {
    await loader.close();
  }
}

const byKey = (xs: DecodedSample[]) => new Map(xs.map((s) => [s.key, s]));

test('loader: ImageFolder, WebDataset shards and a TFRecord written by TensorFlow give the same images, labels and pixels', async () => {
  const fx = await fixture;
  // The TFRecord comes from TensorFlow-Python itself (build_imagenet_data.py fields, labels 1..3).
  const manifest = {
    records: fx.images.map((e, i) => {
      const path = join(fx.dir, `rec${i}.jpg`);
      writeFileSync(path, e.jpeg);
      return { image: path, label: e.label + 1, synset: e.synset, filename: e.key, height: 1, width: 1, bbox: [] };
    }),
  };
  writeFileSync(join(fx.dir, 'manifest.json'), JSON.stringify(manifest));
  mkdirSync(join(fx.dir, 'tfr'), { recursive: true });
  runPython('data_oracle.py', ['tfrecord', join(fx.dir, 'manifest.json'), join(fx.dir, 'tfr', 'train-00000-of-00001')]);

  const folder = await withLoader(fx.folder, {}, (l) => collect(l));
  const tars = await withLoader(fx.tars, {}, (l) => collect(l));
  const tfr = await withLoader(join(fx.dir, 'tfr', 'train-00000-of-00001'), {}, (l) => collect(l));
  for (const got of [folder, tars, tfr]) {
    assert.equal(got.length, N);
    const m = byKey(got);
    for (const e of fx.images) {
      const s = m.get(e.key);
      assert.ok(s, `${e.key} missing`);
      assert.equal(s.label, e.label);
      // pixels: the reference is the transform applied to the original file directly
      const ref = await decodeTransform(e.jpeg, { kind: 'val', resize: 37, crop: 32 });
      assert.deepEqual(Array.from(s.data), Array.from(ref.data), e.key);
    }
  }
});

test('loader: 0, 1 and 2 workers deliver the same samples; training crops depend on the key, not the worker', async () => {
  const fx = await fixture;
  const opts = { preprocess: 'train' as const, shuffleBuffer: 8 };
  const runs = [];
  for (const workers of [0, 1, 2]) runs.push(await withLoader(fx.tars, { ...opts, workers }, (l) => collect(l, 1)));
  const again = await withLoader(fx.tars, { ...opts, workers: 2 }, (l) => collect(l, 1));
  const keys = (xs: DecodedSample[]) => xs.map((s) => s.key);
  assert.deepEqual(keys(again), keys(runs[2]!), 'same seed and workers: same order');
  assert.deepEqual(keys(runs[0]!), keys(runs[1]!), 'one worker = inline');
  for (const r of runs) {
    assert.deepEqual(
      [...keys(r)].sort(),
      fx.images.map((e) => e.key),
    );
    const m = byKey(r);
    for (const s of runs[0]!) assert.deepEqual(Array.from(m.get(s.key)!.data), Array.from(s.data), s.key);
  }
});

test('loader: augmentation reaches the workers: crop area and ColorJitter, each image as decodeTransform makes it', async () => {
  const fx = await fixture;
  const augmentation = { cropScale: [0.5, 1] as [number, number], colorJitter: 0.4 };
  const inline = byKey(await withLoader(fx.tars, { preprocess: 'train', augmentation }, (l) => collect(l, 2)));
  const worker = byKey(await withLoader(fx.tars, { preprocess: 'train', augmentation, workers: 1 }, (l) => collect(l, 2)));
  const plain = byKey(await withLoader(fx.tars, { preprocess: 'train', workers: 1 }, (l) => collect(l, 2)));
  assert.equal(worker.size, N);
  let changed = 0;
  for (const e of fx.images) {
    const spec = transformOf({ preprocess: 'train', size: 32, seed: 3, epoch: 2, augmentation }, e.key);
    assert.deepEqual([spec.kind === 'train' && spec.scale, spec.kind === 'train' && spec.colorJitter], [[0.5, 1], 0.4]);
    const ref = await decodeTransform(e.jpeg, spec);
    assert.deepEqual(Array.from(worker.get(e.key)!.data), Array.from(ref.data), `${e.key}: worker`);
    assert.deepEqual(Array.from(inline.get(e.key)!.data), Array.from(ref.data), `${e.key}: inline`);
    if (Array.from(plain.get(e.key)!.data).some((v, i) => v !== ref.data[i])) changed++;
  }
  assert.equal(changed, N, 'every augmented image differs from the plain one');
});

test('loader: shard order and shuffle buffer change with the epoch; every epoch has every sample once', async () => {
  const fx = await fixture;
  const [e0, e1, plain] = await withLoader(fx.tars, { shuffleBuffer: 10 }, async (l) => [
    await collect(l, 0),
    await collect(l, 1),
    await withLoader(fx.tars, { shuffleBuffer: 0 }, (p) => collect(p, 0)),
  ]);
  const keys = (xs: DecodedSample[]) => xs.map((s) => s.key);
  assert.notDeepEqual(keys(e0!), keys(e1!));
  assert.deepEqual([...keys(e0!)].sort(), [...keys(e1!)].sort());
  assert.equal(new Set(keys(e0!)).size, N);
  // without a buffer, whole shards stay together (4 consecutive keys of one shard)
  const shardOf = new Map(fx.images.map((e, i) => [e.key, Math.floor(i / 4)]));
  const runs = keys(plain!).map((k) => shardOf.get(k)!);
  for (let i = 0; i < N; i += 4) assert.equal(new Set(runs.slice(i, i + 4)).size, 1);
  assert.notDeepEqual(
    runs,
    [...runs].sort((a, b) => a - b),
    'shard order shuffled',
  );
});

test('loader: skip (resume) and limit (epoch fraction) cut the same epoch stream', async () => {
  const fx = await fixture;
  for (const workers of [0, 2]) {
    await withLoader(fx.tars, { workers, shuffleBuffer: 6 }, async (l) => {
      const full = (await collect(l, 2)).map((s) => s.key);
      const rest = (await collect(l, 2, { skip: 7 })).map((s) => s.key);
      assert.deepEqual(rest, full.slice(7), `workers ${workers}`);
      const head = (await collect(l, 2, { limit: 10 })).map((s) => s.key);
      assert.deepEqual(head, full.slice(0, 10));
      // after an early stop the next epoch starts clean
      assert.deepEqual(
        (await collect(l, 2)).map((s) => s.key),
        full,
      );
    });
  }
});

test('loader: batches carry labels, keys and the time waited; the last partial batch only on request', async () => {
  const fx = await fixture;
  await withLoader(fx.tars, { batchSize: 5, workers: 1 }, async (l) => {
    const sizes: number[] = [];
    for await (const b of l.batches(0)) {
      assert.equal(b.x.length, b.n * 32 * 32 * 3);
      assert.equal(b.labels.length, b.n);
      assert.ok(b.waitMs >= 0);
      b.keys.forEach((k, i) => assert.equal(b.labels[i], SYNSETS.indexOf(k.split('/')[0]!)));
      sizes.push(b.n);
    }
    assert.deepEqual(sizes, [5, 5, 5, 5]);
    const all: number[] = [];
    for await (const b of l.batches(0, { dropLast: false })) all.push(b.n);
    assert.deepEqual(all, [5, 5, 5, 5, 4]);
  });
});

test('dataset: --classes, --shard-index/--num-shards and sample counts without reading images', async () => {
  const fx = await fixture;
  assert.deepEqual(parseClassRanges('0-2, 5,7-8', 'x'), [0, 1, 2, 5, 7, 8]);
  assert.throws(() => parseClassRanges('3-1', '--classes'), /--classes: range 3-1 is reversed/);
  const kept = await withLoader(fx.tars, {}, (l) => collect(l), { classes: '0,2' });
  assert.equal(kept.length, 16);
  assert.ok(kept.every((s) => s.label === 0 || s.label === 2));
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push(await withLoader(fx.tars, {}, (l) => collect(l), { shardIndex: i, numShards: 3 }));
  assert.deepEqual(
    jobs.map((j) => j.length),
    [8, 8, 8],
  );
  assert.deepEqual(
    jobs
      .flat()
      .map((s) => s.key)
      .sort(),
    fx.images.map((e) => e.key),
  );
  assert.throws(() => openDataset(fx.tars, { shardIndex: 3, numShards: 3 }), /need 0 <= index < num-shards/);
  // counts: tar exact with a class subset (reads only .cls), folder exact
  for (const [spec, opts, want] of [
    [fx.tars, {}, N],
    [fx.tars, { classes: '1' }, 8],
    [fx.folder, { classes: '0-1' }, 16],
  ] as const) {
    const ds = openDataset(spec, opts);
    let n = 0;
    for (const sh of ds.shards) n += (await countShard(sh, ds)).count;
    assert.equal(n, want, `${spec} ${JSON.stringify(opts)}`);
  }
});

test('loader: a corrupt JPEG and a truncated shard are skipped, counted with file and offset, and the epoch goes on', async () => {
  const fx = await fixture;
  const dir = join(fx.dir, 'bad');
  mkdirSync(dir, { recursive: true });
  const good = fx.images.slice(0, 3);
  const entries = [
    ...webDatasetEntries('a/good0', good[0]!.jpeg, 0),
    ...webDatasetEntries('a/broken', Buffer.from('\xff\xd8\xff\xe0 not really a jpeg'), 1),
    ...webDatasetEntries('a/good1', good[1]!.jpeg, 2),
  ];
  writeTar(join(dir, 'b-0.tar'), entries);
  const brokenAt = 512 + Math.ceil(good[0]!.jpeg.length / 512) * 512 + 1024; // after good0's .jpg and .cls
  const full = join(dir, 'b-1.tar');
  writeTar(full, webDatasetEntries('c/good2', good[2]!.jpeg, 1));
  // cut the second shard inside its image member
  const bytes = readFileSync(full);
  writeFileSync(full, bytes.subarray(0, 700));
  for (const workers of [0, 2]) {
    const seen: string[] = [];
    const got = await withLoader(join(dir, 'b-{0..1}.tar'), { workers, onProblem: (p) => seen.push(p.kind) }, async (l) => {
      const xs = await collect(l);
      return { keys: xs.map((s) => s.key).sort(), problems: l.problems };
    });
    assert.deepEqual(got.keys, ['a/good0', 'a/good1']);
    assert.equal(got.problems.count, 2);
    assert.deepEqual(got.problems.byKind, { 'decode-error': 1, truncated: 1 });
    const lines = got.problems.format();
    assert.ok(
      lines.some((x) => x.startsWith(`${join(dir, 'b-0.tar')}@${brokenAt}: decode-error: a/broken`)),
      lines.join('\n'),
    );
    assert.ok(
      lines.some((x) => x.startsWith(`${join(dir, 'b-1.tar')}@0: truncated`)),
      lines.join('\n'),
    );
    assert.equal(seen.length, 2);
  }
});

test('loader: a worker never runs more than its prefetch credit ahead', async () => {
  const fx = await fixture;
  await withLoader(fx.tars, { workers: 1, batchSize: 2, prefetchBatches: 1 }, async (l) => {
    const it = l.samples(0);
    await it.next();
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(l.buffered <= 2, `buffered ${l.buffered}`);
    assert.ok(l.buffered >= 1, 'the worker did prefetch');
    await it.return(undefined);
  });
});
