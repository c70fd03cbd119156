/**
 * The evaluation commands end to end on real data (held-out cluttered digits, digit JPEG shards):
 * figures checked against answers computed here from the boxes (full and centre baselines),
 * the exported network scoring like its checkpoint, bad input (missing and foreign box files,
 * an empty validation set), the class splits of the unseen-class protocol, and an unseen-class
 * experiment that resumes without retraining.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { CasmTrainer } from '../src/casm/trainer.js';
import { loadDigits } from '../src/data/trainData.js';
import { readCheckpoint, readCheckpointState, resolveCheckpoint } from '../src/checkpoints/checkpoint.js';
import { toBatch } from '../src/data/batches.js';
import { webDatasetEntries, writeTar } from '../src/data/tar.js';
import type { ClassifiersReport } from '../src/eval/classifiersCommand.js';
import type { LocalizationReport } from '../src/eval/localizationCommand.js';
import { classSplits, trainingClasses } from '../src/eval/unseen.js';
import { useTestBackend } from './helpers/backend.js';
import { inProcessCli } from './helpers/cli.js';
import { trainTinyRun } from './helpers/tinyRun.js';
import { digitValShards } from './helpers/valShards.js';
import { TINY_TRAIN_FLAGS } from './helpers/tinyFlags.js';

const backend = await useTestBackend();
const casm = inProcessCli(backend);
const root = mkdtempSync(join(tmpdir(), 'casm-eval-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const runDir = join(root, 'run');
await trainTinyRun(runDir);

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;
const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('eval localization on held-out digits: full and centre as computed from the boxes; the exported network scores like its checkpoint', async () => {
  const out = join(root, 'loc');
  const tensorsBefore = tf.memory().numTensors;
  const r = await casm('eval', 'localization', '--checkpoint', runDir, '--methods', 'casm,gradcam,full,centre', '--limit', '24', '--out', out);
  assert.equal(r.code, 0, r.err);
  assert.equal(tf.memory().numTensors, tensorsBefore, 'models, masks and batches are freed');
  const report = readJson<LocalizationReport>(join(out, 'report.json'));
  assert.deepEqual(report.images, { read: 24, scored: 24, withoutBoxes: 0 });
  assert.match(report.provenance.command, /^casm eval localization --checkpoint .* --limit 24 /);
  assert.equal(report.checkpoint?.step, 3);

  // The answers, from the data set's own boxes: the full image has P = |gt| / HW, R = 1; the
  // centre box (9 px margin at 64: round(33 / 224 * 64)) hits where IoU(centre, gt) > 0.5.
  const digits = await loadDigits('test', 24, 64, 0);
  let f1Full = 0;
  let hitsCentre = 0;
  let f1Centre = 0;
  for (let i = 0; i < 24; i++) {
    const [x0, y0, x1, y1] = Array.from(digits.boxes.subarray(4 * i, 4 * i + 4));
    const area = (x1! - x0!) * (y1! - y0!);
    const p = area / (64 * 64);
    f1Full += (2 * p) / (p + 1);
    const inter = Math.max(0, Math.min(x1!, 55) - Math.max(x0!, 9)) * Math.max(0, Math.min(y1!, 55) - Math.max(y0!, 9));
    hitsCentre += inter / (46 * 46 + area - inter) > 0.5 ? 1 : 0;
    f1Centre += inter === 0 ? 0 : (2 * (inter / (46 * 46)) * (inter / area)) / (inter / (46 * 46) + inter / area);
  }
  close(report.methods['full']!.f1, f1Full / 24, 1e-9, 'full F1');
  assert.equal(report.methods['full']!.le, 1, 'a 20-40 px digit never covers half of a 64 px canvas');
  assert.equal(report.methods['centre']!.le, 1 - hitsCentre / 24);
  close(report.methods['centre']!.f1, f1Centre / 24, 1e-9, 'centre F1');
  assert.deepEqual(report.methods['full']!.area, { mean: 1, std: 0 });
  for (const m of ['casm', 'gradcam']) {
    const s = report.methods[m]!;
    assert.ok(s.le >= 0 && s.le <= 1 && s.f1 > 0 && s.f1 <= 1 && s.f1a <= s.f1 + 1e-12, `${m}: ${JSON.stringify(s)}`);
    assert.ok(s.om !== null && s.om >= s.le, `${m}: OM ${s.om} >= LE ${s.le}`);
  }
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| casm \| [\d.]+ \| [\d.]+ \|/);
  const grid = await sharp(join(out, 'examples.png')).metadata();
  assert.equal(grid.width, 5 * 128 + 6 * 2, 'image + 4 methods, 64 px cells scaled x2');
  assert.equal((await sharp(join(out, 'le.png')).metadata()).format, 'png');

  // The exported mask network (pixels 0..255 in) gives the checkpoint's CASM figures.
  const model = join(root, 'exported');
  assert.equal((await casm('export', '--checkpoint', runDir, '--out', model)).code, 0);
  const outModel = join(root, 'loc-model');
  const m = await casm('eval', 'localization', '--model', model, '--methods', 'casm,full', '--limit', '24', '--out', outModel);
  assert.equal(m.code, 0, m.err);
  const viaModel = readJson<LocalizationReport>(join(outModel, 'report.json'));
  assert.equal(viaModel.methods['casm']!.le, report.methods['casm']!.le);
  close(viaModel.methods['casm']!.f1, report.methods['casm']!.f1, 1e-4, 'CASM F1 exported vs checkpoint');
  assert.equal(viaModel.methods['casm']!.om, null, 'no classifier, no OM');
  // Gradient methods need the checkpoint's classifier: a usage error that says so.
  const bad = await casm('eval', 'localization', '--model', model, '--methods', 'gradcam', '--limit', '8', '--out', join(root, 'x'));
  assert.equal(bad.code, 2);
  assert.match(bad.err, /method 'gradcam' needs a checkpoint's classifier: give --checkpoint/);
  assert.equal((await casm('eval', 'localization', '--checkpoint', runDir, '--methods', 'casm,nope', '--out', join(root, 'x'))).code, 2);
});

test('eval localization --seen / --target / --compare: seen and unseen apart, targets per split, another run as casm-<thinning>', async () => {
  const run = async (name: string, ...args: string[]) => {
    const out = join(root, name);
    const r = await casm('eval', 'localization', '--checkpoint', runDir, '--limit', '24', '--examples', '4', '--out', out, ...args);
    assert.equal(r.code, 0, r.err);
    return readJson<LocalizationReport>(join(out, 'report.json'));
  };
  const auto = await run('split-auto', '--seen', '0-4', '--methods', 'casm,vanilla,full', '--compare', runDir);
  const { seen, unseen } = auto.bySplit!;
  assert.ok(seen && unseen, 'digits 0-4 and 5-9 are both among 24 held-out digits');
  assert.deepEqual(auto.bySplit!.seenClasses, [0, 1, 2, 3, 4]);
  assert.equal(seen.images + unseen.images, auto.images.scored);
  // The whole set's figures are the image-weighted mean of the two parts.
  for (const m of ['casm', 'vanilla', 'full']) {
    const whole = auto.methods[m]!;
    close(whole.le * 24, seen.methods[m]!.le * seen.images + unseen.methods[m]!.le * unseen.images, 1e-9, `${m} LE`);
    close(whole.f1 * 24, seen.methods[m]!.f1 * seen.images + unseen.methods[m]!.f1 * unseen.images, 1e-9, `${m} F1`);
  }
  // Seen images by the classifier's answer: the parts add up to the seen figures; right has top-1 1, wrong 0.
  const { right, wrong } = auto.byClassifier!;
  assert.equal((right?.images ?? 0) + (wrong?.images ?? 0), seen.images);
  if (right) assert.equal(right.classifierTop1, 1);
  if (wrong) assert.equal(wrong.classifierTop1, 0);
  for (const m of ['casm', 'vanilla']) {
    const parts = [right, wrong].filter((p) => p !== null);
    close(
      seen.methods[m]!.le * seen.images,
      parts.reduce((a, p) => a + p!.methods[m]!.le * p!.images, 0),
      1e-9,
      `${m} LE right + wrong`,
    );
  }
  // The same run compared with itself: casm-<its thinning> scores exactly like casm.
  const thinning = readCheckpointState(resolveCheckpoint(runDir)).config.thinning;
  assert.deepEqual(auto.methods[`casm-${thinning}`], auto.methods['casm']);
  assert.match(readFileSync(join(root, 'split-auto', 'report.md'), 'utf8'), /## Seen classes \(\d+ images; classifier top-1 [\d.]+\)[\s\S]*## Unseen classes/);
  // auto = the label on seen classes, the top-1 on unseen ones.
  const label = await run('split-label', '--seen', '0-4', '--methods', 'vanilla', '--target', 'label');
  const predicted = await run('split-predicted', '--seen', '0-4', '--methods', 'vanilla', '--target', 'predicted');
  assert.deepEqual(seen.methods['vanilla'], label.bySplit!.seen!.methods['vanilla']);
  assert.deepEqual(unseen.methods['vanilla'], predicted.bySplit!.unseen!.methods['vanilla']);
  assert.match(auto.protocol.targets, /the label on seen classes, the top-1 class on unseen ones/);
  // Bad input: synset names without a synset list; a reversed range.
  const named = await casm('eval', 'localization', '--checkpoint', runDir, '--seen', join(root, 'split-auto', 'report.md'), '--out', join(root, 'x'));
  assert.equal(named.code, 2);
  assert.match(named.err, /names synsets, but the data set has no synset list \(give --synsets\)/);
  const reversed = await casm('eval', 'localization', '--checkpoint', runDir, '--seen', '4-2', '--out', join(root, 'x'));
  assert.equal(reversed.code, 2);
  assert.match(reversed.err, /--seen: range 4-2 is reversed/);
});

/** 12 digit JPEGs in one tar, a synset list, and VOC XML boxes: 9 good, 2 missing, 1 of another class. */
test('eval localization on shards: missing box files counted, a box of another class ignored with a warning, an empty set an error', async () => {
  const d = await digitValShards(join(root, 'shards'));
  writeTar(join(root, 'shards', 'empty-0.tar'), webDatasetEntries('broken', Buffer.from([0xff, 0xd8, 0xff, 0xdb, 1, 2, 3]), 1));
  const out = join(root, 'loc-shards');
  const r = await casm('eval', 'localization', '--checkpoint', runDir, ...d.args, '--methods', 'casm,full', '--workers', '1', '--out', out);
  assert.equal(r.code, 0, r.err);
  const report = readJson<LocalizationReport>(join(out, 'report.json'));
  assert.deepEqual(report.images, { read: 12, scored: 9, withoutBoxes: 3 });
  assert.equal(report.problems.byKind['no-annotation'], 2);
  assert.equal(report.problems.byKind['no-class-box'], 1);
  assert.match(r.out, /val_009: no box of its class n0000000\d \(objects: n0000000\d\)/);
  assert.match(r.out, /3 of 12 images have no box of their class: not scored/);
  // Every box is its whole (short side + centre crop) image, so the full mask hits every time.
  assert.equal(report.methods['full']!.le, 0);
  close(report.methods['full']!.f1, 1, 1e-9, 'full F1 against whole-image boxes');

  const empty = await casm(
    'eval',
    'localization',
    '--checkpoint',
    runDir,
    '--data',
    join(root, 'shards', 'empty-0.tar'),
    '--methods',
    'full',
    '--out',
    join(root, 'x'),
  );
  assert.equal(empty.code, 1);
  assert.match(empty.err, /empty-0\.tar: the validation set is empty/);
});

