import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DataSpecError, expandBraces, expandGlob, resolveDataSpec } from '../src/data/spec.js';
import { webDatasetEntries, writeTar } from '../src/data/tar.js';
import { encodeTfRecord } from '../src/data/tfrecord.js';

const root = mkdtempSync(join(tmpdir(), 'casm-spec-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

/** Creates root/<path> (and its parents) with the given bytes. */
function put(path: string, data: Uint8Array | string = ''): string {
  const full = join(root, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, data);
  return full;
}
const dir = (path: string) => {
  const full = join(root, path);
  mkdirSync(full, { recursive: true });
  return full;
};
const realTar = (path: string) => {
  const full = join(root, path);
  mkdirSync(dirname(full), { recursive: true });
  writeTar(full, webDatasetEntries('k0', new Uint8Array([0xff, 0xd8, 0xff, 0xd9]), 3));
  return full;
};
const realTfRecord = (path: string) => put(path, encodeTfRecord(new TextEncoder().encode('an Example')));

/** Asserts that fn throws a DataSpecError whose message matches re. */
function throwsSpec(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DataSpecError, `not a DataSpecError: ${String(e)}`);
    assert.equal(e.name, 'DataSpecError');
    assert.match(e.message, re);
    return true;
  });
}
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ------------------------------------------------------------------------------------- braces

test('braces: zero padded ranges keep the width, like braceexpand', () => {
  assert.deepEqual(expandBraces('s-{000..003}.tar'), ['s-000.tar', 's-001.tar', 's-002.tar', 's-003.tar']);
  const shards = expandBraces('imagenet-train-{000000..000146}.tar');
  assert.equal(shards.length, 147);
  assert.equal(shards[0], 'imagenet-train-000000.tar');
  assert.equal(shards[146], 'imagenet-train-000146.tar');
  // braceexpand pads to the longer bound when either bound starts with 0; a bare 0 does not pad
  assert.deepEqual(expandBraces('{07..10}'), ['07', '08', '09', '10']);
  assert.deepEqual(expandBraces('{8..010}'), ['008', '009', '010']);
  assert.deepEqual(expandBraces('{0..2}'), ['0', '1', '2']);
  assert.deepEqual(expandBraces('{-01..1}'), ['-01', '000', '001']);
});

test('braces: unpadded, reversed, stepped and letter ranges', () => {
  assert.deepEqual(expandBraces('{8..11}'), ['8', '9', '10', '11']);
  assert.deepEqual(expandBraces('{3..1}'), ['3', '2', '1']);
  assert.deepEqual(expandBraces('{2..-1}'), ['2', '1', '0', '-1']);
  assert.deepEqual(expandBraces('{1..7..3}'), ['1', '4', '7']);
  assert.deepEqual(expandBraces('{a..g..2}'), ['a', 'c', 'e', 'g']);
  assert.deepEqual(expandBraces('{c..a}'), ['c', 'b', 'a']);
});

test('braces: alternatives, several groups in order, nesting', () => {
  assert.deepEqual(expandBraces('{a,b}{1..2}'), ['a1', 'a2', 'b1', 'b2']);
  assert.deepEqual(expandBraces('d/{train,val}-{0..1}.tar'), ['d/train-0.tar', 'd/train-1.tar', 'd/val-0.tar', 'd/val-1.tar']);
  assert.deepEqual(expandBraces('{x,{y,z}}'), ['x', 'y', 'z']);
  assert.deepEqual(expandBraces('a{b,c{d,e}}f'), ['abf', 'acdf', 'acef']);
  assert.deepEqual(expandBraces('p{2.{5..7},3.{2,3}}'), ['p2.5', 'p2.6', 'p2.7', 'p3.2', 'p3.3']);
  assert.deepEqual(expandBraces('index{,.bak}'), ['index', 'index.bak']);
});

test('braces: none, and groups that are not ranges or lists stay literal as in bash', () => {
  assert.deepEqual(expandBraces('data/train-*.tar'), ['data/train-*.tar']);
  assert.deepEqual(expandBraces(''), ['']);
  assert.deepEqual(expandBraces('a{b}c'), ['a{b}c']);
  assert.deepEqual(expandBraces('{1..x}'), ['{1..x}']);
  assert.deepEqual(expandBraces('{}'), ['{}']);
});

