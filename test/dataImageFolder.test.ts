import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digitJpeg } from './helpers/images.js';
import { listImageFolder, readImageFolder, readSynsetList } from '../src/data/imageFolder.js';
import { readWebDataset, webDatasetEntries, writeTar } from '../src/data/tar.js';
import { decodeRgb, decodeTransform } from '../src/data/decode.js';
import { Problems, type Sample } from '../src/data/samples.js';

async function collect(stream: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of stream) out.push(s);
  return out;
}

test('imageFolder: class index = position in the sorted synset list (folders or a list file)', async () => {
  const root = mkdtempSync(join(tmpdir(), 'casm-folder-'));
  try {
    // created out of order; file names out of order too
    const layout: [string, string][] = [
      ['n03000134', 'b.JPEG'],
      ['n01440764', 'z.JPEG'],
      ['n01440764', 'a.jpeg'],
      ['n02102040', 'img.JPEG'],
    ];
    const bytes = new Map<string, Buffer>();
    let k = 0;
    for (const [syn, f] of layout) {
      mkdirSync(join(root, syn), { recursive: true });
      const b = await digitJpeg(k++, 56, 48, 90);
      bytes.set(`${syn}/${f}`, b);
      writeFileSync(join(root, syn, f), b);
    }
    writeFileSync(join(root, 'n01440764', 'notes.txt'), 'not an image'); // ignored
    writeFileSync(join(root, 'n02102040', 'empty.JPEG'), ''); // reported
    writeFileSync(join(root, 'README'), 'top-level file'); // ignored

    const l = listImageFolder(root);
    assert.deepEqual(l.synsets, ['n01440764', 'n02102040', 'n03000134']);
    assert.deepEqual(
      l.entries.map((e) => [e.key, e.label]),
      [
        ['n01440764/a', 0],
        ['n01440764/z', 0],
        ['n02102040/empty', 1],
        ['n02102040/img', 1],
        ['n03000134/b', 2],
      ],
    );
    const stream = readImageFolder(root);
    const got = await collect(stream);
    assert.deepEqual(
      got.map((s) => [s.key, s.label, s.synset]),
      [
        ['n01440764/a', 0, 'n01440764'],
        ['n01440764/z', 0, 'n01440764'],
        ['n02102040/img', 1, 'n02102040'],
        ['n03000134/b', 2, 'n03000134'],
      ],
    );
    assert.ok(Buffer.from(got[0]!.image).equals(bytes.get('n01440764/a.jpeg')!));
    assert.deepEqual(
      stream.problems.list.map((p) => [p.kind, p.file, p.offset, p.message]),
      [['unreadable', join(root, 'n02102040', 'empty.JPEG'), 0, 'empty file']],
    );

    // a list file (LOC_synset_mapping.txt style, unsorted): indices follow the sorted list, folders
    // outside it are skipped and reported
    const list = join(root, '..', `synsets-${process.pid}.txt`);
    writeFileSync(list, 'n03000134 chain saw\nn01440764 tench, Tinca tinca\n\nn01000000 something\n');
    try {
      assert.deepEqual(readSynsetList(list), ['n01000000', 'n01440764', 'n03000134']);
      const problems = new Problems();
      const s2 = readImageFolder(root, list, { problems });
      const got2 = await collect(s2);
      assert.deepEqual(
        got2.map((s) => [s.key, s.label]),
        [
          ['n01440764/a', 1],
          ['n01440764/z', 1],
          ['n03000134/b', 2],
        ],
      );
      assert.deepEqual(
        problems.list.map((p) => [p.kind, p.file]),
        [['unknown-synset', join(root, 'n02102040')]],
      );
      // an explicit array works the same
      assert.deepEqual(
        listImageFolder(root, ['n03000134', 'n02102040', 'n01440764']).entries.map((e) => e.label),
        [0, 0, 1, 1, 2],
      );
    } finally {
      rmSync(list, { force: true });
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('imageFolder vs WebDataset tar: same images, labels, decoded and transformed pixels', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-folder-'));
  try {
    const root = join(dir, 'train');
    const synsets = ['n01530575', 'n01440764'];
    const entries = [];
    for (let i = 0; i < 6; i++) {
      const syn = synsets[i % 2]!;
      const img = await digitJpeg(100 + i, 56, 48, 90);
      mkdirSync(join(root, syn), { recursive: true });
      writeFileSync(join(root, syn, `${syn}_${i}.JPEG`), img);
      entries.push({ key: `${syn}/${syn}_${i}`, img, label: syn === 'n01440764' ? 0 : 1 });
    }
    entries.sort((a, b) => (a.key < b.key ? -1 : 1));
    writeTar(
      join(dir, 'shard.tar'),
      entries.flatMap((e) => webDatasetEntries(e.key, e.img, e.label)),
    );
    const folder = await collect(readImageFolder(root));
    const tar = await collect(readWebDataset(join(dir, 'shard.tar')));
    assert.deepEqual(
      folder.map((s) => [s.key, s.label]),
      tar.map((s) => [s.key, s.label]),
    );
    for (let i = 0; i < folder.length; i++) {
      const [a, b] = await Promise.all([decodeRgb(folder[i]!.image), decodeRgb(tar[i]!.image)]);
      assert.ok(Buffer.from(a.data).equals(Buffer.from(b.data)));
      const [ta, tb] = await Promise.all([folder[i]!, tar[i]!].map((s) => decodeTransform(s.image, { kind: 'eval', size: 32 })));
      assert.deepEqual(Array.from(ta!.data), Array.from(tb!.data));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('imageFolder: symlinked class folders and files are followed, subfolders walked as torchvision does, cycles and dangling links reported', async () => {
  const base = mkdtempSync(join(tmpdir(), 'casm-links-'));
  try {
    const store = join(base, 'store');
    const root = join(base, 'subset');
    const jpeg = await digitJpeg(1, 40, 40, 90);
    for (const f of ['cat/x.jpg', 'cat/deep/y.jpg', 'cat/deep-er/z.jpg', 'dog/w.jpg']) {
      mkdirSync(join(store, f, '..'), { recursive: true });
      writeFileSync(join(store, f), jpeg);
    }
    mkdirSync(join(root, 'emu'), { recursive: true });
    symlinkSync(join(store, 'cat'), join(root, 'cat')); // the usual ImageNet-subset layout
    symlinkSync(join(store, 'dog'), join(root, 'dog'));
    symlinkSync(join(store, 'dog', 'w.jpg'), join(root, 'emu', 'linked.jpg'));
    symlinkSync(join(store, 'cat'), join(store, 'cat', 'deep', 'loop')); // a cycle
    symlinkSync(join(base, 'gone.jpg'), join(root, 'emu', 'dangling.jpg'));
    const problems = new Problems();
    const l = listImageFolder(root, undefined, problems);
    assert.deepEqual(l.synsets, ['cat', 'dog', 'emu']);
    // The order torchvision 0.14's ImageFolder gives for this layout without the loop (checked once by hand):
    // folders sorted as path strings ('cat/deep' before 'cat/deep-er'), files by name within each.
    assert.deepEqual(
      l.entries.map((e) => [e.key, e.label]),
      [
        ['cat/x', 0],
        ['cat/deep/y', 0],
        ['cat/deep-er/z', 0],
        ['dog/w', 1],
        ['emu/linked', 2],
      ],
    );
    assert.deepEqual(problems.byKind, { 'symlink-cycle': 1, unreadable: 1 });
    assert.match(problems.format().join('\n'), /cat\/deep\/loop@0: symlink-cycle: links back to .*store\/cat/);
    assert.match(problems.format().join('\n'), /emu\/dangling\.jpg@0: unreadable: broken symbolic link/);
    const got = await collect(readImageFolder(root));
    assert.equal(got.length, 5);
    assert.ok(got.every((s) => Buffer.from(s.image).equals(jpeg)));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