test('eval classifiers: own classifier = the same checkpoint given as another; clean top-1 as computed here; four conditions', async () => {
  const out = join(root, 'cls');
  const tensorsBefore = tf.memory().numTensors;
  const r = await casm('eval', 'classifiers', '--checkpoint', runDir, '--classifiers', runDir, '--limit', '16', '--batch-size', '8', '--out', out);
  assert.equal(r.code, 0, r.err);
  assert.equal(tf.memory().numTensors, tensorsBefore, 'classifiers, masks and the four image versions are freed');
  const report = readJson<ClassifiersReport>(join(out, 'report.json'));
  assert.equal(report.images, 16);
  assert.equal(report.inpainting.radius, 3);
  const [own, other] = report.classifiers;
  assert.deepEqual(own!.results, other!.results);
  for (const a of Object.values(own!.results)) assert.ok(a.top1 >= 0 && a.top5 >= a.top1 && a.top5 <= 1, JSON.stringify(a));

  // Clean top-1, computed here with the checkpoint's classifier on the same 16 held-out digits.
  const dir = resolveCheckpoint(runDir);
  const trainer = new CasmTrainer(readCheckpointState(dir).config);
  await trainer.restore(readCheckpoint(dir));
  const digits = await loadDigits('test', 16, 64, 0);
  const b = toBatch(
    digits,
    Array.from({ length: 16 }, (_, i) => i),
  );
  const predicted = tf.tidy(() => tf.argMax((trainer.classifier.apply(b.x, { training: false }) as tf.Tensor[])[5]!, 1).dataSync());
  tf.dispose([b.x, b.y]);
  trainer.dispose();
  assert.equal(own!.results.clean.top1, predicted.filter((p, i) => p === digits.labels[i]).length / 16);
  const grid = await sharp(join(out, 'examples.png')).metadata();
  assert.equal(grid.width, 4 * 64 + 5 * 2, 'clean | masked-in | masked-out | inpainted');
});