test('braces: malformed patterns are DataSpecErrors naming the pattern', () => {
  throwsSpec(() => expandBraces('s-{000..003.tar'), /brace pattern "s-\{000\.\.003\.tar": unbalanced braces/);
  throwsSpec(() => expandBraces('{1{2,3}'), /brace pattern "\{1\{2,3\}": unbalanced/);
  throwsSpec(() => expandBraces('a}b{c'), /brace pattern "a\}b\{c": '\}' without '\{' at offset 1/);
  throwsSpec(() => expandBraces('{0..99999999}'), /brace pattern "\{0\.\.99999999\}" expands to more than 1000000 names/);
  throwsSpec(() => expandBraces('{0..999}{0..9999}'), /expands to more than 1000000 names/);
});

// ------------------------------------------------------------------------------------- globs

const g = (path: string) => join(root, 'g', path);
for (const f of ['a-0.tar', 'a-1.tar', 'a-2.tar', 'b-0.tar', 'notes.txt', '.hidden.tar']) put(join('g', 'shards', f));
for (const f of ['three.tfrecord', 'x/one.tfrecord', 'x/y/two.tfrecord', '.h/four.tfrecord', 'x/skip.txt']) put(join('g', 'nested', f));
for (const f of ['d1/s.tar', 'd2/s.tar', 'e1/s.tar', 'd3/other.tar']) put(join('g', 'dirs', f));

test('glob: * ? and classes within one segment, hidden files only on request', () => {
  assert.deepEqual(
    expandGlob(g('shards/*.tar')),
    ['a-0.tar', 'a-1.tar', 'a-2.tar', 'b-0.tar'].map((f) => g(`shards/${f}`)),
  );
  assert.deepEqual(expandGlob(g('shards/.*.tar')), [g('shards/.hidden.tar')]);
  assert.deepEqual(expandGlob(g('shards/a-?.tar')), [g('shards/a-0.tar'), g('shards/a-1.tar'), g('shards/a-2.tar')]);
  assert.deepEqual(expandGlob(g('shards/a-[0-1].tar')), [g('shards/a-0.tar'), g('shards/a-1.tar')]);
  assert.deepEqual(expandGlob(g('shards/a-[02].tar')), [g('shards/a-0.tar'), g('shards/a-2.tar')]);
  assert.deepEqual(expandGlob(g('shards/[!a]-*')), [g('shards/b-0.tar')]);
  assert.deepEqual(expandGlob(g('shards/*')).length, 5);
  assert.deepEqual(expandGlob(g('shards/*.jpg')), []);
  assert.deepEqual(expandGlob(g('nowhere/*.tar')), []);
});

test('glob: directory segments and ** (any number of directories, none hidden)', () => {
  assert.deepEqual(expandGlob(g('dirs/d*/s.tar')), [g('dirs/d1/s.tar'), g('dirs/d2/s.tar')]);
  assert.deepEqual(
    expandGlob(g('dirs/*/*.tar')),
    ['d1/s.tar', 'd2/s.tar', 'd3/other.tar', 'e1/s.tar'].map((f) => g(`dirs/${f}`)),
  );
  assert.deepEqual(expandGlob(g('dirs/[de]1')), [g('dirs/d1'), g('dirs/e1')]);
  assert.deepEqual(expandGlob(g('nested/**/*.tfrecord')), [g('nested/three.tfrecord'), g('nested/x/one.tfrecord'), g('nested/x/y/two.tfrecord')]);
  assert.deepEqual(expandGlob(g('**/two.tfrecord')), [g('nested/x/y/two.tfrecord')]);
  assert.deepEqual(expandGlob(g('nested/**')), [g('nested'), g('nested/x'), g('nested/x/y')]);
});

test('glob: a relative pattern gives paths as written, a literal one itself when it exists', () => {
  const rel = relative(process.cwd(), g('shards'));
  assert.deepEqual(expandGlob(`${rel}/b-*.tar`), [`${rel}/b-0.tar`]);
  assert.deepEqual(expandGlob(g('shards/notes.txt')), [g('shards/notes.txt')]);
  assert.deepEqual(expandGlob(g('shards/missing.txt')), []);
});

// ------------------------------------------------------------------------------------- layouts

