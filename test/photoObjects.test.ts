/**
 * The photo-objects benchmark generator: boxes against the object masks, the layouts read back
 * through the data and evaluation pipeline, reproducibility, bad input. Needs the Debian photo
 * sources that `bash scripts/setup.sh` fetches (scripts/fetch-photo-sources.sh).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadAnnotations } from '../src/data/dataset.js';
import { listImageFolder } from '../src/data/imageFolder.js';
import { makePhotoObjects, PHOTO_CLASSES, type PhotoImage, type PhotoObjectsManifest } from '../src/data/photoObjects.js';
import { Problems } from '../src/data/samples.js';
import { readWebDataset } from '../src/data/tar.js';
import { openEvalData } from '../src/eval/evalData.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const sources = process.env['CASM_PHOTO_SOURCES'] ?? join(root, 'data', 'cache', 'photo-sources');

const tiny = { trainPerClass: 3, valPerClass: 4, classes: ['bird', 'fruit', 'planet'], seed: 7 };

async function generate(dir: string, extra: Partial<Parameters<typeof makePhotoObjects>[0]> = {}): Promise<PhotoObjectsManifest> {
  assert.ok(existsSync(join(sources, 'stamps')), `${sources}: photo sources missing; run bash scripts/fetch-photo-sources.sh`);
  return makePhotoObjects({ sources, out: dir, ...tiny, ...extra });
}

test('photo objects: every box is the tight box of its object mask (alpha >= 128), in the XML and the manifest', async () => {
  const base = mkdtempSync(join(tmpdir(), 'casm-photo-'));
  try {
    const out = join(base, 'set');
    const m = await generate(out);
    const val = m.images.filter((im) => im.split === 'val');
    assert.equal(val.length, 3 * 4);
    assert.equal(m.images.filter((im) => im.split === 'train').length, 2 * 3, 'training images of the seen classes only');
    const ann = loadAnnotations(join(out, 'val_xml'), new Problems());
    for (const im of val) {
      const { data, info } = await sharp(join(out, 'val_masks', `${im.id}.png`))
        .extractChannel(0)
        .raw()
        .toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height, info.channels], [200, 150, 1]);
      let [x0, y0, x1, y1, n] = [Infinity, Infinity, -1, -1, 0];
      for (let y = 0; y < info.height; y++) {
        for (let x = 0; x < info.width; x++) {
          if (data[y * info.width + x]! < 128) continue;
          n++;
          [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
        }
      }
      assert.ok(n > 0, `${im.id}: empty mask`);
      assert.deepEqual(im.box, [x0, y0, x1 + 1, y1 + 1], `${im.id}: manifest box vs mask`);
      const a = ann.get(im.id);
      assert.ok(a, `${im.id}: no XML`);
      assert.deepEqual(a.objects, [{ synset: im.class, box: im.box }]);
      assert.ok(Math.abs(im.maskArea - n / (200 * 150)) < 1e-12);
      // The box area lies in the drawn range (the object's box is 10-45% of the image by default).
      const boxArea = ((x1 + 1 - x0) * (y1 + 1 - y0)) / (200 * 150);
      assert.ok(boxArea > 0.05 && boxArea < 0.5, `${im.id}: box area ${boxArea}`);
    }
    // Validation photos are never training backgrounds.
    assert.equal(m.backgrounds.train.filter((b) => m.backgrounds.val.includes(b)).length, 0);
    assert.ok(val.every((im) => m.backgrounds.val.includes(im.background)));
    assert.deepEqual(readFileSync(join(out, 'classes.txt'), 'utf8'), 'bird\nfruit\nplanet\n');
    assert.deepEqual(readFileSync(join(out, 'unseen.txt'), 'utf8'), 'planet\n');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('photo objects: the layouts read back with their boxes (ImageFolder + VOC XML, shards) through the evaluation data', async () => {
  const base = mkdtempSync(join(tmpdir(), 'casm-photo-'));
  try {
    const out = join(base, 'set');
    const m = await generate(out);
    const listing = listImageFolder(join(out, 'val'), join(out, 'classes.txt'));
    assert.equal(listing.entries.length, 12);
    let shardCount = 0;
    for (const f of readdirSync(join(out, 'shards')).filter((f) => f.startsWith('val-'))) {
      for await (const s of readWebDataset(join(out, 'shards', f))) {
        shardCount++;
        assert.equal(s.synset ?? listing.synsets[s.label], m.images.find((im) => s.key.endsWith(im.id))!.class);
      }
    }
    assert.equal(shardCount, 12);
    // Stretched to 100 x 100: boxes scale by 0.5 and 2/3, exactly what the generator recorded.
    const data = await openEvalData({
      spec: join(out, 'val'),
      boxes: join(out, 'val_xml'),
      synsets: join(out, 'classes.txt'),
      size: 100,
      preprocess: 'eval-stretch',
      seed: 0,
      workers: 0,
      batchSize: 5,
    });
    const seen: string[] = [];
    for await (const b of data.batches()) {
      b.sources.forEach((src, i) => {
        const id = src
          .split('/')
          .at(-1)!
          .replace(/\.jpg@.*$/, '');
        const im = m.images.find((e) => e.id === id)!;
        seen.push(id);
        const [x0, y0, x1, y1] = im.box;
        const want = [x0 * 0.5, (y0 * 100) / 150, x1 * 0.5, (y1 * 100) / 150];
        assert.equal(b.boxes[i]!.length, 1);
        b.boxes[i]![0]!.forEach((v, k) => assert.ok(Math.abs(v - want[k]!) < 1e-9, `${id}: box ${b.boxes[i]![0]} vs ${want}`));
        assert.equal(listing.synsets[b.labels[i]!], im.class);
      });
    }
    await data.close();
    assert.equal(seen.length, 12);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('photo objects: the same seed gives the same bytes, another seed other images; bad input named', async () => {
  const base = mkdtempSync(join(tmpdir(), 'casm-photo-'));
  try {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(base, n));
    await generate(a, { classes: ['fish'] });
    await generate(b, { classes: ['fish'] });
    await generate(c, { classes: ['fish'], seed: 8 });
    const file = (dir: string) => readFileSync(join(dir, 'val', 'fish', 'val_fish_00002.jpg'));
    assert.deepEqual(file(a), file(b));
    assert.deepEqual(readFileSync(join(a, 'manifest.json')), readFileSync(join(b, 'manifest.json')));
    assert.notDeepEqual(file(a), file(c));
    await assert.rejects(generate(a), new RegExp(`${a}: exists already`));
    await assert.rejects(makePhotoObjects({ sources: join(base, 'none'), out: join(base, 'd') }), /no stamps\/ and backgrounds\/ .*fetch-photo-sources/);
    await assert.rejects(generate(join(base, 'e'), { classes: ['unicorn'] }), /unknown classes unicorn/);
    assert.ok(!existsSync(join(base, 'e')) && readdirSync(base).every((f) => !f.includes('.tmp-')), 'nothing half-made is left');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('photo objects: the default class split is 10 seen and 3 unseen, each with cut-outs in the sources', () => {
  assert.equal(PHOTO_CLASSES.filter((c) => c.seen).length, 10);
  assert.equal(PHOTO_CLASSES.filter((c) => !c.seen).length, 3);
  for (const c of PHOTO_CLASSES) {
    assert.ok(
      c.folders.some((f) => existsSync(join(sources, 'stamps', f)) && readdirSync(join(sources, 'stamps', f)).some((n) => n.endsWith('.png'))),
      `${c.name}: no stamp folder in ${sources}`,
    );
  }
});

test('photo objects: the fetched backgrounds leave out the photos of class objects and hold the added wallpapers', () => {
  // The lists live in the fetch script; a cache of an older layout would still hold the flowers and the sheep.
  const script = readFileSync(join(root, 'scripts', 'fetch-photo-sources.sh'), 'utf8');
  const list = (name: string) =>
    script
      .match(new RegExp(`^${name}=\\(([^)]*)\\)`, 'm'))![1]!
      .split(/\s+/)
      .filter(Boolean);
  const have = readdirSync(join(sources, 'backgrounds'));
  const excluded = list('EXCLUDED');
  assert.ok(excluded.includes('Garden.jpg') && excluded.includes('sheep.jpg'), 'the exclusion list was read');
  assert.deepEqual(
    excluded.filter((f) => have.includes(f)),
    [],
    'no background shows an object of a class',
  );
  const added = [...list('PLASMA').map((w) => `plasma_${w}.jpg`), ...list('LOMIRI').map((w) => `${w}.jpg`)];
  assert.deepEqual(
    added.filter((f) => !have.includes(f)),
    [],
    'every selected wallpaper was fetched',
  );
  assert.equal(have.length, 41);
});

test('photo objects: --val-on-train-backgrounds moves the validation objects onto training photos and changes nothing else', async () => {
  const base = mkdtempSync(join(tmpdir(), 'casm-photo-'));
  try {
    const a = await generate(join(base, 'a'), { trainPerClass: 1 });
    const b = await generate(join(base, 'b'), { trainPerClass: 1, valOnTrainBackgrounds: true });
    const val = (m: PhotoObjectsManifest) => m.images.filter((im) => im.split === 'val');
    assert.deepEqual(b.backgrounds, a.backgrounds, 'the same background split');
    assert.ok(val(b).every((im) => b.backgrounds.train.includes(im.background)));
    assert.ok(val(a).every((im) => a.backgrounds.val.includes(im.background)));
    // Same objects at the same places: instance, box and mask area of every validation image.
    const key = (im: PhotoImage) => [im.id, im.class, im.instance, im.box.join(','), im.maskArea].join(' ');
    assert.deepEqual(val(b).map(key), val(a).map(key));
    assert.equal(
      readFileSync(join(base, 'b', 'val_xml', `${val(a)[0]!.id}.xml`), 'utf8'),
      readFileSync(join(base, 'a', 'val_xml', `${val(a)[0]!.id}.xml`), 'utf8'),
    );
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