test('unseen-class splits: disjoint sets of 5/5/10/30/30/20% and the trainings on their unions', () => {
  const s = classSplits(1000, 0);
  assert.deepEqual(
    Object.values(s).map((c) => c.length),
    [50, 50, 100, 300, 300, 200],
  );
  const all = Object.values(s)
    .flat()
    .sort((a, b) => a - b);
  assert.deepEqual(
    all,
    Array.from({ length: 1000 }, (_, i) => i),
  );
  assert.deepEqual(
    ['B-F', 'C-F', 'D-F', 'E-F', 'F'].map((t) => trainingClasses(s, t).length),
    [950, 900, 800, 500, 200],
  );
  assert.ok(
    trainingClasses(s, 'B-F').every((c) => !s['A']!.includes(c)),
    'A is never trained on',
  );
  assert.notDeepEqual(classSplits(1000, 1)['A'], s['A'], 'the seed draws the split');
  assert.throws(() => trainingClasses(s, 'F-C'), /reversed/);
});

test('experiment unseen on digits 0-4: seen vs unseen LE, and a rerun resumes without retraining', async () => {
  const out = join(root, 'unseen');
  const args = ['experiment', 'unseen', '--seen', '0-4', '--out', out, ...TINY_TRAIN_FLAGS, '--eval-limit', '24'];
  const r = await casm(...args);
  assert.equal(r.code, 0, r.err);
  const state = readJson<{ trainings: { name: string; classes: number[]; trained: boolean; result: Record<string, number | null> }[] }>(
    join(out, 'experiment.json'),
  );
  const [t] = state.trainings;
  assert.deepEqual(t!.classes, [0, 1, 2, 3, 4]);
  const labels = Array.from((await loadDigits('test', 24, 64, 0)).labels);
  const seen = labels.filter((l) => l <= 4).length;
  assert.equal(t!.result['seen'], seen);
  assert.equal(t!.result['unseen'], 24 - seen);
  for (const k of ['leSeen', 'leUnseen']) assert.ok(t!.result[k]! >= 0 && t!.result[k]! <= 1, `${k} ${t!.result[k]}`);
  const config = readJson<{ thinning: string }>(join(out, `train-${t!.name}`, 'config.json'));
  assert.equal(config.thinning, 'L', 'the protocol trains with thinning L');
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| seen-0,1,2,3,4 \| 5 \| [\d.]+ \| [\d.]+ \|/);

  // Interrupted after training, before its evaluation: the rerun evaluates, it does not retrain.
  const ckpt = join(out, `train-${t!.name}`, 'ckpt-00000003', 'classifier.safetensors');
  const trainedAt = statSync(ckpt).mtimeMs;
  const progress = join(out, `train-${t!.name}`, 'progress.json');
  writeFileSync(progress, JSON.stringify({ ...readJson<object>(progress), result: null }));
  const again = await casm(...args);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /unseen: .*experiment\.json: 0 of 1 trainings done/);
  assert.doesNotMatch(again.out, /unseen: training/);
  assert.equal(statSync(ckpt).mtimeMs, trainedAt);
  assert.deepEqual(readJson<typeof state>(join(out, 'experiment.json')).trainings[0]!.result, t!.result);
  // Another split in the same directory is refused.
  const other = await casm(...args.map((a) => (a === '0-4' ? '0-6' : a)));
  assert.equal(other.code, 1);
  assert.match(other.err, /holds an experiment with other classes or trainings/);
});