test('layout by name: .tar, .tfrecord/.tfrec/.tfrecords and NAME-00000-of-00010 (contents not read)', () => {
  for (const [name, layout] of [
    ['n/x.tar', 'webdataset'],
    ['n/X.TAR', 'webdataset'],
    ['n/a.tfrecord', 'tfrecord'],
    ['n/b.tfrec', 'tfrecord'],
    ['n/c.tfrecords', 'tfrecord'],
    ['n/train-00000-of-01024', 'tfrecord'],
  ] as const) {
    const path = put(name, 'not a shard at all');
    assert.deepEqual(resolveDataSpec(path), { spec: path, layout, files: [path] }, name);
  }
});

test('layout by sniffing files without extensions: a real tar and a real TFRecord', () => {
  const tar = realTar('sniff/shardA');
  const rec = realTfRecord('sniff/recordB');
  assert.deepEqual(resolveDataSpec(tar), { spec: tar, layout: 'webdataset', files: [tar] });
  assert.deepEqual(resolveDataSpec(rec), { spec: rec, layout: 'tfrecord', files: [rec] });
  const junk = put('sniff/junk', 'hello, this is not a shard');
  throwsSpec(() => resolveDataSpec(junk), new RegExp(`^data spec "${esc(junk)}": cannot tell the layout of "${esc(junk)}"`));
  // one flipped bit in the length CRC: no longer a TFRecord frame
  const bad = encodeTfRecord(new Uint8Array(20));
  bad[8]! ^= 1;
  const badPath = put('sniff/badcrc', bad);
  throwsSpec(() => resolveDataSpec(badPath), /cannot tell the layout of ".*badcrc"/);
});

test('directories: shards inside, class folders, empty and mixed', () => {
  const wds = [realTar('dw/p-1'), put('dw/p-0.tar'), put('dw/.index')];
  assert.deepEqual(resolveDataSpec(join(root, 'dw')), { spec: join(root, 'dw'), layout: 'webdataset', files: [wds[1], wds[0]] });
  const tf = [put('dt/train-00001-of-00002'), put('dt/train-00000-of-00002')];
  assert.deepEqual(resolveDataSpec(join(root, 'dt')).files, [tf[1], tf[0]]);
  assert.equal(resolveDataSpec(join(root, 'dt')).layout, 'tfrecord');
  put('if/n01440764/a.JPEG');
  put('if/n01443537/b.JPEG');
  put('if/readme.txt');
  assert.deepEqual(resolveDataSpec(join(root, 'if')), { spec: join(root, 'if'), layout: 'imagefolder', files: [join(root, 'if')] });
  // a symlinked class folder counts as a class folder
  dir('iflink');
  symlinkSync(join(root, 'if', 'n01440764'), join(root, 'iflink', 'n01440764'));
  assert.equal(resolveDataSpec(join(root, 'iflink')).layout, 'imagefolder');
  const empty = dir('empty');
  put('empty/.DS_Store');
  throwsSpec(() => resolveDataSpec(empty), new RegExp(`^data spec "${esc(empty)}": directory "${esc(empty)}" is empty$`));
  put('mixed/a.tar');
  put('mixed/b.tfrecord');
  throwsSpec(() => resolveDataSpec(join(root, 'mixed')), /^data spec ".*mixed": mixed layouts: ".*a\.tar" is webdataset but ".*b\.tfrecord" is tfrecord$/);
  put('withjunk/a.tar');
  put('withjunk/README');
  throwsSpec(() => resolveDataSpec(join(root, 'withjunk')), /cannot tell the layout of ".*withjunk\/README"/);
});

test('brace specs: every expanded name must exist; missing ones are listed', () => {
  const shards = ['000', '001', '002'].map((i) => put(`b/s-${i}.tar`));
  const ok = join(root, 'b/s-{000..002}.tar');
  assert.deepEqual(resolveDataSpec(ok), { spec: ok, layout: 'webdataset', files: shards });
  const bad = join(root, 'b/s-{000..009}.tar');
  throwsSpec(
    () => resolveDataSpec(bad),
    new RegExp(
      `^data spec "${esc(bad)}": 7 of the 10 names of the brace pattern "${esc(bad)}" match no file: ` +
        `"${esc(join(root, 'b/s-003.tar'))}", ".*s-004\\.tar", ".*s-005\\.tar", ".*s-006\\.tar", ".*s-007\\.tar", and 2 more$`,
    ),
  );
  const two = join(root, 'b/s-{001,005,007}.tar');
  throwsSpec(() => resolveDataSpec(two), /: 2 of the 3 names of the brace pattern ".*" match no file: ".*s-005\.tar", ".*s-007\.tar"$/);
  // braces then globs, results sorted and duplicates removed
  const globbed = join(root, 'b/s-{00*,001}.tar');
  assert.deepEqual(resolveDataSpec(globbed).files, shards);
  assert.deepEqual(resolveDataSpec(join(root, 'b/s-{002,000}.tar')).files, [shards[0], shards[2]]);
});

test('globs and plain paths that match nothing', () => {
  const none = join(root, 'b/*.tfrecord');
  throwsSpec(() => resolveDataSpec(none), new RegExp(`^data spec "${esc(none)}": "${esc(none)}" matches no file$`));
  const missing = join(root, 'b/nope.tar');
  throwsSpec(() => resolveDataSpec(missing), new RegExp(`^data spec "${esc(missing)}": "${esc(missing)}" does not exist$`));
  throwsSpec(() => resolveDataSpec(''), /^data spec "": "" names no path$/);
  throwsSpec(() => resolveDataSpec('wds:'), /^data spec "wds:": "wds:" names no path$/);
  const glob = join(root, 'b/s-00[0-1].tar');
  assert.deepEqual(resolveDataSpec(glob).files, [join(root, 'b/s-000.tar'), join(root, 'b/s-001.tar')]);
});

test('prefixes force the layout', () => {
  const rec = realTfRecord('pre/recordC');
  assert.deepEqual(resolveDataSpec(`wds:${rec}`), { spec: `wds:${rec}`, layout: 'webdataset', files: [rec] });
  const plain = [put('pre/d/one'), put('pre/d/two')];
  assert.deepEqual(resolveDataSpec(`tfrecord:${join(root, 'pre/d')}`).files, plain);
  assert.equal(resolveDataSpec(`tfrecord:${join(root, 'pre/d')}`).layout, 'tfrecord');
  const folder = join(root, 'if');
  assert.deepEqual(resolveDataSpec(`folder:${folder}`), { spec: `folder:${folder}`, layout: 'imagefolder', files: [folder] });
  throwsSpec(() => resolveDataSpec(`folder:${rec}`), new RegExp(`^data spec "folder:${esc(rec)}": folder: needs a directory, "${esc(rec)}" is a file$`));
  throwsSpec(() => resolveDataSpec(`folder:${join(root, 'pre/d')}`), /directory ".*pre\/d" has no class sub-directories$/);
  throwsSpec(() => resolveDataSpec(`folder:${join(root, 'if')}::folder:${join(root, 'iflink')}`), /only one image folder root can be given/);
});

test("'::' joins specs in the order given; layouts must agree", () => {
  const b = [put('j/b-0.tar'), put('j/b-1.tar')];
  const a = put('j/a.tar');
  const spec = `${join(root, 'j/b-{0..1}.tar')}::${a}::${b[0]}`;
  assert.deepEqual(resolveDataSpec(spec), { spec, layout: 'webdataset', files: [b[0], b[1], a] });
  const rec = put('j/c.tfrecord');
  const mixed = `${a}::${rec}`;
  throwsSpec(() => resolveDataSpec(mixed), new RegExp(`^data spec "${esc(mixed)}": mixed layouts: "${esc(a)}" is webdataset but "${esc(rec)}" is tfrecord$`));
  throwsSpec(() => resolveDataSpec(`${a}::`), /^data spec ".*a\.tar::": "" names no path$/);
});

// ------------------------------------------------------------------------------------- workers

test('spec.ts imports no tfjs and resolves specs inside a worker thread', async () => {
  // compiled to <outDir>/test/, so the source lies two levels up
  const source = readFileSync(fileURLToPath(new URL('../../src/data/spec.ts', import.meta.url)), 'utf8');
  assert.deepEqual(
    [...source.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]),
    ['node:fs', 'node:path', '../util/crc32c.js'],
  );
  const url = new URL('../src/data/spec.js', import.meta.url).href;
  const tar = put('w/x.tar');
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.url).then((m) => parentPort.postMessage(m.resolveDataSpec(workerData.tar)));`,
    { eval: true, workerData: { url, tar } },
  );
  const result = await new Promise((res, rej) => worker.once('message', res).once('error', rej));
  assert.deepEqual(result, { spec: tar, layout: 'webdataset', files: [tar] });
  await worker.terminate();
});
